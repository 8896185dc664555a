"""The labs: student versions are fresh, leak nothing, and grade fairly with the real nbgrader.

For every lab in solutions/, in a temporary course directory:
- a fresh `nbgrader generate_assignment` equals the committed labs/ version;
- no solution line and no hidden-test line appears in labs/;
- `nbgrader autograde` gives the full solution full marks, the untouched
  student version 0 (with every test cell still executed), and a submission
  that solves only part 1 exactly part 1's points. Scores come from the gradebook.
(pytest --nbval-lax solutions/ runs the solutions themselves; see the Makefile.)
"""

from __future__ import annotations

import ast
import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from course_grading.cells import cell_source as source
from course_grading.cells import strip_markers
from course_grading.course import find_root, list_labs, nbgrader_command, nbgrader_env
from course_grading.labs import generate, graded_parts
from course_grading.leaks import find_leaks, marked_lines

ROOT = find_root(Path(__file__).parent)
LABS = list_labs(ROOT)


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def cells_by_id(nb: dict) -> dict[str, dict]:
    return {c["metadata"]["nbgrader"]["grade_id"]: c for c in nb["cells"] if "nbgrader" in c.get("metadata", {})}


def lab_notebook(folder: Path, lab: str) -> Path:
    return folder / lab / f"{lab}.ipynb"


def test_every_lab_has_both_versions():
    assert LABS, "no labs in solutions/"
    released = sorted(p.name for p in (ROOT / "labs").iterdir() if p.is_dir())
    assert released == LABS


@pytest.mark.parametrize("lab", LABS)
def test_release_equals_a_fresh_generation(lab, tmp_path):
    fresh = generate([lab], ROOT, dest=tmp_path)
    assert load(lab_notebook(fresh, lab)) == load(lab_notebook(ROOT / "labs", lab)), (
        f"labs/{lab} differs from a fresh generation: run `make labs` and commit")
    assert sorted(p.name for p in (fresh / lab).iterdir()) == sorted(p.name for p in (ROOT / "labs" / lab).iterdir())


@pytest.mark.parametrize("lab", LABS)
def test_no_solution_or_hidden_test_line_in_labs(lab):
    """Per lab, stricter than the course-wide check (course_grading.leaks.secret_lines): a line
    inside this lab's markers is secret unless this lab's own notebook shows it outside them,
    even when the package or a chapter holds it. Only this lab's release is searched: it is
    generated from this lab's source alone, and another lab's public code may share a generic
    line (`else:`) with this lab's solution."""
    secret, public = marked_lines(load(lab_notebook(ROOT / "solutions", lab)))
    leaked = find_leaks(ROOT / "labs" / lab, secret - public)
    assert not leaked, f"solution or hidden-test lines in labs/: {leaked[:5]}"


@pytest.mark.parametrize("lab", LABS)
def test_structure(lab):
    nb = load(lab_notebook(ROOT / "solutions", lab))
    ids = [c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"] if "nbgrader" in c.get("metadata", {})]
    assert len(ids) == len(set(ids)), "grade_ids must be unique"
    parts = graded_parts(nb)
    assert len(parts) >= 4 and sum(p.points for p in parts) >= 10
    assert '"course_utils @ git+' in source(nb["cells"][0]), "the first cell installs course_utils where it is missing"
    for cell in nb["cells"]:
        assert not cell.get("outputs"), "no outputs are committed"
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and cell["cell_type"] == "code":
            # The last statement, parsed: a bare value such as `x == y` would score full marks even
            # when False (a last *line* containing "=" or ending in ")" proves nothing).
            code = "\n".join(line for line in source(cell).splitlines() if not line.lstrip().startswith(("%", "!")))
            body = ast.parse(code).body
            last = body[-1] if body else None
            # A final call is allowed for helpers that assert inside and return None.
            assert last is not None and not (isinstance(last, ast.Expr) and not isinstance(last.value, ast.Call)), (
                f"test cell {meta['grade_id']} must end in an assert, not a bare expression: "
                f"{ast.unparse(last) if last else '(empty)'!r}")


def fill(release: dict, solution: dict, ids: set[str]) -> dict:
    """The release notebook with the solution cells in `ids` completed."""
    nb = copy.deepcopy(release)
    answers = cells_by_id(solution)
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in ids:
            cell["source"] = strip_markers(source(answers[gid]))
    return nb


@pytest.mark.parametrize("lab", LABS)
def test_grading_pipeline(lab, tmp_path):
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / lab, course / "solutions" / lab)
    run = lambda *args: subprocess.run(nbgrader_command() + list(args) + [f"--CourseDirectory.root={course}"],
                                       cwd=course, env=nbgrader_env(), capture_output=True, text=True)
    done = run("generate_assignment", lab, "--force")
    assert done.returncode == 0, done.stderr
    release = load(lab_notebook(course / "release", lab)) if (course / "release").exists() else load(
        lab_notebook(course / "labs", lab))
    solution = load(lab_notebook(course / "solutions", lab))
    parts = graded_parts(solution)
    all_ids = {i for p in parts for i in p.solution_ids}
    submissions = {
        "solved": fill(release, solution, all_ids),
        "untouched": release,
        "part1": fill(release, solution, set(parts[0].solution_ids)),
    }
    for student, nb in submissions.items():
        path = course / "submitted" / student / lab / f"{lab}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(nb))
    done = run("autograde", lab, "--force")
    assert done.returncode == 0, done.stdout + done.stderr

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        max_score = gb.find_assignment(lab).max_score
        scores = {s: gb.find_submission(lab, s).score for s in submissions}
    assert max_score == sum(p.points for p in parts)
    assert scores["solved"] == max_score, scores
    assert scores["untouched"] == 0, scores
    assert scores["part1"] == parts[0].points, scores

    graded = load(lab_notebook(course / "autograded" / "untouched", lab))
    for cell in graded["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and cell["cell_type"] == "code":
            assert cell.get("execution_count") is not None and cell.get("outputs"), (
                f"test cell {meta['grade_id']} did not run for the untouched notebook")
