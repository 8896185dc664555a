"""Moved: the instructors' lab tooling is now the package ``course_grading`` and its commands.

``python -m course_utils.grading COMMAND ...`` only prints, in one line, the
command that replaced it and exits with status 2; importing this module raises
``ImportError`` with the same pointer. It will be removed; the student edition
already leaves it out. See ``instructors.md``.
"""

from __future__ import annotations

import shlex
import sys

#: The old sub-commands and the commands that replaced them.
REPLACED_BY = {
    "generate": "course-generate",
    "autograde": "course-grade",
    "check-release": "course-check-release",
    "parts": "python -m course_grading parts",
}


def pointer(argv: list[str]) -> str:
    """The one line that says what to run instead of ``python -m course_utils.grading argv...``,
    e.g. ``['autograde', 'lab02_attention']`` -> ``"... run `course-grade lab02_attention` ..."``."""
    if argv and argv[0] in REPLACED_BY:
        command = " ".join([REPLACED_BY[argv[0]], shlex.join(argv[1:])]).strip()
    else:
        command = "course-grade LAB`, `course-generate` or `course-check-release"
    return (f"course_utils.grading has moved to the package course_grading: run `{command}` "
            "(pip install -e \".[instructor]\"; see instructors.md)")


if __name__ != "__main__":
    raise ImportError(pointer([]))
print(pointer(sys.argv[1:]), file=sys.stderr)
raise SystemExit(2)
