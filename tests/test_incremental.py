"""Incremental grading (course_grading.autograde with course_grading.results): only what changed is graded again.

One small run of the real pipeline (nbgrader, the jail) on a two-part lab made
here from the hand-made cells of tests/test_grading.py, so that each kernel
starts in a second or two: grade two students; a second run grades nobody and
says so; a changed submission graded with `--student` is graded again while the
other row of the CSV is kept as it was; a run with `--force` grades it again
although nothing changed. The hashes and keys themselves are checked without
grading.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from course_grading import cli, results
from course_grading.autograde import autograde
from course_grading.course import nbgrader_command, nbgrader_env
from test_grading import MEMORY_MB, ROOT, _cell

LAB = "lab90_tiny"
NB = f"{LAB}.ipynb"


def source() -> dict:
    """A lab in two parts (2 and 3 points), with a hidden test."""
    solution = "def {0}(x):\n    ### BEGIN SOLUTION\n    return {1} * x\n    ### END SOLUTION"
    return {"nbformat": 4, "nbformat_minor": 5, "cells": [
        _cell("locked", "# A tiny lab", "intro", cell_type="markdown"),
        _cell("solution", solution.format("double", 2), "double"),
        _cell("test", "assert double(2) == 4\n### BEGIN HIDDEN TESTS\nassert double(-5) == -10\n### END HIDDEN TESTS",
              "test_double", 2),
        _cell("solution", solution.format("triple", 3), "triple"),
        _cell("test", "assert triple(2) == 6", "test_triple", 3)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}


def submit(course: Path, student: str, double: str, triple: str) -> None:
    nb = json.loads((course / "labs" / LAB / NB).read_text())
    for cell in nb["cells"]:
        gid = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if gid in ("double", "triple"):
            cell["source"] = f"def {gid}(x):\n    return {double if gid == 'double' else triple}"
    folder = course / "submitted" / student / LAB
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NB).write_text(json.dumps(nb))


def rows(course: Path) -> dict[str, dict]:
    with open(course / "grades" / f"{LAB}.csv") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def test_hash_and_key_follow_content_not_time(tmp_path):
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / NB).write_text("{}")
    first = results.submission_hash(folder)
    (folder / NB).touch()
    assert results.submission_hash(folder) == first
    (folder / "extra.txt").write_text("x")
    assert results.submission_hash(folder) != first
    row = {"hash": first, "key": "k", "status": "graded"}
    assert results.is_current(row, first, "k") and not results.is_current(row, first, "other grader")
    assert not results.is_current({**row, "status": "not graded", "reason": "grader error: boom"}, first, "k")
    (tmp_path / "grades").mkdir()
    (tmp_path / "grades" / f"{LAB}.json").write_text('{"outcomes": [')  # a damaged record is never replaced
    with pytest.raises(RuntimeError, match="unreadable"):
        results.load(tmp_path, LAB)
    course = tmp_path / "course"
    (course / "solutions" / LAB).mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    (course / "solutions" / LAB / NB).write_text(json.dumps(source()))
    key = results.grading_key(course, LAB, {"timeout": 60})
    assert key == results.grading_key(course, LAB, {"timeout": 60}) != results.grading_key(course, LAB, {"timeout": 61})
    (course / "solutions" / LAB / NB).write_text(json.dumps(source()).replace("-10", "-11"))  # a hidden test edited
    assert results.grading_key(course, LAB, {"timeout": 60}) != key


@pytest.fixture
def course(tmp_path) -> Path:
    course = tmp_path / "course"
    (course / "solutions" / LAB).mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    (course / "solutions" / LAB / NB).write_text(json.dumps(source()))
    done = subprocess.run(nbgrader_command() + ["generate_assignment", LAB, "--force", "--log-level=WARN",
                                                f"--CourseDirectory.root={course}"],
                          cwd=course, env=nbgrader_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return course


def test_only_new_and_changed_submissions_are_graded(course, monkeypatch, capsys):
    settings = dict(root=course, jobs=2, timeout=120, memory_mb=MEMORY_MB, progress=False, feedback=False)
    submit(course, "alice", "2 * x", "3 * x")
    submit(course, "bob", "2 * x", "x")
    seen, on_disk = [], []

    def told(outcome, fresh):
        seen.append((outcome.student, outcome.score, fresh))
        on_disk.append(sorted(rows(course)))  # the CSV row is written before the line, one submission at a time

    first = autograde(LAB, on_result=told, **settings)
    assert sorted((o.student, o.score) for o in first) == [("alice", 5.0), ("bob", 2.0)]
    assert sorted(seen) == [("alice", 5.0, True), ("bob", 2.0, True)]  # each told as it finished...
    assert on_disk == [[seen[0][0]], ["alice", "bob"]]  # ...not all at the end
    before = rows(course)
    assert before["bob"]["test_triple"] == "0.0" and before["alice"]["score"] == "5.0"

    monkeypatch.chdir(course)  # the command: nothing changed, nothing graded
    assert cli.main(["grade", LAB, "--timeout", "120", "--memory", str(MEMORY_MB), "--no-feedback"]) == 0
    out = capsys.readouterr().out
    assert "2 unchanged since their last grading, not graded again (--force grades them): alice, bob" in out
    assert "0 submissions graded in this run" in out and rows(course) == before
    assert cli.main(["grade", LAB, "--timeout", "120", "--memory", str(MEMORY_MB), "--student", "zoe"]) == 1
    assert "no submission of lab90_tiny for: zoe" in capsys.readouterr().out and rows(course) == before

    submit(course, "bob", "2 * x", "3 * x")  # bob hands in a fix; the run names him alone
    second = autograde(LAB, students=["bob"], **settings)
    assert [(o.student, o.score) for o in second] == [("bob", 5.0)]
    after = rows(course)
    assert after["alice"] == before["alice"]  # kept as it was, not regraded, not dropped
    assert after["bob"]["score"] == "5.0" and after["bob"]["graded_at"] >= before["bob"]["graded_at"]
    assert autograde(LAB, **settings) == []  # bob's new version is recorded: nothing left to grade
    forced = autograde(LAB, students=["alice"], force=True, **settings)
    assert [(o.student, o.score) for o in forced] == [("alice", 5.0)] and set(rows(course)) == {"alice", "bob"}
