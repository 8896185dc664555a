"""The report (course_grading.report, `course-report`) and the CSV rows (course_grading.results).

The results are built by hand (no grading): the two-part lab RELEASE of
tests/test_grading.py (part 1 worth 2 points, part 2 worth 3) and rows for
graded, held and ungraded submissions. Checked: each part's scores and how
often it is missed; a held submission shows its evidence and never a score in
the CSV; spreadsheet formulas are neutralised; the page opened in headless
Chromium (as tests/test_site.py drives it) loads nothing from anywhere, shows
its figures, names what happened to each submission and runs no script a
student wrote into a reason. Without a Chromium the browser test is skipped
with one line, except where CI is set.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from course_grading import cli, results
from course_grading.report import part_stats
from test_grading import RELEASE

ROOT = Path(__file__).resolve().parents[1]
LAB = "lab90_report"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
INJECTED = "<img src=x onerror=\"document.title='pwned'\">"


def row(student: str, status: str = "graded", double: float | None = 2.0, triple: float | None = 3.0, **extra):
    cells = {"test_double": double, "test_triple": triple} if status != "not graded" else {}
    score = sum(v or 0 for v in cells.values()) if cells else None
    return {"student": student, "status": status, "score": score, "max_score": 5.0 if cells else None,
            "reason": "", "problems": [], "repairs": [], "flags": [], "cells": cells, "seconds": 1.0, **extra}


ROWS = [
    row("alice"),
    row("bob", triple=0.0, flags=["comparison patching"]),
    row("carol", double=0.0, triple=0.0, problems=["the kernel died in 'test_triple'"]),
    row("dave", triple=0.0),
    row("erin", "held", evidence=["input transformer registered in cell 3", "two runs disagree on part 2"],
        flags=["kernel or output tampering"]),
    row("frank", "not graded", reason="invalid JSON " + INJECTED),
]


def test_part_stats_count_the_misses_per_part():
    stats = part_stats(ROWS, RELEASE)
    assert [(s.part.index, s.part.points) for s in stats] == [(1, 2.0), (2, 3.0)]
    assert stats[0].scores == [2.0, 2.0, 0.0, 2.0] and stats[0].missed == 1  # graded rows only: not erin, frank
    assert stats[1].scores == [3.0, 0.0, 0.0, 0.0] and stats[1].missed == 3
    assert stats[1].missed_share == 0.75


def test_csv_shows_no_score_for_a_held_submission_and_no_formula():
    table = results.csv_rows(ROWS + [row("gina", reason="=HYPERLINK(\"http://x\")")])
    header, body = table[0], {r[0]: dict(zip(table[0], r)) for r in table[1:]}
    assert header[:6] == ["student", "status", "score", "max_score", "test_double", "test_triple"]
    erin = body["erin"]
    assert erin["status"] == "held" and erin["score"] == "" and erin["test_double"] == erin["test_triple"] == ""
    assert erin["evidence"] == "input transformer registered in cell 3; two runs disagree on part 2"
    assert body["bob"]["score"] == 2.0 and body["bob"]["test_triple"] == 0.0
    assert body["gina"]["reason"].startswith("'=")


@pytest.fixture
def course(tmp_path) -> Path:
    """A course whose grades/ holds ROWS, as the grader writes them."""
    course = tmp_path / "course"
    (course / "solutions" / LAB).mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    (course / "solutions" / LAB / f"{LAB}.ipynb").write_text(json.dumps(RELEASE))
    results.save(course, LAB, {r["student"]: r for r in ROWS})
    return course


def test_the_command_writes_the_page_and_the_csv(course, monkeypatch, capsys):
    (course / "grades" / f"{LAB}.csv").unlink()
    monkeypatch.chdir(course)
    assert cli.main(["report", LAB]) == 0
    page = (course / "grades" / f"{LAB}.html").read_text()
    assert "part 2 (triple)" in page and page.count("<img alt=") == 3
    with open(course / "grades" / f"{LAB}.csv") as f:
        assert [r["student"] for r in csv.DictReader(f)] == ["alice", "bob", "carol", "dave", "erin", "frank"]
    assert "wrote" in capsys.readouterr().out
    assert cli.main(["report", "lab91_never_graded"]) == 2
    assert "grade it first" in capsys.readouterr().err


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"no Chromium at {CHROMIUM} (CI is set, so the browser test is required)")
        pytest.skip(f"browser tests skipped, no Chromium at {CHROMIUM}: `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                    "--disable-background-networking", "--disable-component-update"])
        yield b
        b.close()


def test_the_page_in_a_browser(course, browser):
    from course_grading.report import write_report

    page_path = write_report(LAB, course)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    requests, problems = [], []
    context.route("**/*", lambda route: (requests.append(route.request.url), route.continue_()))
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"exception: {e}"))
    try:
        page.goto(page_path.as_uri(), wait_until="load")
        images = page.evaluate("""async () => Promise.all(Array.from(document.images).map(async img => {
            try { await img.decode(); } catch (e) {}
            return [img.alt, img.naturalWidth, img.src.slice(0, 22)]; }))""")
        text = page.inner_text("body")
        title = page.title()
        sections = {h: page.inner_text(f"#{h} + *") for h in ("missed", "held", "not-graded", "problems", "flags")}
    finally:
        context.close()
    assert problems == [], problems
    assert [r for r in requests if not r.startswith(("file:", "data:"))] == [], requests
    assert [(alt, src) for alt, width, src in images] == [
        ("Total score", "data:image/png;base64,"), ("Score per part", "data:image/png;base64,"),
        ("Parts most often missed", "data:image/png;base64,")]
    assert all(width > 100 for _, width, _ in images), images
    assert title == f"Grades of {LAB}"  # the reason's onerror did not run
    assert "6 submissions: 4 graded, 1 held for review, 1 not graded" in text
    missed = sections["missed"].splitlines()
    assert "part 2 (triple)" in missed[1] and "3 of 4 (75 %)" in missed[1], missed  # the most missed comes first
    assert "erin" in sections["held"] and "two runs disagree on part 2" in sections["held"]
    assert "frank" in sections["not-graded"] and INJECTED in sections["not-graded"]  # shown as text
    assert "the kernel died" in sections["problems"] and "carol" in sections["problems"]
    assert "comparison patching\t1\tbob" in sections["flags"]
    assert "kernel or output tampering\t1\terin" in sections["flags"]
