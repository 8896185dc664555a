"""What goes into the student edition: the one place that decides.

This repository is the instructor's: ``solutions/`` holds every answer and
every hidden test, and ``course_grading/`` the toolkit that grades with them.
The student edition (:mod:`course_grading.edition`) is a copy of a *list* of
files, not of everything minus a guess:

- :data:`TOP_LEVEL` names what is copied from the root when it exists, plus
  every page ``_toc.yml`` names (:func:`toc_files`) and the files
  ``_config.yml`` refers to;
- :data:`INSTRUCTOR_ONLY` names what never goes, whatever the lists above say
  (the grading toolkit, the instructors' tests, the gradebook, these notes);
- :data:`STRIPPED` names the files whose ``# >>> instructor only`` ...
  ``# <<< instructor only`` blocks are cut (:func:`strip_instructor_blocks`):
  the ``make labs`` and ``make student-edition`` targets, and the toolkit's
  package, extra and commands in ``pyproject.toml``.

Example: ``edition_files(".")`` gives ``['.ci/run', '.gitignore', '_config.yml',
..., 'tests/test_transformer.py']``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["TOP_LEVEL", "INSTRUCTOR_ONLY", "JUNK", "STRIPPED", "is_instructor_only", "is_junk", "load_yaml",
           "toc_files", "edition_files", "strip_instructor_blocks"]

#: Files and folders copied from the instructor repository's root when they
#: exist (plus every page named in ``_toc.yml`` and the files ``_config.yml``
#: refers to). Everything else stays out.
TOP_LEVEL: tuple[str, ...] = (
    # the book
    "_config.yml",
    "_toc.yml",
    "chapters",
    "labs",
    "images",
    "figures",
    "_static",
    # the package, its environments and its tests
    "course_utils",
    "pyproject.toml",
    "constraints.txt",
    "constraints-floors.txt",
    "environment.yml",
    "binder",
    "Makefile",
    ".ci/run",
    ".gitignore",
    "tests",
    # what an open course ships with
    "LICENSE",
    "LICENSE.md",
    "LICENSE.txt",
    "LICENSE-BOOK.md",
    "CITATION.cff",
)

#: Never in the edition, whatever the lists above or the table of contents
#: say (glob patterns on paths relative to the root). The tests listed here
#: read ``solutions/``, the gradebook or the grading toolkit; every other file
#: of ``tests/`` goes to students, and the edition's test runs that suite in
#: the edition to prove it passes without them.
INSTRUCTOR_ONLY: tuple[str, ...] = (
    "solutions",
    "solutions/*",
    "course_grading",
    "course_grading/*",
    "course_utils/grading.py",  # the pointer to course_grading's commands
    "nbgrader_config.py",
    "gradebook.db",
    "submitted/*",
    "autograded/*",
    "feedback/*",
    "release/*",
    "grades/*",
    "downloaded/*",
    "README.md",  # the instructor README; students get README_STUDENT.md
    "README_STUDENT.md",
    "instructors.md",
    "publishing.md",
    "benchmarks/*",
    "tests/test_labs.py",
    "tests/test_grading.py",
    "tests/test_leaks.py",
    "tests/hostile.py",
    "tests/test_student_edition.py",
    "tests/test_intake.py",
    "tests/test_incremental.py",
    "tests/test_report.py",
    "tests/test_integrity.py",
)

#: Never copied from anywhere: caches and editor leftovers.
JUNK: tuple[str, ...] = (
    "__pycache__", "*.pyc", ".ipynb_checkpoints", ".pytest_cache", ".hypothesis",
    "*.egg-info", ".DS_Store", "_build", ".venv",
)

#: Files in which ``# >>> instructor only`` ... ``# <<< instructor only``
#: blocks are dropped (the markers may be indented, e.g. inside a TOML array).
STRIPPED: tuple[str, ...] = ("Makefile", ".ci/run", "pyproject.toml")
BLOCK_BEGIN = "# >>> instructor only"
BLOCK_END = "# <<< instructor only"

PAGE_SUFFIXES = (".md", ".ipynb", ".rst")
IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".gif", ".ico")


def is_junk(name: str) -> bool:
    """Whether a file or folder name is a cache or an editor leftover, e.g. ``'__pycache__'``."""
    return any(fnmatch.fnmatch(name, p) for p in JUNK)


def is_instructor_only(rel: str) -> bool:
    """Whether a root-relative path must stay out of the edition, e.g. ``'solutions/lab01/x.ipynb'``."""
    return any(fnmatch.fnmatch(rel, p) for p in INSTRUCTOR_ONLY)


def _walk(root: Path, top: str) -> Iterator[str]:
    """Root-relative paths of the files at or under ``top``, junk left out."""
    path = root / top
    if path.is_file():
        yield top
        return
    for folder, dirs, files in os.walk(path):
        rel_folder = Path(folder).relative_to(root).as_posix()
        dirs[:] = sorted(d for d in dirs if not is_junk(d))
        for name in sorted(files):
            if not is_junk(name):
                yield f"{rel_folder}/{name}"


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping (``_config.yml``, ``_toc.yml``)."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a mapping, got {type(data).__name__}")
    return data


def toc_files(root: str | os.PathLike) -> list[str]:
    """The pages that ``_toc.yml`` names, as root-relative file paths, read the way
    Jupyter Book reads them (``sphinx_external_toc``).

    Example: a toc with ``root: intro`` and ``- file: chapters/01_x`` gives
    ``['intro.md', 'chapters/01_x.md']``.
    """
    from sphinx_external_toc.parsing import parse_toc_yaml

    root = Path(root)
    site_map = parse_toc_yaml(root / "_toc.yml")
    names = list(site_map)  # document names, in the order of the table of contents
    for pattern in sorted(site_map.globs()):
        names += sorted(p.relative_to(root).with_suffix("").as_posix()
                        for suffix in PAGE_SUFFIXES for p in root.glob(pattern + suffix))
    files: list[str] = []
    for name in names:
        candidates = [name] if Path(name).suffix in PAGE_SUFFIXES else [name + s for s in PAGE_SUFFIXES]
        found = next((c for c in candidates if (root / c).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"_toc.yml names {name!r}, but none of {candidates} exists in {root}")
        if found not in files:
            files.append(found)
    return files


def _config_files(root: Path, config: dict[str, Any]) -> list[str]:
    """Files ``_config.yml`` refers to: bibliographies, logo, favicon, static folders."""
    refs: list[str] = list(config.get("bibtex_bibfiles") or [])
    if config.get("logo"):
        refs.append(config["logo"])
    html = config.get("html") or {}
    if html.get("favicon"):
        refs.append(html["favicon"])
    sphinx_config = (config.get("sphinx") or {}).get("config") or {}
    refs += list(sphinx_config.get("html_static_path") or [])
    refs += list(sphinx_config.get("html_extra_path") or [])
    return [r for r in refs if (root / r).exists()]


def edition_files(root: str | os.PathLike) -> list[str]:
    """Root-relative paths of the instructor files that go into the edition, sorted.

    Raises ``ValueError`` if the table of contents names an instructor-only page
    (the edition's book would not build without it).
    """
    root = Path(root)
    config = load_yaml(root / "_config.yml")
    pages = toc_files(root)
    forbidden = [p for p in pages if is_instructor_only(p)]
    if forbidden:
        raise ValueError(f"_toc.yml names instructor-only pages {forbidden}; they cannot go to students "
                         f"(remove them from the toc or from INSTRUCTOR_ONLY in {__name__})")
    tops = list(TOP_LEVEL) + pages + _config_files(root, config)
    tops += [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    files: set[str] = set()
    for top in tops:
        if (root / top).exists():
            files.update(rel for rel in _walk(root, top) if not is_instructor_only(rel))
    return sorted(files)


def strip_instructor_blocks(text: str, name: str) -> str:
    """``text`` without its ``# >>> instructor only`` ... ``# <<< instructor only`` blocks
    (markers included). ``name`` is the file's, for the error raised on an unbalanced block."""
    out, inside = [], False
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        s = line.strip()
        if s.startswith(BLOCK_BEGIN):
            if inside:
                raise ValueError(f"{name}:{number}: {BLOCK_BEGIN!r} inside another instructor-only block")
            inside = True
        elif s.startswith(BLOCK_END):
            if not inside:
                raise ValueError(f"{name}:{number}: {BLOCK_END!r} without {BLOCK_BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{name}: {BLOCK_BEGIN!r} is never closed by {BLOCK_END!r}")
    return "".join(out)
