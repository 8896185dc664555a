"""Results: a lab's grades on disk, ``grades/<lab>.json`` and ``grades/<lab>.csv``, merged run after run.

Each run of the grader adds or replaces the rows of the students it graded
and keeps every other row: a run with ``--student bob`` never drops alice.
Each row remembers what it was computed from, so that the next run grades
only what changed (:func:`is_current`):

* ``hash``: :func:`submission_hash` of the student's submission folder;
* ``key``: :func:`grading_key` of everything else a grade depends on (the
  lab's source with its hidden tests, the grader's and the course package's
  code, the time and memory limits, sandboxed or not).

The JSON is the record (one dict per student, as :class:`Outcome` plus
``hash``, ``key``, ``graded_at``; keys it does not know are kept as they are);
the CSV is for people and spreadsheets. A ``held`` row (tampering evidence,
waiting for a review) has no score in the CSV, only its evidence. Both files
are replaced atomically, so an interrupted run never leaves them truncated::

    >>> submission_hash("submitted/alice/lab02_attention")   # doctest: +SKIP
    'sha256:5f1c…'
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["NOT_GRADING", "load", "save", "submission_hash", "grading_key", "is_current", "outcome_of", "csv_rows"]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


#: Modules of ``course_grading`` that cannot change a grade: editing them leaves recorded grades current.
NOT_GRADING = ("__init__.py", "__main__.py", "cli.py", "intake.py", "report.py", "edition.py", "manifest.py",
               "leaks.py")


def _digest_folder(h: "hashlib._Hash", folder: Path, suffixes: tuple[str, ...] | None = None,
                   skip: tuple[str, ...] = ()) -> None:
    """Feed every file below ``folder`` (sorted, names and bytes; a link by its target's name) into ``h``."""
    for path in sorted(p for p in folder.rglob("*") if p.is_symlink() or p.is_file()):
        if "__pycache__" in path.parts or (suffixes and path.suffix not in suffixes) or path.name in skip:
            continue
        rel = path.relative_to(folder).as_posix().encode()
        if path.is_symlink():
            h.update(b"L" + rel + b"\0" + os.readlink(path).encode() + b"\0")
        else:
            data = path.read_bytes()
            h.update(b"F" + rel + b"\0" + str(len(data)).encode() + b"\0" + data)


def submission_hash(folder: str | os.PathLike) -> str:
    """A content hash of a submission folder: every file's relative path and bytes
    (links by their target, not followed), e.g. ``'sha256:5f1c…'``. Timestamps are not part of it."""
    h = hashlib.sha256()
    _digest_folder(h, Path(folder))
    return "sha256:" + h.hexdigest()


def grading_key(root: str | os.PathLike, lab: str, settings: dict[str, Any]) -> str:
    """What a grade depends on besides the submission: the lab's source folder (hidden
    tests), ``nbgrader_config.py``, the code of ``course_utils`` and the grading code of
    ``course_grading`` (all but :data:`NOT_GRADING`), and ``settings`` (limits, sandboxed or not). A change in any of them makes every
    earlier grade of the lab stale."""
    from course_grading.course import course_folder

    root = Path(root)
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    source = course_folder(root, "source") / lab
    if source.is_dir():
        _digest_folder(h, source)
    config = root / "nbgrader_config.py"
    if config.is_file():
        h.update(config.read_bytes())
    import course_grading
    import course_utils

    _digest_folder(h, Path(course_grading.__file__).parent, suffixes=(".py",), skip=NOT_GRADING)
    _digest_folder(h, Path(course_utils.__file__).parent, suffixes=(".py",))
    return "sha256:" + h.hexdigest()


def _folder(root: str | os.PathLike) -> Path:
    return Path(root) / "grades"


def load(root: str | os.PathLike, lab: str) -> dict[str, dict]:
    """The recorded rows of ``lab``, by student (empty when the lab was never graded)."""
    path = _folder(root) / f"{lab}.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        rows = data.get("outcomes", [])
    except (ValueError, AttributeError) as e:  # never start afresh silently: that would drop the class's grades
        raise RuntimeError(f"{path} is unreadable ({e}); move it away to start a new record of {lab}") from None
    sandboxed = data.get("sandboxed")
    out = {}
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("student"), str):
            row.setdefault("sandboxed", sandboxed)  # rows written before rows had their own flag
            out[row["student"]] = row
    return out


def is_current(row: dict | None, digest: str, key: str) -> bool:
    """Whether ``row`` was computed from this very submission with this very grader.

    A grader error (the grader's own failure, not the submission's) is never current.
    """
    if not row or row.get("hash") != digest or row.get("key") != key:
        return False
    return not (row.get("status") == "not graded" and str(row.get("reason", "")).startswith("grader error"))


def outcome_of(row: dict) -> Any:
    """The :class:`course_grading.autograde.Outcome` of a recorded row (its own extra keys dropped)."""
    from course_grading.autograde import Outcome

    names = {f.name for f in dataclasses.fields(Outcome)}
    return Outcome(**{k: v for k, v in row.items() if k in names})


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _text(value: Any) -> str:
    """A text cell that a spreadsheet will not run as a formula."""
    s = "; ".join(map(str, value)) if isinstance(value, list) else ("" if value is None else str(value))
    return "'" + s if s.startswith(_FORMULA_START) else s


def csv_rows(rows: list[dict]) -> list[list[str]]:
    """The CSV table of ``rows`` (header first). ``held`` rows show no score, only their evidence."""
    cells = sorted({c for r in rows for c in (r.get("cells") or {})})
    table = [["student", "status", "score", "max_score", *cells, "reason", "problems", "repairs", "flags",
              "evidence", "graded_at"]]
    for r in sorted(rows, key=lambda r: r["student"]):
        scored = r.get("status") == "graded"
        num = (lambda v: "" if v is None or not scored else v)  # noqa: E731
        table.append([_text(r["student"]), _text(r.get("status")), num(r.get("score")), r.get("max_score") or "",
                      *[num((r.get("cells") or {}).get(c)) for c in cells],
                      *[_text(r.get(k)) for k in ("reason", "problems", "repairs", "flags", "evidence", "graded_at")]])
    return table


def save(root: str | os.PathLike, lab: str, rows: dict[str, dict]) -> None:
    """Write ``grades/<lab>.json`` and ``grades/<lab>.csv`` from every row (atomically)."""
    folder = _folder(root)
    folder.mkdir(exist_ok=True)
    ordered = [rows[s] for s in sorted(rows)]
    sandboxed = all(r.get("sandboxed") is not False for r in ordered)
    report = {"lab": lab, "sandboxed": sandboxed, "outcomes": ordered}
    _atomic_write(folder / f"{lab}.json", json.dumps(report, indent=1))
    lines = io.StringIO()
    csv.writer(lines).writerows(csv_rows(ordered))
    _atomic_write(folder / f"{lab}.csv", lines.getvalue())

