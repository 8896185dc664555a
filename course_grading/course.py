"""The course on disk: its root, its nbgrader configuration, its folders and labs, and how to call nbgrader.

Every command of the toolkit starts here: :func:`find_root` finds the
instructor repository from the current folder (the folder holding
``nbgrader_config.py``), and :func:`course_folder` says where nbgrader keeps
each kind of file according to that configuration, e.g. ``solutions/`` for the
instructor sources and ``labs/`` for the student versions in this course::

    >>> root = find_root()                         # doctest: +SKIP
    >>> course_folder(root, "source").name         # doctest: +SKIP
    'solutions'
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["LAB_NAME", "find_root", "course_config", "course_folder", "list_labs", "nbgrader_command",
           "nbgrader_env"]

#: What a lab's name looks like: ``lab02_attention``.
LAB_NAME = re.compile(r"^lab\d\d_[a-z0-9_]+$")

#: nbgrader's own defaults for the folders a course configuration may rename.
_DEFAULT_FOLDERS = {"source": "source", "release": "release", "submitted": "submitted",
                    "autograded": "autograded", "feedback": "feedback"}


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The course root: the nearest folder at or above ``start`` holding ``nbgrader_config.py``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbgrader_config.py").is_file():
            return folder
    raise FileNotFoundError(f"no nbgrader_config.py at or above {here}; run this from the course repository")


def course_config(root: str | os.PathLike) -> Any:
    """The course's nbgrader configuration (``nbgrader_config.py``), as a traitlets ``Config``."""
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()


def course_folder(root: str | os.PathLike, kind: str) -> Path:
    """Where the course keeps ``kind`` (``'source'``, ``'release'``, ``'submitted'``,
    ``'autograded'`` or ``'feedback'``), e.g. ``course_folder(root, 'release')`` -> ``root/labs``."""
    if kind not in _DEFAULT_FOLDERS:
        raise ValueError(f"kind must be one of {sorted(_DEFAULT_FOLDERS)}, got {kind!r}")
    config = course_config(root).CourseDirectory
    return Path(root) / config.get(f"{kind}_directory", _DEFAULT_FOLDERS[kind])


def list_labs(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the labs in the source folder, e.g. ``['lab01_next_word', 'lab02_attention']``."""
    source = course_folder(find_root(root), "source")
    return sorted(p.name for p in source.iterdir() if p.is_dir() and LAB_NAME.match(p.name))


def nbgrader_command() -> list[str]:
    """How to call nbgrader with this interpreter: ``[sys.executable, '-m', 'nbgrader']``."""
    return [sys.executable, "-m", "nbgrader"]


def nbgrader_env() -> dict[str, str]:
    """This process's environment with the interpreter's ``bin/`` first on ``PATH``
    (nbgrader calls ``alembic``, which lives there)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env
