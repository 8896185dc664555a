"""Repair: match a damaged submission back to the release notebook before it is graded.

Students copy cells into fresh Colab or VS Code notebooks, duplicate, split,
reorder and delete cells; plain nbgrader then gives 0 or stops (a duplicated
cell id aborts ``nbgrader autograde`` for everyone). :func:`load_submission`
reads whatever was handed in, or says why it cannot be graded at all, and
:func:`repair` rebuilds it in the release's order with the release's nbgrader
metadata, saying what it changed::

    >>> fixed, notes = repair(load_submission("Copy of lab02_attention.ipynb"), release)  # doctest: +SKIP
    >>> notes                                                                             # doctest: +SKIP
    ['nbgrader metadata missing on 28 cells: matched them to the release by content']
"""

from __future__ import annotations

import ast
import copy
import difflib
import json
import os
import re
from pathlib import Path

from course_grading.cells import cell_kind, cell_source, nbgrader_meta

__all__ = ["MAX_NOTEBOOK_MB", "SubmissionError", "load_submission", "repair"]

#: Larger notebooks (and other handed-in files) are not read.
MAX_NOTEBOOK_MB = 50


class SubmissionError(ValueError):
    """A submission that cannot be graded at all (its reason is the message)."""


def load_submission(path: str | os.PathLike) -> dict:
    """Read a submitted notebook as a plain dict (nbformat 4), or raise
    :class:`SubmissionError` saying why it cannot be read."""
    path = Path(path)
    if path.stat().st_size > MAX_NOTEBOOK_MB * 2**20:
        raise SubmissionError(f"notebook larger than {MAX_NOTEBOOK_MB} MB")
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise SubmissionError(f"invalid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells", raw.get("worksheets")), list):
        raise SubmissionError("not a notebook: no list of cells")
    import nbformat

    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as e:  # noqa: BLE001 - nbformat raises many kinds
        raise SubmissionError(f"not a readable notebook: {type(e).__name__}: {e}") from None
    cells = []
    for cell in nb.cells:
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            continue
        cells.append({"cell_type": cell["cell_type"], "metadata": dict(cell.get("metadata") or {}),
                      "source": cell_source(cell)})
    return {"cells": cells, "metadata": dict(nb.get("metadata") or {})}


def _defined_names(source: str) -> set[str]:
    """Top-level functions, classes and variables a cell defines,
    e.g. ``'def f(x):\\n  return x\\nN = 3'`` -> ``{'f', 'N'}``."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set(re.findall(r"^(?:async\s+def|def|class)\s+(\w+)", source, flags=re.M))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _similarity(a: str, b: str) -> float:
    """Similarity of two cells' text in [0, 1], ignoring blank lines and indentation."""
    norm = lambda s: [line.strip() for line in s.splitlines() if line.strip()]  # noqa: E731
    return difflib.SequenceMatcher(None, norm(a), norm(b), autojunk=False).ratio()


