"""The cells of an nbgrader notebook: their text, their nbgrader metadata, their role, and the markers.

In an instructor's source notebook, the answer to a part lies between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` and the tests students never
see between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``
(:data:`MARKER_PAIRS`); ``nbgrader generate_assignment`` removes both. Every
part of the toolkit that reads a notebook cell by cell (repairing a
submission, splitting a lab into parts, looking for leaked solutions) reads
it with these helpers. Example::

    >>> cell = {"cell_type": "code", "source": ["x = 1\\n", "y = 2"],
    ...         "metadata": {"nbgrader": {"grade": True, "grade_id": "t", "points": 1}}}
    >>> cell_source(cell), cell_kind(cell)
    ('x = 1\\ny = 2', 'test')
"""

from __future__ import annotations

from typing import Any

__all__ = ["MARKER_PAIRS", "MARKERS", "cell_source", "nbgrader_meta", "cell_kind", "strip_markers",
           "without_hidden_tests"]

#: The begin and end markers of the two kinds of secret block.
MARKER_PAIRS: tuple[tuple[str, str], ...] = (("### BEGIN SOLUTION", "### END SOLUTION"),
                                             ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"))
#: Every marker, begin and end.
MARKERS: tuple[str, ...] = tuple(marker for pair in MARKER_PAIRS for marker in pair)


def cell_source(cell: dict[str, Any]) -> str:
    """A cell's text, whether stored as one string or as a list of lines."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def nbgrader_meta(cell: dict[str, Any]) -> dict[str, Any]:
    """A cell's nbgrader metadata (``{}`` when it has none or it is not a mapping)."""
    meta = (cell.get("metadata") or {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def cell_kind(cell: dict[str, Any]) -> str:
    """``'solution'``, ``'test'``, ``'locked'`` (read-only) or ``''`` (an ordinary cell)."""
    meta = nbgrader_meta(cell)
    if meta.get("solution"):
        return "solution"
    if meta.get("grade") and cell.get("cell_type") == "code":
        return "test"
    return "locked" if meta.get("locked") or meta.get("grade") or meta.get("task") else ""


def strip_markers(source: str) -> str:
    """A source without its marker lines: what a student who solved the part would have written.
    Example: ``'def f():\\n    ### BEGIN SOLUTION\\n    return 1\\n    ### END SOLUTION'`` ->
    ``'def f():\\n    return 1'``."""
    return "\n".join(line for line in source.splitlines() if line.strip() not in MARKERS)


def without_hidden_tests(source: str) -> str:
    """A test cell's source as its release shows it: the hidden-test blocks, markers included, left out
    (a source notebook's cell and the cell nbgrader restores when grading give the same text).
    Example: ``'a = 1\\n### BEGIN HIDDEN TESTS\\nb = 2\\n### END HIDDEN TESTS'`` -> ``'a = 1'``."""
    begin, end = MARKER_PAIRS[1]
    kept, inside = [], False
    for line in source.splitlines():
        s = line.strip()
        if s == begin:
            inside = True
        elif s == end:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept)
