"""The plain-Python check run, delegation and the preflight, on small hand-made cells (seconds, no nbgrader run).

* course_grading.integrity.check_run runs cells in a jail without IPython: tracing hooks are refused,
  replaced built-ins are put back before a test, magics do nothing, a reference implementation called
  from the student's code (not from the test) is reported, a cell that defeats its time limit costs only
  its own part, and a result line forged by the student's code is noticed.
* a check process started ahead (start_check) preloads the lab's imports, ignoring those that fail;
  every lab's DEMONSTRATIONS, which the re-run skips, bind no name that a later cell reads.
* course_grading.preflight refuses an environment whose course package the jail cannot import.
* course_grading.kernel's labels: a failed import in a lab cell marks the environment broken, one in the
  student's code is a problem; "the test did not run to its end" only where no error was shown.
(The whole pipeline, with the IPython attacks and the honest variants, is the battery in tests/test_grading.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import symtable
import subprocess
import sys
import time
from pathlib import Path

import pytest

from course_grading import cli, integrity, sandbox, zygote
from course_grading.autograde import PreflightError, autograde
from course_grading.course import find_root, nbgrader_command, nbgrader_env
from course_grading.cells import cell_source, strip_markers
from course_grading.course import list_labs
from course_grading.integrity import (DEMONSTRATIONS, Cell, CheckSpec, check_run, compare, resume_plan, start_check,
                                      to_python)
from course_grading.kernel import _jail_env
from course_grading.preflight import lab_imports, preflight

ROOT = find_root(Path(__file__).parent)
JAIL = sandbox.available()[0]


def run(tmp_path: Path, cells: list[Cell], ahead: bool = False, **kw):
    """check_run on ``cells``; ``ahead``: with a process started beforehand by start_check."""
    scratch, control = tmp_path / "scratch", tmp_path / "control"
    (scratch / "work").mkdir(parents=True)
    (scratch / "home").mkdir()
    control.mkdir()
    spec = CheckSpec(scratch=str(scratch), control=str(control), jail=JAIL, memory_mb=1024, uid=62980,
                     env=_jail_env(str(scratch), 1), cell_timeout=kw.pop("cell_timeout", 20), deadline=120, **kw)
    return check_run(cells, spec, start_check(spec) if ahead else None)


def test_resume_plan_skips_to_the_next_part():
    kinds = ["locked", "solution", "test", "test", "", "solution", "test", None, "solution", "test"]
    assert resume_plan(kinds, 2) == ([0, 1], 5)  # killed in part 1's first test: its second is skipped
    assert resume_plan(kinds, 5) == ([0, 1, 4], 8)  # killed in a solution cell: its test is skipped
    assert resume_plan(kinds, 9, skip={4}) == ([0, 1, 5, 8], 10)
    assert resume_plan(kinds, 1)[1] == 5
    assert resume_plan(kinds, 4) == ([0, 1], 5)  # killed in a cell of no part (a demonstration): the next cell


def test_check_run_refuses_tracing_and_restores_builtins(tmp_path):
    tracer = ("import sys\n"
              "def _skip(frame, event, arg):\n    return _skip\n"
              "sys.settrace(_skip)\n")
    cells = [
        Cell(0, "locked", to_python("%matplotlib inline\nimport math")),
        Cell(1, "solution", "import builtins\nbuiltins.max = lambda *a, **k: 0\n\ndef double(x):\n    return x + x\n"),
        Cell(2, "test", "assert max([3, 5]) == 5\nassert double(2) == 4", "test_double"),
        Cell(3, "", tracer),
        Cell(4, "test", "import sys\nassert sys.gettrace() is None", "test_trace"),
    ]
    result = run(tmp_path, cells)
    assert result.tests == {2: (True, ""), 4: (True, "")}, result
    text = " ".join(result.evidence)
    assert "replaced built-in functions: max" in text and "sys.settrace" in text, result.evidence


def test_check_run_reports_delegation_from_the_answer_only(tmp_path):
    cells = [
        Cell(0, "solution", "import json\n\ndef to_text(x):\n    return json.dumps(x)\n\n"
                            "def own(x):\n    return '[' + ', '.join(str(i) for i in x) + ']'\n"),
        Cell(1, "test", "import json as _json\nassert to_text([1, 2]) == _json.dumps([1, 2])", "t_delegated"),
        Cell(2, "test", "import json as _json\nassert own([1, 2]) == _json.dumps([1, 2])", "t_own"),
    ]
    result = run(tmp_path, cells, delegates={"t_delegated": ["json:dumps"], "t_own": ["json:dumps"]})
    assert result.tests == {1: (True, ""), 2: (True, "")}
    assert result.delegated == {1: ["json:dumps"]}, result  # the test's own call to dumps does not count
    evidence, zeroed = compare({1: "t_delegated", 2: "t_own"}, {1, 2}, result)
    assert evidence == [] and list(zeroed) == [1] and "json.dumps" in zeroed[1]


def test_a_cell_that_defeats_its_time_limit_costs_only_its_part(tmp_path):
    stuck = "import signal\nsignal.setitimer(signal.ITIMER_REAL, 0)\nimport time\nwhile True:\n    time.sleep(0.2)"
    cells = [
        Cell(0, "solution", "def one():\n    return 1\n"),
        Cell(1, "test", "assert one() == 1", "t1"),
        Cell(2, "solution", "def two():\n    return 2\n"),
        Cell(3, "test", stuck, "t2"),
        Cell(4, "solution", "def three():\n    return one() + two()\n"),
        Cell(5, "test", "assert three() == 3", "t3"),
    ]
    result = run(tmp_path, cells, cell_timeout=2)
    assert result.tests[1] == (True, "") and result.tests[5] == (True, ""), result
    assert result.tests[3][0] is False


def test_a_forged_result_line_and_a_disagreement_are_evidence(tmp_path):
    forge = ("import json, os\n"
             "def answer():\n"
             "    for fd in range(3, 20):\n"
             "        try:\n"
             "            os.write(fd, (json.dumps({'done': 1, 'token': 'guess', 'ok': True}) + '\\n').encode())\n"
             "        except OSError:\n"
             "            pass\n"
             "    return 0\n")
    cells = [Cell(0, "solution", forge), Cell(1, "test", "assert answer() == 42", "t_answer")]
    result = run(tmp_path, cells)
    assert result.tests.get(1, (False, ""))[0] is False
    evidence, _ = compare({1: "t_answer"}, {1}, result)
    assert evidence and "passed in the notebook's kernel" in evidence[0]


def test_a_check_started_ahead_preloads_the_lab_imports_and_still_refuses_tracing(tmp_path):
    cells = [
        Cell(0, "locked", "import colorsys"),
        Cell(1, "solution", "import sys\n\ndef preloaded():\n"
                            "    return sorted(m for m in ('colorsys', 'wave') if m in sys.modules)\n"),
        Cell(2, "", "sys.settrace(lambda *a: None)"),
        Cell(3, "test", "assert preloaded() == ['colorsys', 'wave']", "test_preloaded"),
    ]
    result = run(tmp_path, cells, ahead=True, preload=["colorsys", "wave", "no_such_module_here"])
    assert result.tests == {3: (True, "")}, result
    assert any("sys.settrace" in e for e in result.evidence), result.evidence


WARM = JAIL and zygote.usable()
# What a check's program sees of its jail: the same whether it was forked from a zygote or started fresh.
PROBE = r"""
import os, socket, sys
_s = socket.socket()
_s.settimeout(2)
try:
    _s.connect(("127.0.0.1", {port}))
    _net = "reached the host's 127.0.0.1"
