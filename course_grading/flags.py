"""Flags: what a submission's own code does that deserves an instructor's look.

Flags never change a score: the jail (:mod:`course_grading.sandbox`), the
nonce of :mod:`course_grading.kernel` and the re-run of
:mod:`course_grading.integrity` (which holds a submission whose kernel was
rewired, by behaviour, whatever names it used) make the attempts harmless.
They are in the report so that you can talk to the student. Example: a cell holding
``import sqlite3`` gives ``['the gradebook']``.
"""

from __future__ import annotations

import re

from course_grading.cells import cell_kind, cell_source

__all__ = ["SUSPICIOUS", "suspicious"]

SUSPICIOUS = {
    "network access": r"\bsocket\b|urllib|requests\.|http\.client|urlopen",
    "the gradebook": r"gradebook|sqlite3",
    "files outside the submission": r"""(open|Path|listdir|scandir|glob|read_text|read_bytes)\s*\(\s*[rbf]?['"](/|~|\.\./)|expanduser|os\.walk\s*\(\s*['"]/""",
    "kernel or output tampering": r"get_ipython|showtraceback|excepthook|input_transformers|sys\.std(out|err)\s*=|__builtins__|\bbuiltins\b",
    "comparison patching": r"\.(allclose|array_equal|equal|isclose|assert_close|assert_allclose)\s*=|__eq__|__ne__",
    "process control": r"os\._exit|os\.kill|os\.fork|subprocess|signal\.|multiprocessing|sys\.exit",
    "dynamic code": r"\bexec\s*\(|\beval\s*\(|\bcompile\s*\(|__import__",
}


def suspicious(nb: dict) -> list[str]:
    """What the student-written code of a (repaired) notebook does that deserves
    a look, e.g. ``['the gradebook', 'network access']``. Read-only cells are skipped."""
    code = "\n".join(cell_source(c) for c in nb["cells"] if c["cell_type"] == "code" and cell_kind(c) in ("solution", ""))
    return [name for name, pattern in SUSPICIOUS.items() if re.search(pattern, code)]
