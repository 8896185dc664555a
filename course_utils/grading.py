"""Lab tooling for instructors: generate the student versions and grade submissions.

The labs are nbgrader notebooks. Instructor sources live in
``solutions/<lab>/<lab>.ipynb``; :func:`generate` runs ``nbgrader
generate_assignment`` to write the student versions to ``labs/``.

Command line (from the repository root)::

    python -m course_utils.grading generate            # every lab
    python -m course_utils.grading generate lab02_attention
    python -m course_utils.grading parts lab02_attention   # graded parts and points
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["find_root", "list_labs", "generate", "graded_parts", "Part", "nbgrader_command"]

LAB_NAME = re.compile(r"^lab\d\d_[a-z0-9_]+$")
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The course root: the nearest folder at or above ``start`` holding ``nbgrader_config.py``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbgrader_config.py").is_file():
            return folder
    raise FileNotFoundError(f"no nbgrader_config.py at or above {here}; run this from the course repository")


def list_labs(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the labs in ``solutions/``, e.g. ``['lab01_next_word', 'lab02_attention']``."""
    solutions = find_root(root) / "solutions"
    return sorted(p.name for p in solutions.iterdir() if p.is_dir() and LAB_NAME.match(p.name))


def nbgrader_command() -> list[str]:
    """How to call nbgrader with this interpreter (its ``bin/`` must be on PATH for alembic)."""
    return [sys.executable, "-m", "nbgrader"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def generate(labs: list[str] | None = None, root: str | os.PathLike | None = None,
             dest: str | os.PathLike | None = None) -> Path:
    """Write the student version of each lab with ``nbgrader generate_assignment``.

    Args:
        labs: lab names (default: every lab in ``solutions/``).
        root: the course root (default: found from the current folder).
        dest: write into this folder's ``labs/`` instead of the repository's
            (used by CI to compare a fresh generation with the committed one).

    Returns the ``labs/`` folder written.
    """
    root = find_root(root)
    known = list_labs(root)
    labs = known if labs is None else labs
    unknown = [lab for lab in labs if lab not in known]
    if unknown:
        raise ValueError(f"unknown labs {unknown}; the labs in solutions/ are {known}")
    course = Path(dest).resolve() if dest else root
    if dest:
        course.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "nbgrader_config.py", course / "nbgrader_config.py")
        for lab in labs:
            shutil.copytree(root / "solutions" / lab, course / "solutions" / lab, dirs_exist_ok=True)
    for lab in labs:
        cmd = nbgrader_command() + ["generate_assignment", lab, "--force", "--no-db",
                                    f"--CourseDirectory.root={course}", "--log-level=WARN"]
        done = subprocess.run(cmd, cwd=course, env=_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {lab} failed:\n{done.stdout}\n{done.stderr}")
        for nb in (course / "labs" / lab).glob("*.ipynb"):
            _check_release(nb)
    return course / "labs"


def _check_release(path: Path) -> None:
    text = path.read_text()
    for marker in MARKERS:
        if marker in text:
            raise RuntimeError(f"{path} still contains {marker!r}: a misspelt marker would leak solutions")


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
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and not meta.get("grade"):
            if current is None or current.test_ids:
                current = Part(index=len(parts) + 1)
                parts.append(current)
            current.solution_ids.append(meta["grade_id"])
        elif meta.get("grade") and cell["cell_type"] == "code":
            if current is None:
                raise ValueError(f"test cell {meta.get('grade_id')!r} comes before any solution cell")
            current.test_ids.append(meta["grade_id"])
            current.points += float(meta.get("points", 0))
    return [p for p in parts if p.test_ids]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m course_utils.grading", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write the student versions into labs/")
    g.add_argument("labs", nargs="*")
    p = sub.add_parser("parts", help="list a lab's graded parts and points")
    p.add_argument("lab")
    args = ap.parse_args(argv)
    root = find_root()
    if args.command == "generate":
        out = generate(args.labs or None, root)
        print(f"wrote {', '.join(args.labs or list_labs(root))} to {out}")
    elif args.command == "parts":
        nb = root / "solutions" / args.lab / f"{args.lab}.ipynb"
        parts = graded_parts(nb)
        for part in parts:
            print(f"part {part.index}: {part.points:g} points, solution cells {part.solution_ids}, tests {part.test_ids}")
        print(f"total: {sum(p.points for p in parts):g} points in {len(parts)} parts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
