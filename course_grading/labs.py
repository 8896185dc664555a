"""The labs: their graded parts, and generating their student versions with nbgrader.

The instructor's version of each lab (solutions and hidden tests) is
``solutions/<lab>/<lab>.ipynb``; :func:`generate` runs ``nbgrader
generate_assignment`` to write the student version to ``labs/<lab>/`` (the
folders are those of ``nbgrader_config.py``) and refuses a result that still
holds a marker: a misspelt ``### END SOLUTION`` would otherwise publish the
rest of the cell. :func:`graded_parts` splits a lab into its parts, each a run
of solution cells followed by the test cells that grade them::

    >>> [(p.index, p.points) for p in graded_parts("solutions/lab02_attention/lab02_attention.ipynb")]  # doctest: +SKIP
    [(1, 2.0), (2, 3.0), (3, 3.0), (4, 4.0)]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from course_grading.cells import MARKERS, nbgrader_meta
from course_grading.course import course_folder, find_root, list_labs, nbgrader_command, nbgrader_env

__all__ = ["Part", "graded_parts", "generate"]


@dataclass
class Part:
    """One graded part of a lab: the solution cells a student fills in and the
    test cells that grade them."""

    index: int
    solution_ids: list[str] = field(default_factory=list)
    test_ids: list[str] = field(default_factory=list)
    points: float = 0.0


def graded_parts(notebook: str | os.PathLike | dict) -> list[Part]:
    """Split a lab into parts: each run of solution cells followed by the test
    cells after it. ``notebook`` is a path or a loaded notebook dict."""
    nb = notebook if isinstance(notebook, dict) else json.loads(Path(notebook).read_text())
    parts: list[Part] = []
    current: Part | None = None
    for cell in nb["cells"]:
        meta = nbgrader_meta(cell)
        if meta.get("solution") and not meta.get("grade"):
            if current is None or current.test_ids:
                current = Part(index=len(parts) + 1)
                parts.append(current)
            current.solution_ids.append(meta["grade_id"])
        elif meta.get("grade") and cell["cell_type"] == "code":  # an autograded answer counts as a test
            if current is None:
                raise ValueError(f"test cell {meta.get('grade_id')!r} comes before any solution cell")
            current.test_ids.append(meta["grade_id"])
            current.points += float(meta.get("points", 0))
    return [p for p in parts if p.test_ids]


def generate(labs: list[str] | None = None, root: str | os.PathLike | None = None,
             dest: str | os.PathLike | None = None) -> Path:
    """Write the student version of each lab with ``nbgrader generate_assignment``.

    Args:
        labs: lab names (default: every lab in the source folder).
        root: the course root (default: found from the current folder).
        dest: write into this folder's release folder instead of the repository's
            (used by CI to compare a fresh generation with the committed one).

    Returns the release folder written (``labs/``).
    """
    root = find_root(root)
    known = list_labs(root)
    labs = known if labs is None else labs
    unknown = [lab for lab in labs if lab not in known]
    if unknown:
        raise ValueError(f"unknown labs {unknown}; the labs in {course_folder(root, 'source').name}/ are {known}")
    course = Path(dest).resolve() if dest else root
    source, release = course_folder(root, "source"), course_folder(root, "release")
    if dest:
        course.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "nbgrader_config.py", course / "nbgrader_config.py")
        for lab in labs:
            shutil.copytree(source / lab, course / source.name / lab, dirs_exist_ok=True)
    for lab in labs:
        cmd = nbgrader_command() + ["generate_assignment", lab, "--force", "--no-db",
                                    f"--CourseDirectory.root={course}", "--log-level=WARN"]
        done = subprocess.run(cmd, cwd=course, env=nbgrader_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {lab} failed:\n{done.stdout}\n{done.stderr}")
        for nb in (course / release.name / lab).glob("*.ipynb"):
            _refuse_markers(nb)
    return course / release.name


def _refuse_markers(path: Path) -> None:
    """Raise if a generated notebook still holds a marker (a misspelt one leaks the rest of its cell)."""
    text = path.read_text()
    for marker in MARKERS:
        if marker in text:
            raise RuntimeError(f"{path} still contains {marker!r}: a misspelt marker would leak solutions")
