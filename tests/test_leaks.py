"""The one leak check (course_grading.leaks): no solution and no hidden test in anything published.

- Secret lines: every line only the markers of solutions/ hold, however short,
  comments included; a line shown outside the markers, or in the package, a
  chapter or a student test, is not secret.
- A file leaks through its raw lines, the text of an HTML page (syntax
  highlighting splits code into spans), the sources and outputs of a notebook
  (HTML outputs too), a marker anywhere, or by being a source notebook.
- `course-check-release` on this repository finds nothing, and finds leaks
  planted in a copy of one lab's release and built page.
(The student edition runs the same check on everything it writes:
tests/test_student_edition.py.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from course_grading.cells import MARKERS
from course_grading.course import find_root, list_labs
from course_grading.leaks import SOURCE_NOTEBOOK, check_release, find_leaks, secret_lines

ROOT = find_root(Path(__file__).parent)


def _escape(line: str) -> str:
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _notebook(*cells: dict) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": list(cells)}


def _code(source: str, outputs: list | None = None) -> dict:
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": outputs or [], "execution_count": None}


def _tiny_course(tmp_path: Path) -> Path:
    """A course with one lab whose solution holds a short line, a comment and a line the package holds."""
    course = tmp_path / "course"
    (course / "solutions" / "lab01_tiny").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    solution = _notebook(
        _code("def double(x):\n    ### BEGIN SOLUTION\n    # twice x\n    y = x + x\n    return y\n"
              "    helper_from_the_package(x)\n    ### END SOLUTION"),
        _code("assert double(2) == 4\n### BEGIN HIDDEN TESTS\nassert double(3) == 6\n### END HIDDEN TESTS\nreturn y"),
    )
    (course / "solutions" / "lab01_tiny" / "lab01_tiny.ipynb").write_text(json.dumps(solution))
    (course / "course_utils").mkdir()
    (course / "course_utils" / "helpers.py").write_text("def f(x):\n    helper_from_the_package(x)\n")
    return course


def test_secret_lines_have_no_minimum_and_count_comments(tmp_path):
    course = _tiny_course(tmp_path)
    # `return y` is shown outside the markers (in the test cell), the helper call is in the package
    assert secret_lines(course) == {"# twice x", "y = x + x", "assert double(3) == 6"}


def test_the_leak_check_sees_every_secret_line_and_marker_in_solutions():
    secret = secret_lines(ROOT)
    assert secret, "no secret line found in solutions/"
    found = {leak.what for leak in find_leaks(ROOT / "solutions", secret)}
    assert found == secret | set(MARKERS)


def test_the_leak_check_reads_highlighted_html(tmp_path):
    secret = secret_lines(ROOT)
    line = max(secret, key=len)
    spans = "".join(f'<span class="n">{word}</span> ' for word in _escape(line).split(" ")).rstrip()
    page = tmp_path / "page.html"
    page.write_text(f"<html><body><div class=\"highlight\"><pre>x = 1\n    {spans}\ny = 2</pre></div></body></html>")
    assert find_leaks(tmp_path, secret) == [("page.html", line)], line


def test_the_leak_check_reads_notebook_outputs(tmp_path):
    secret = {"y = x + x", "assert double(3) == 6"}
    printed = {"output_type": "stream", "name": "stdout", "text": ["ok\n", "  y = x + x\n"]}
    shown = {"output_type": "display_data", "metadata": {},
             "data": {"text/html": f"<pre><span>{_escape('assert double(3) == 6')}</span></pre>",
                      "text/plain": "<IPython.core.display.HTML object>"}}
    for name in ("executed.ipynb", "executed.ipynb.txt"):  # the book keeps notebooks as .txt in _sources
        (tmp_path / name).write_text(json.dumps(_notebook(_code("print(1)", [printed, shown])), indent=1))
    assert find_leaks(tmp_path, secret) == [(name, line) for name in ("executed.ipynb", "executed.ipynb.txt")
                                            for line in sorted(secret)]


def test_notebooks_are_read_as_their_text_not_their_json_syntax(tmp_path):
    """A solution line `]` (closing a list) is in a notebook's JSON syntax, but not in its text."""
    secret = {"]", "x = [1,"}
    (tmp_path / "lab.ipynb").write_text(json.dumps(_notebook(_code("y = [2]")), indent=1))  # lines "]" in its JSON
    (tmp_path / "solved.ipynb").write_text(json.dumps(_notebook(_code("x = [1,\n]"))))
    (tmp_path / "code.py").write_text("x = [1,\n]\n")
    assert "]" in {line.strip() for line in (tmp_path / "lab.ipynb").read_text().splitlines()}
    assert find_leaks(tmp_path, secret) == [("code.py", "]"), ("code.py", "x = [1,"), ("solved.ipynb", "]"),
                                           ("solved.ipynb", "x = [1,")]


def test_markers_and_source_notebooks_leak_without_any_secret(tmp_path):
    (tmp_path / "notes.md").write_text("text\n  ### END HIDDEN TESTS  \n")
    (tmp_path / "_build" / "solutions" / "lab").mkdir(parents=True)
    (tmp_path / "_build" / "solutions" / "lab" / "lab.ipynb").write_text(json.dumps(_notebook()))
    (tmp_path / "labs").mkdir()
    (tmp_path / "labs" / "lab.ipynb").write_text(json.dumps(_notebook()))
    assert find_leaks(tmp_path, set()) == [("_build/solutions/lab/lab.ipynb", SOURCE_NOTEBOOK),
                                           ("notes.md", "### END HIDDEN TESTS")]


def test_course_check_release_finds_nothing_in_this_repository():
    done = subprocess.run([str(Path(sys.executable).with_name("course-check-release"))], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("release clean"), done.stdout + done.stderr


def test_release_check_finds_planted_leaks(tmp_path):
    lab = "lab02_attention" if "lab02_attention" in list_labs(ROOT) else list_labs(ROOT)[0]
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / lab, course / "solutions" / lab)
    shutil.copytree(ROOT / "labs" / lab, course / "labs" / lab)
    assert check_release(course) == []
    solution = json.loads((course / "solutions" / lab / f"{lab}.ipynb").read_text())
    lines = []
    for cell in solution["cells"]:
        src = "".join(cell["source"])
        if "### BEGIN HIDDEN TESTS" in src:
            hidden = src.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
            lines += [ln.strip() for ln in hidden.splitlines() if ln.strip()]
    public = {ln.strip() for c in json.loads((course / "labs" / lab / f"{lab}.ipynb").read_text())["cells"]
              for ln in "".join(c["source"]).splitlines()}
    leak = next(ln for ln in lines if ln not in public)
    page = course / "_build" / "html" / "labs" / "page.html"
    page.parent.mkdir(parents=True)
    page.write_text(f'<div class="highlight"><pre><span class="n">{_escape(leak)}</span>\n</pre></div>')
    release = course / "labs" / lab / f"{lab}.ipynb"
    nb = json.loads(release.read_text())
    nb["cells"][-1]["source"] = "### BEGIN SOLUTION\nx = 1\n### END SOLUTION"
    release.write_text(json.dumps(nb))
    found = check_release(course)
    assert f"_build/html/labs/page.html: solution or hidden-test line {leak!r}" in found, found
    assert f"labs/{lab}/{lab}.ipynb: contains '### BEGIN SOLUTION'" in found, found
