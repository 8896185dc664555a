"""Review: submissions held for tampering, kept aside until an instructor accepts or rejects them.

A submission whose tests pass in the student's kernel but fail when re-run
without IPython (:mod:`course_grading.integrity`) is *held*: its would-be
grades are not written to the gradebook and its score is not exported. They
are kept in ``grades/held/<lab>/<student>/`` (``held.json`` with the grades
and the evidence, plus the executed notebook and the feedback), and one
command decides::

    course-review LAB                      # list the held submissions and why
    course-review LAB STUDENT --accept     # write the kept grades into the gradebook
    course-review LAB STUDENT --reject     # record 0 for every test cell instead

Either way the submission leaves the held folder and ``grades/<lab>.csv`` and
``grades/<lab>.json`` are updated. :func:`read_grades` and :func:`write_grades`
move grades between gradebooks; the grader uses them for every submission.
"""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

from course_grading.course import course_folder, find_root

__all__ = ["held_folder", "read_grades", "write_grades", "hold", "held", "decide"]


def held_folder(root: Path, lab: str, student: str | None = None) -> Path:
    """``grades/held/<lab>[/<student>]`` under the course root."""
    folder = Path(root) / "grades" / "held" / lab
    return folder / student if student else folder


def read_grades(db: Path, lab: str, student: str) -> dict:
    """One student's grades in a gradebook as a plain record:
    ``{"timestamp", "score", "max_score", "notebooks": {nb: {"late_submission_penalty", "grades", "comments"}}}``."""
    from nbgrader.api import Gradebook

    with warnings.catch_warnings(), Gradebook(f"sqlite:///{db}") as gb:
        warnings.simplefilter("ignore")  # nbgrader's SQLAlchemy noise
        sub = gb.find_submission(lab, student)
        return {"timestamp": sub.timestamp.isoformat() if sub.timestamp else None,
                "score": sub.score, "max_score": sub.max_score,
                "notebooks": {nb.name: {"late_submission_penalty": nb.late_submission_penalty,
                                        "grades": {g.name: g.auto_score for g in nb.grades},
                                        "comments": {c.name: c.auto_comment for c in nb.comments}}
                              for nb in sub.notebooks}}


def write_grades(record: dict, db: Path, lab: str, student: str) -> tuple[float, float, dict[str, float | None]]:
    """Write a record of :func:`read_grades` into the gradebook ``db`` (manual grades kept);
    returns ``(score, max_score, {grade cell: score})`` as the gradebook now has them."""
    from nbgrader.api import Gradebook

    with warnings.catch_warnings(), Gradebook(f"sqlite:///{db}") as gb:
        warnings.simplefilter("ignore")
        gb.update_or_create_student(student)
        stamp = {"timestamp": record["timestamp"]} if record["timestamp"] else {}
        gb.update_or_create_submission(lab, student, **stamp)
        for name, nb in record["notebooks"].items():
            real_nb = gb.find_submission_notebook(name, lab, student)
            real_nb.late_submission_penalty = nb["late_submission_penalty"]
            for grade, score in nb["grades"].items():
                real = gb.find_grade(grade, name, lab, student)
                real.auto_score = score
                real.needs_manual_grade = real.manual_score is not None or score is None
            for comment, text in nb["comments"].items():
                gb.find_comment(comment, name, lab, student).auto_comment = text
        gb.db.commit()
        sub = gb.find_submission(lab, student)
        return sub.score, sub.max_score, {g.name: g.score for n in sub.notebooks for g in n.grades}


def hold(root: Path, lab: str, student: str, record: dict, outcome: dict, course: Path) -> None:
    """Keep a held submission's would-be grades, its outcome and its executed notebook and feedback."""
    folder = held_folder(root, lab, student)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for kind in ("autograded", "feedback"):
        made = course / kind / student / lab
        if made.is_dir():
            shutil.copytree(made, folder / kind)
    (folder / "held.json").write_text(json.dumps({"record": record, "outcome": outcome}, indent=1, default=str))


def held(root: Path, lab: str) -> dict[str, dict]:
    """The held submissions of ``lab``: ``{student: {"record", "outcome"}}``."""
    folder = held_folder(root, lab)
    found = {}
    for path in sorted(folder.glob("*/held.json")) if folder.is_dir() else []:
        found[path.parent.name] = json.loads(path.read_text())
    return found


def _update_report(root: Path, lab: str, student: str, status: str, score, max_score, cells: dict, reason: str) -> None:
    """Update the student's row in ``grades/<lab>.csv`` and entry in ``grades/<lab>.json``."""
    report = Path(root) / "grades" / f"{lab}.json"
    if report.is_file():
        data = json.loads(report.read_text())
        for o in data.get("outcomes", []):
            if o.get("student") == student:
                o.update(status=status, score=score, max_score=max_score, cells=cells,
                         reason="; ".join(r for r in (o.get("reason"), reason) if r))
        report.write_text(json.dumps(data, indent=1))
    table = Path(root) / "grades" / f"{lab}.csv"
    if table.is_file():
        with open(table, newline="") as f:
            reader = csv.DictReader(f)
            header, rows = list(reader.fieldnames or []), list(reader)
        extra = [c for c in cells if c not in header]
        if extra:  # every earlier row was held or ungraded: add the cell columns before "reason"
            at = header.index("reason") if "reason" in header else len(header)
            header[at:at] = extra
        for row in rows:
            if row.get("student") == student:
                row.update(status=status, score="" if score is None else score,
                           max_score="" if max_score is None else max_score)
                row.update({c: "" if v is None else v for c, v in cells.items()})
                if "reason" in row:
                    row["reason"] = "; ".join(r for r in (row["reason"], reason) if r)
        with open(table, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def decide(lab: str, student: str, accept: bool, root: str | Path | None = None) -> tuple[float, float]:
    """Accept (write the kept grades) or reject (write 0 on every test cell) a held submission;
    returns ``(score, max_score)`` as written to the gradebook."""
    root = find_root(root)
    folder = held_folder(root, lab, student)
    if not (folder / "held.json").is_file():
        raise FileNotFoundError(f"{student} has no held submission of {lab} (see `course-review {lab}`)")
    kept = json.loads((folder / "held.json").read_text())
    record = kept["record"]
    if not accept:
        for nb in record["notebooks"].values():
            nb["grades"] = {g: (0.0 if s is not None else None) for g, s in nb["grades"].items()}
    score, max_score, cells = write_grades(record, root / "gradebook.db", lab, student)
    if accept:
        for kind in ("autograded", "feedback"):
            if (folder / kind).is_dir():
                target = course_folder(root, kind) / student / lab
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(folder / kind, target)
    reason = "held for review, accepted" if accept else "held for review, rejected: 0 recorded"
    _update_report(root, lab, student, "graded", score, max_score, cells, reason)
    shutil.rmtree(folder)
    return score, max_score