def repair(submission: dict, release: dict) -> tuple[dict, list[str]]:
    """Match a submission's cells to the release notebook and rebuild it in release order.

    Cells are matched by nbgrader ``grade_id``; cells whose metadata was lost
    are matched by the functions they define (solution cells) or by text
    similarity (read-only and test cells). Matched cells get the release's
    nbgrader metadata (so raised ``points`` are reset) and read-only cells the
    release's text; a solution cell keeps the student's code. Duplicated ids
    (duplicated or split cells) stay as ordinary cells after the first; cells
    the student added stay just before the graded cell they preceded (helpers
    before their users); missing test and read-only cells are re-inserted.

    Returns ``(notebook, notes)``; ``notes`` says what was repaired (empty if nothing).
    """
    rel_cells = [c for c in release["cells"] if cell_kind(c)]
    by_id = {nbgrader_meta(c)["grade_id"]: r for r, c in enumerate(rel_cells)}
    sub_cells = submission["cells"]
    match: dict[int, int] = {}  # release index -> submission index
    role: dict[int, int] = {}  # submission index -> release index
    notes: list[str] = []
    dup: dict[str, int] = {}
    copies: dict[int, list[int]] = {}  # release index -> later cells with the same id

    for j, cell in enumerate(sub_cells):  # 1. by grade_id
        r = by_id.get(nbgrader_meta(cell).get("grade_id"))
        if r is None or rel_cells[r]["cell_type"] != cell["cell_type"]:
            continue
        if r in match:
            dup[nbgrader_meta(cell)["grade_id"]] = dup.get(nbgrader_meta(cell)["grade_id"], 1) + 1
            copies.setdefault(r, []).append(j)
        else:
            match[r], role[j] = j, r
    lost = [j for j, c in enumerate(sub_cells) if j not in role and nbgrader_meta(c).get("grade_id") not in dup]
    n_by_content = 0
    for j in lost:  # 2. by what the cell defines, then by text similarity
        cell, src = sub_cells[j], cell_source(sub_cells[j])
        free = [r for r in range(len(rel_cells)) if r not in match and rel_cells[r]["cell_type"] == cell["cell_type"]]
        best, score = None, 0.0
        names = _defined_names(src) if cell["cell_type"] == "code" else set()
        for r in free:  # a solution cell is recognised by the functions it defines
            rel_names = _defined_names(cell_source(rel_cells[r])) if cell_kind(rel_cells[r]) == "solution" else set()
            overlap = len(names & rel_names) / max(len(rel_names), 1)
            if overlap > score:
                best, score = r, overlap
        if best is None:  # anything else by its text
            score = 0.6
            for r in free:
                if cell_kind(rel_cells[r]) == "solution" and _defined_names(cell_source(rel_cells[r])):
                    continue  # those are recognised by their names only
                sim = _similarity(src, cell_source(rel_cells[r]))
                if sim >= score:
                    best, score = r, sim + 1e-9
        if best is not None:
            match[best], role[j] = j, best
            n_by_content += 1
    if n_by_content:
        notes.append(f"nbgrader metadata missing on {n_by_content} cells: matched them to the release by content")
    for gid, n in dup.items():
        notes.append(f"{n} cells carry the id '{gid}' (duplicated or split): the first is graded, "
                     "the rest run as ordinary cells")

    order = [role[j] for j in sorted(role)]
    if order != sorted(order):
        notes.append("cells were reordered: restored the release order")
    before: dict[int, list[int]] = {}  # the student's own cells go just before the graded cell they preceded
    pending: list[int] = []
    copied = {j for js in copies.values() for j in js}
    for j in range(len(sub_cells)):
        if j in role:
            before[role[j]], pending = pending, []
        elif j not in copied:
            pending.append(j)

    def plain(j: int) -> dict:
        cell = {"cell_type": sub_cells[j]["cell_type"], "metadata": {}, "source": cell_source(sub_cells[j])}
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
        return cell

    defined_elsewhere = set()
    for j, cell in enumerate(sub_cells):
        if cell["cell_type"] == "code":
            defined_elsewhere |= _defined_names(cell_source(cell))
    out = []
    for r, rel in enumerate(rel_cells):
        out.extend(plain(j) for j in before.get(r, []))
        kind, gid = cell_kind(rel), nbgrader_meta(rel)["grade_id"]
        cell = copy.deepcopy(rel)
        if r in match:
            sub = sub_cells[match[r]]
            sub_meta = nbgrader_meta(sub)
            if kind == "solution":
                cell["source"] = cell_source(sub)
            elif cell_source(sub).strip() != cell_source(rel).strip() and (sub_meta or kind == "test"):
                notes.append(f"{'test' if kind == 'test' else 'read-only'} cell '{gid}' was edited: restored")
            if sub_meta and "points" in nbgrader_meta(rel) and sub_meta.get("points") != nbgrader_meta(rel)["points"]:
                notes.append(f"points of '{gid}' changed to {sub_meta.get('points')!r}: "
                             f"reset to {nbgrader_meta(rel)['points']}")
        elif kind == "test":
            notes.append(f"test cell '{gid}' was missing: re-inserted")
        elif kind == "solution":
            if _defined_names(cell_source(rel)) & defined_elsewhere:
                cell["source"] = "# (this cell's code is in another cell of the submission)\n"
                notes.append(f"solution cell '{gid}' was merged into another cell")
            else:
                notes.append(f"solution cell '{gid}' was missing: inserted the empty template")
        elif rel["cell_type"] == "code":
            notes.append(f"read-only cell '{gid}' was missing: re-inserted")
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
        out.append(cell)
        out.extend(plain(j) for j in copies.get(r, []))  # duplicated or split: right after the graded copy
    out.extend(plain(j) for j in pending)
    nb = {"cells": out, "metadata": copy.deepcopy(release.get("metadata", {})),
          "nbformat": 4, "nbformat_minor": release.get("nbformat_minor", 5)}
    if nb["nbformat_minor"] >= 5:
        for i, cell in enumerate(out):
            cell["id"] = f"cell-{i:03d}"
    return nb, notes