except OSError:
    _net = "blocked"
_s.close()
with open(os.path.join(os.environ["HOME"], "written"), "w") as _f:
    _f.write("home")
SEEN = dict(uid=os.getuid(), pids=sorted(p for p in os.listdir("/proc") if p.isdigit()),
            fds=len(os.listdir("/proc/self/fd")), result_fd=sys.argv[1] in os.listdir("/proc/self/fd"),
            net=_net, host=os.path.exists({host!r}), cwd=os.getcwd(), mine=open("mine.txt").read(),
            home=os.environ["HOME"], preloaded="colorsys" in sys.modules)
"""
EXPECT = ("want = dict(uid={uid}, pids=['1', '2'], fds=5, result_fd=True, net='blocked', host=False, cwd={cwd!r}, "
          "mine='mine', preloaded=True)\n"
          "assert {{k: SEEN[k] for k in want}} == want, SEEN\n")


def _warm_spec(tmp_path: Path, name: str, warm: bool) -> CheckSpec:
    scratch, control = tmp_path / name, tmp_path / f"{name}-control"
    (scratch / "work").mkdir(parents=True)
    (scratch / "home").mkdir()
    (scratch / "work" / "mine.txt").write_text("mine")
    control.mkdir()
    return CheckSpec(scratch=str(scratch), control=str(control), memory_mb=2048, uid=62981,
                     env=_jail_env(str(scratch), 1), cell_timeout=20, deadline=120, preload=["colorsys"], warm=warm)


def _ready_zygote(spec: CheckSpec):
    """The zygote the next warm check of ``spec`` forks from (started and waited for)."""
    env = integrity._program_env(spec.env)
    integrity._warm(spec.preload, env)
    key = next(k for k in integrity._ZYGOTES if k[0] == tuple(spec.preload))
    assert integrity._ZYGOTES[key].ready(60), "the zygote did not start"
    return integrity._ZYGOTES[key]


@pytest.mark.skipif(not WARM, reason="forking checks from a zygote needs the jail and root")
def test_a_check_forked_from_the_zygote_sees_the_same_jail_as_a_fresh_one(tmp_path):
    host_file = tmp_path / "grader-only.txt"
    host_file.write_text("secret")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        for warm in (False, True):
            spec = _warm_spec(tmp_path, f"warm{warm}", warm)
            if warm:
                _ready_zygote(spec)
            harness = start_check(spec)
            assert (harness.zygote is not None) == warm
            probe = PROBE.format(port=listener.getsockname()[1], host=str(host_file))
            expect = EXPECT.format(uid=62981 if os.geteuid() == 0 else 0, cwd=spec.scratch + "/work")
            result = check_run([Cell(0, "locked", "import colorsys"), Cell(1, "solution", probe),
                                Cell(2, "test", expect, "test_jail")], spec, harness)
            assert result.tests == {2: (True, "")}, (warm, result)
            assert (Path(spec.scratch) / "home" / "written").read_text() == "home"  # HOME is this scratch's
    finally:
        listener.close()


@pytest.mark.parametrize("lab", ["lab02_attention", "lab06_decoding", "lab10_modern_blocks"])
def test_the_worker_prewarms_the_zygote_that_its_checks_fork_from(lab, tmp_path):
    """The zygote a grading worker starts from the release notebook is the one its checks ask for:
    the same modules as SandboxedExecute's check, which sees the source's test cells with their hidden
    tests (the lab's own imports and its tests' visible ones, not its demonstrations') and an
    environment equal but for the check's own home folder."""
    import nbformat

    from course_grading.kernel import check_preload

    nb = nbformat.read(str(ROOT / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    preload = check_preload(nb, lab)
    release = nbformat.read(str(ROOT / "labs" / lab / f"{lab}.ipynb"), as_version=4)
    assert check_preload(release, lab) == preload
    if lab == "lab06_decoding":  # imported by a test cell only
        assert "transformers.generation.logits_process" in preload, preload
    assert "torch" in preload and not any(m.startswith("course_grading") for m in preload), preload
    instrumented = {t.split(":")[0] for targets in integrity.DELEGATES[lab].values() for t in targets}
    assert instrumented <= set(preload), "the modules of the instrumented references are imported ahead too"
    check_env = integrity._program_env(_jail_env(str(tmp_path / "job-check"), 1))  # as SandboxedExecute's check
    worker_env = integrity._program_env(_jail_env("/", 1))  # as prewarm_check
    assert integrity._zygote_key(preload, check_env) == integrity._zygote_key(preload, worker_env)
    assert integrity._zygote_key(preload, check_env) != integrity._zygote_key(preload, {**worker_env, "OMP_NUM_THREADS": "2"})


@pytest.mark.skipif(not WARM, reason="forking checks from a zygote needs the jail and root")
def test_nothing_a_forked_check_started_outlives_it(tmp_path):
    spec = _warm_spec(tmp_path, "lasting", True)
    _ready_zygote(spec)
    ticks = Path(spec.scratch) / "work" / "ticks"
    start = ("import subprocess, sys\n"
             "subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True:\\n    open(\"ticks\", \"a\").write(\"x\")"
             "\\n    time.sleep(0.05)'], start_new_session=True)\n")
    result = check_run([Cell(0, "solution", start), Cell(1, "test", "import time\ntime.sleep(0.5)", "t")], spec,
                       start_check(spec))
    assert result.tests == {1: (True, "")}, result
    assert ticks.exists(), "the background process never ran"
    time.sleep(0.5)
    size = ticks.stat().st_size
    time.sleep(1.0)
    assert ticks.stat().st_size == size, "a process the check started still runs after the check ended"


@pytest.mark.skipif(not WARM, reason="forking checks from a zygote needs the jail and root")
def test_a_zygote_whose_children_fail_is_dropped_and_the_check_still_grades(tmp_path, monkeypatch):
    broken = zygote.SERVE.replace("def child(job, stdin_fd, result_fd):\n",
                                  "def child(job, stdin_fd, result_fd):\n    os._exit(3)\n")
    assert broken != zygote.SERVE
    monkeypatch.setattr(zygote, "SERVE", broken)
    spec = _warm_spec(tmp_path, "broken", True)
    spec.preload = ["colorsys", "wave"]  # a zygote of its own
    failing = _ready_zygote(spec)
    cells = [Cell(0, "solution", "def double(x):\n    return 2 * x\n"), Cell(1, "test", "assert double(2) == 4", "t")]
    result = check_run(cells, spec, start_check(spec))
    assert result.tests == {1: (True, "")}, result
    assert failing not in integrity._ZYGOTES.values(), "a failing zygote must not be used again"


def _bound_and_free(source: str) -> tuple[set[str], set[str]]:
    """Names a cell binds at module level, and the global names it (or a function it defines) reads."""
    table = symtable.symtable(source, "<cell>", "exec")
    bound = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    free = set()

    def walk(t, top):
        for s in t.get_symbols():
            if s.is_referenced() and (s.is_global() or (top and not s.is_assigned())):
                free.add(s.get_name())
        for child in t.get_children():
            walk(child, False)
    walk(table, True)
    return bound, free


@pytest.mark.parametrize("lab", sorted(DEMONSTRATIONS))
def test_demonstrations_feed_no_later_cell(lab):
    """The re-run may skip a lab's demonstrations only if they are its own read-only cells before its last
    test and no later cell (up to the last test) reads a name they bind."""
    assert lab in list_labs(ROOT)
    nb = json.loads((ROOT / "solutions" / lab / f"{lab}.ipynb").read_text())
    cells = [(c.get("metadata", {}).get("nbgrader", {}), to_python(strip_markers(cell_source(c))))
             for c in nb["cells"] if c["cell_type"] == "code"]
    last = max(k for k, (meta, _) in enumerate(cells) if meta.get("grade"))
    demos = set(DEMONSTRATIONS[lab])
    found = {meta.get("grade_id"): k for k, (meta, _) in enumerate(cells) if meta.get("grade_id") in demos}
    assert set(found) == demos, demos - set(found)
    for gid, k in found.items():
        meta, source = cells[k]
        assert meta.get("locked") and not meta.get("grade") and not meta.get("solution") and k < last, gid
        bound = _bound_and_free(source)[0]
        for later_meta, later in cells[k + 1: last + 1]:
            if later_meta.get("grade_id") not in demos:
                read = bound & _bound_and_free(later)[1]
                assert not read, f"{gid} binds {sorted(read)}, which {later_meta.get('grade_id')} reads"


def test_lab_imports_reads_every_code_cell():
    nb = {"cells": [{"cell_type": "code", "source": "%matplotlib inline\nimport torch.nn.functional as F\n"
                                                    "from pydoc_data.topics import topics\nfrom . import x"},
                    {"cell_type": "markdown", "source": "import nothing"}]}
    assert lab_imports([nb]) == ["course_utils", "pydoc_data.topics", "torch.nn.functional"]


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A throwaway course with lab 3 released."""
    lab, course = "lab03_tokenization", tmp_path_factory.mktemp("pre") / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / lab, course / "solutions" / lab)
    done = subprocess.run(nbgrader_command() + ["generate_assignment", lab, "--force", "--log-level=WARN",
                                                f"--CourseDirectory.root={course}"],
                          cwd=course, env=nbgrader_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return course


def test_preflight_refuses_a_course_package_the_jail_cannot_import(course, monkeypatch, capsys):
    lab = "lab03_tokenization"
    release = course / "labs" / lab
    assert preflight(release, [lab], jail=JAIL) == []
    package = os.path.realpath(str(ROOT / "course_utils"))
    visible = sandbox.python_paths
    # an editable install from a checkout the jail does not mount: the package's folder is not in the jail
    monkeypatch.setattr(sandbox, "python_paths", lambda: [p for p in visible() if p != package])
    if not JAIL:
        pytest.skip("without the jail, every folder is visible")
    broken = preflight(release, [lab], jail=True)
    assert broken and all("fails in the jail" in b for b in broken) and any("course_utils" in b for b in broken)
    (course / "submitted" / "alice" / lab).mkdir(parents=True)
    shutil.copy(release / f"{lab}.ipynb", course / "submitted" / "alice" / lab)
    with pytest.raises(PreflightError, match="no submission was graded"):
        autograde(lab, root=course, jobs=1, progress=False)
    monkeypatch.chdir(course)
    assert cli.grade([lab]) == 2
    assert "refusing to grade" in capsys.readouterr().err
    assert not (course / "grades" / f"{lab}.csv").exists()


def test_failed_imports_are_named_and_a_broken_lab_cell_is_the_environment():
    """An import that fails in one of the lab's own cells means the grading environment is broken
    (the submission is then not graded); one in the student's code is a problem of the submission."""
    import nbformat

    from course_grading.kernel import SandboxedExecute

    def cell(kind, ename):
        meta = {"nbgrader": {"grade_id": f"{kind}_cell", "locked": kind != "solution", "solution": kind == "solution",
                             "grade": kind == "test", "points": 1}}
        out = nbformat.v4.new_output("error", ename=ename, evalue=f"No module named '{kind}_pkg'", traceback=[])
        return nbformat.v4.new_code_cell("import x", metadata=meta, outputs=[out])

    ex = SandboxedExecute()
    ex.report = {"problems": [], "not_run": [], "died": None}
    nb = nbformat.v4.new_notebook(cells=[cell("solution", "ModuleNotFoundError"), cell("locked", "ImportError")])
    ex._summarise(nb)
    text = " ".join(ex.report["problems"])
    assert "a package import failed in the submission's code" in text and "solution_pkg" in text
    assert len(ex.report["environment"]) == 1 and "locked_cell" in ex.report["environment"][0]


def test_the_hidden_traceback_label_only_where_no_error_was_shown():
    import nbformat

    from course_grading.kernel import SandboxedExecute

    meta = {"nbgrader": {"grade_id": "t", "grade": True, "points": 1}}
    shown = nbformat.v4.new_code_cell("assert f() == 1", metadata=meta, outputs=[
        nbformat.v4.new_output("error", ename="AssertionError", evalue="wrong", traceback=["AssertionError: wrong"])])
    hidden = nbformat.v4.new_code_cell("assert f() == 1", metadata=meta, outputs=[])
    passed = nbformat.v4.new_code_cell("assert f() == 1", metadata=meta, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="n0nce\n")])
    ex = SandboxedExecute()
    ex.report = {"problems": [], "not_run": [], "died": None}
    assert ex._judge(shown, "n0nce") is False and ex._judge(hidden, "n0nce") is False
    assert ex._judge(passed, "n0nce") is True and passed.outputs == []
    assert [o.ename for o in shown.outputs] == ["AssertionError"]  # its own error, no grader label under it
    assert [o.ename for o in hidden.outputs] == ["GradingError"]
    assert ex.report["problems"] == ["test cell 't' did not run to its end (its error was hidden?)"]


def test_a_fresh_kernel_replays_definitions_not_demonstrations(tmp_path):
    """After a cell ignored the interrupt, the fresh kernel replays the earlier cells that define
    something, but not the lab's demonstrations (lab 4's would retrain its model): the demonstration
    ran once, and the next part is still graded."""
    import nbformat

    from course_grading.kernel import SandboxedExecute

    def cell(source, gid, kind):
        meta = {"nbgrader": {"grade_id": gid, "locked": kind != "solution", "solution": kind == "solution",
                             "grade": kind == "test", "points": int(kind == "test"), "schema_version": 3}}
        return nbformat.v4.new_code_cell(source, metadata=meta)

    demo = "import os\nopen(os.path.join(os.getcwd(), 'demo_runs'), 'a').write('x')"
    stuck = "import signal, time\ndef f():\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n    while True:\n" \
            "        time.sleep(0.2)\n"
    assert "gpt_from_blocks" in DEMONSTRATIONS["lab04_gpt"]
    nb = nbformat.v4.new_notebook(cells=[
        cell("y = 1", "imports", "locked"), cell(demo, "gpt_from_blocks", "locked"),
        cell(stuck, "part1", "solution"), cell("f()", "test_1", "test"),
        cell("def g():\n    return 2 * y", "part2", "solution"), cell("assert g() == 2", "test_2", "test")])
    for sub in ("scratch", "control"):
        (tmp_path / sub).mkdir()
    ex = SandboxedExecute(sandbox=False, check=False, lab="lab04_gpt", timeout=3, interrupt_on_timeout=True,
                          scratch=str(tmp_path / "scratch"), control=str(tmp_path / "control"))
    nb, _ = ex.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert ex.report["restarted"] == ["test_1"], ex.report
    assert not [o for o in nb.cells[5].outputs if o.get("output_type") == "error"], nb.cells[5].outputs
    assert (tmp_path / "scratch" / "work" / "demo_runs").read_text() == "x", "the demonstration was replayed"
