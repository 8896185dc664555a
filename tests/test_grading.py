"""Grading that students cannot cheat or break.

* The jail (course_grading.sandbox): no network but its own loopback (a Gloo
  process group forms inside; the host's 127.0.0.1 stays out of reach), none of the
  host's files, no privileges, a memory limit, and killing it kills every
  process inside. Checked by observing the operating system, not the code.
* Repair (course_grading.repair) and flags (course_grading.flags) on small hand-made notebooks.
* The battery of tests/hostile.py, graded with the real command
  (`course-grade`) on two labs in a throwaway
  course: every case scores what its honest part deserves, nobody else's grade
  and nothing of the assignment changes in the gradebook, the report names what
  happened, no connection reaches the loopback listener, no process survives.
* The command line: `course-grade` refuses without a sandbox; the old
  `python -m course_utils.grading` only points at the new commands.
(The leak check, `course-check-release`, is tests/test_leaks.py.)
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest

import hostile
from course_grading import cli, sandbox
from course_grading.autograde import SandboxUnavailable, autograde
from course_grading.course import find_root, list_labs, nbgrader_command, nbgrader_env
from course_grading.flags import suspicious
from course_grading.integrity import DEMONSTRATIONS
from course_grading.labs import graded_parts
from course_grading.repair import SubmissionError, load_submission, repair

ROOT = find_root(Path(__file__).parent)
BATTERY_LABS = [lab for lab in ("lab02_attention", "lab03_tokenization") if lab in list_labs(ROOT)] or list_labs(ROOT)[:2]
# CI settings: short limits so that the loops and the memory bomb trip fast.
JOBS, TIMEOUT, CELL_TIMEOUT, MEMORY_MB = 2, 150, 45, 1500
REQUIRED_CASES = {"correct", "untouched", "partial", "tests_edited", "points_raised", "tests_deleted", "colab_copy",
                  "duplicated_split", "infinite_loop", "memory_bomb", "os_exit", "stderr", "monkeypatch",
                  "gradebook", "network", "other_student", "invalid_json", "input_transformer",
                  "transformer_singleton", "ast_transformer", "event_hook", "delegated", "honest_variant"}


# --------------------------------------------------------------------------- helpers

class Listener:
    """Loopback TCP servers (127.0.0.1 and, where available, [::1]) on one port
    that hand out the answers to whoever connects, and remember who did."""

    def __init__(self, payload: bytes = b""):
        self.hits: list[tuple] = []
        self.payload = payload
        self.socks = []
        first = socket.socket(socket.AF_INET)
        first.bind(("127.0.0.1", 0))
        self.port = first.getsockname()[1]
        self.socks.append(first)
        try:
            six = socket.socket(socket.AF_INET6)
            six.bind(("::1", self.port))
            self.socks.append(six)
        except OSError:
            pass
        for s in self.socks:
            s.listen()
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s: socket.socket) -> None:
        while True:
            try:
                conn, addr = s.accept()
            except OSError:
                return
            self.hits.append(addr)
            try:
                conn.sendall(self.payload)
            finally:
                conn.close()

    def close(self) -> None:
        for s in self.socks:
            s.close()


def jailed(tmp_path: Path, code: str, **spec) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a jail whose scratch folder is tmp_path/scratch."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        os.chown(scratch, 62990, 62990)
    js = sandbox.JailSpec(scratch=str(scratch), readonly=sandbox.python_paths(), uid=62990,
                          status_file=str(tmp_path / "status"), env={"PATH": "/usr/bin:/bin"}, **spec)
    return subprocess.run(sandbox.jail_command([sys.executable, "-c", code], js), capture_output=True, text=True,
                          timeout=120)


def processes_with(word: str) -> list[int]:
    """Process ids whose command line contains ``word`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if word in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def table_rows(db: Path, sql: str, args=()) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return sorted(con.execute(sql, args).fetchall(), key=repr)


def snapshot(db: Path, student: str) -> dict[str, list[tuple]]:
    """The assignment's definition and everything the gradebook holds about ``student``."""
    snap = {t: table_rows(db, f"SELECT * FROM {t}") for t in
            ("course", "assignment", "notebook", "base_cell", "grade_cells", "solution_cells", "task_cells",
             "source_cell")}
    snap["student"] = table_rows(db, "SELECT * FROM student WHERE id = ?", (student,))
    snap["submitted_assignment"] = table_rows(db, "SELECT * FROM submitted_assignment WHERE student_id = ?", (student,))
    mine = "SELECT submitted_notebook.id FROM submitted_notebook JOIN submitted_assignment ON " \
           "submitted_notebook.assignment_id = submitted_assignment.id WHERE student_id = ?"
    snap["submitted_notebook"] = table_rows(db, f"SELECT * FROM submitted_notebook WHERE id IN ({mine})", (student,))
    for t in ("grade", "comment"):
        snap[t] = table_rows(db, f"SELECT * FROM {t} WHERE notebook_id IN ({mine})", (student,))
    return snap


def make_course(tmp: Path, lab: str) -> Path:
    """A throwaway course with one lab released (gradebook.db, labs/)."""
    course = tmp / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / lab, course / "solutions" / lab)
    done = subprocess.run(nbgrader_command() + ["generate_assignment", lab, "--force",
                                                f"--CourseDirectory.root={course}"],
                          cwd=course, env=nbgrader_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return course


# --------------------------------------------------------------------------- the jail

def test_sandbox_is_available_on_linux():
    ok, why = sandbox.available()
    assert ok, f"the grading sandbox must work on the CI machine: {why}"


def test_jail_blocks_network_host_files_and_privileges(tmp_path):
    listener = Listener()
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("gradebook")
    mounts = Path("/proc/self/mountinfo").read_text()
    code = f"""
import json, os, socket, sys
out = {{}}
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    s = socket.socket(fam); s.settimeout(3)
    try:
        s.connect((host, {listener.port})); out[host] = "connected"
    except OSError as e:
        out[host] = type(e).__name__
for name, path in (("secret", {str(secret)!r}), ("root_home", "/root/.bashrc"), ("shadow", "/etc/shadow")):
    try:
        open(path).read(); out[name] = "read"
    except OSError as e:
        out[name] = type(e).__name__
try:
    open(os.path.join(sys.prefix, "planted"), "w"); out["write_prefix"] = "written"
except OSError as e:
    out["write_prefix"] = type(e).__name__
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
out["euid"] = os.geteuid()
out["cap_eff"] = int(status["CapEff"].strip(), 16)
out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
try:
    os.setuid(0); out["setuid"] = "became root"
except OSError as e:
    out["setuid"] = type(e).__name__
print(json.dumps(out))
"""
    done = jailed(tmp_path, code, memory_mb=1024)
    listener.close()
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["127.0.0.1"] != "connected" and out["::1"] != "connected", out
    assert listener.hits == []
    assert out["secret"] == "FileNotFoundError" and out["root_home"] == "FileNotFoundError", out
    assert out["shadow"] in ("FileNotFoundError", "PermissionError")
    assert out["write_prefix"] in ("OSError", "PermissionError"), out  # read-only file system is an OSError
    assert out["cap_eff"] == 0 and out["setuid"] == "PermissionError", out
    if os.geteuid() == 0:
        assert out["euid"] != 0
    assert len(out["pids"]) <= 3, f"the jail sees processes of the host: {out['pids']}"
    assert not (Path(sys.prefix) / "planted").exists()
    assert Path("/proc/self/mountinfo").read_text() == mounts, "the jail changed the host's mounts"


def test_jail_has_its_own_loopback_and_no_way_out(tmp_path):
    """Inside the jail `lo` is up, so a process reaches a server it opened on 127.0.0.1 (a lab's
    Gloo process group needs that); the same port on the host's 127.0.0.1 and [::1] stays out of
    reach; `lo` is the only interface and the only routes are its own (IPv6's catch-all routes
    of a fresh namespace reject)."""
    listener = Listener()
    code = f"""
import json, socket
out = {{}}
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):  # the host's port, before any of ours
    s = socket.socket(fam); s.settimeout(3)
    try:
        s.connect((host, {listener.port})); out["host " + host] = "connected"
    except OSError as e:
        out["host " + host] = type(e).__name__
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
client = socket.create_connection(server.getsockname(), timeout=3)
conn, _ = server.accept()
client.sendall(b"ping")
out["inside"] = conn.recv(4).decode()
out["interfaces"] = sorted(name for _, name in socket.if_nameindex())
out["dev"] = sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:])
out["route4"] = [line.split() for line in open("/proc/net/route").read().splitlines()[1:]]
out["route6"] = [line.split() for line in open("/proc/net/ipv6_route").read().splitlines()]
print(json.dumps(out))
"""
    done = jailed(tmp_path, code, memory_mb=1024)
    listener.close()
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["inside"] == "ping", out
    assert out["host 127.0.0.1"] != "connected" and out["host ::1"] != "connected", out
    assert listener.hits == [], f"the jail reached the host's loopback: {listener.hits}"
    assert out["interfaces"] == ["lo"] and out["dev"] == ["lo"], f"the jail has other interfaces: {out}"
    # /proc/net/route: Iface Destination Gateway Flags ...; /proc/net/ipv6_route: dst plen src plen
    # next_hop metric refcnt use flags device
    assert all(r[0] == "lo" and r[1] != "00000000" for r in out["route4"]), f"an IPv4 route out: {out['route4']}"
    RTF_REJECT = 0x0200
    for r in out["route6"]:
        assert r[9] == "lo", f"an IPv6 route through another device: {r}"
        assert r[1] != "00" or int(r[8], 16) & RTF_REJECT, f"an IPv6 default route that does not reject: {r}"


def test_a_gloo_process_group_runs_inside_the_jail(tmp_path):
    """What lab 9's tests do when graded: forked ranks all-reduce over the jail's loopback, and
    write nothing to stderr (a warning there would score the test cell 0: Gloo's store names each
    client, which must not wait on a DNS the jail cannot reach)."""
    code = """
import torch, torch.distributed as dist
from course_utils.distributed import run_on_ranks

def ranks_sum(rank, world_size):
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    return float(t)

print(run_on_ranks(ranks_sum, 2, timeout=60))
"""
    done = jailed(tmp_path, code, memory_mb=4096)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[3.0, 3.0]", done.stdout + done.stderr[-2000:]
    assert done.stderr == "", f"a process group in the jail wrote to stderr: {done.stderr[-2000:]}"


def test_jail_memory_limit(tmp_path):
    code = """
small = b"x" * (50 * 2**20)
try:
    big = b"x" * (700 * 2**20)
    print("allocated")
except MemoryError:
    print("MemoryError")
"""
    done = jailed(tmp_path, code, memory_mb=400)
    assert done.stdout.strip() == "MemoryError", done.stdout + done.stderr


def test_killing_the_jail_kills_every_process_in_it(tmp_path):
    marker = f"jail-child-{uuid.uuid4().hex}"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if os.geteuid() == 0:
        os.chown(scratch, 62991, 62991)
    code = (f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', "
            f"{marker!r}], start_new_session=True)\nprint('ready', flush=True)\ntime.sleep(300)\n")
    js = sandbox.JailSpec(scratch=str(scratch), readonly=sandbox.python_paths(), uid=62991,
                          status_file=str(tmp_path / "status"), env={"PATH": "/usr/bin:/bin"})
    proc = subprocess.Popen(sandbox.jail_command([sys.executable, "-c", code], js), stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    assert processes_with(marker), "the detached child should be running"
    os.killpg(proc.pid, 9)  # what the grader does on timeout
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == [], "a process of the jail survived"


def test_a_killed_grader_leaves_no_student_process(tmp_path):
    """``kill -9`` of course-grade while it grades (an instructor's closed terminal) takes its
    workers, the kernel, the jail and what the student started in it along."""
    lab = "lab02_attention"
    course = make_course(tmp_path, lab)
    marker = f"outlives-the-grader-{uuid.uuid4().hex}"
    lab_ = hostile.Lab(json.loads((ROOT / "labs" / lab / f"{lab}.ipynb").read_text()),
                       json.loads((ROOT / "solutions" / lab / f"{lab}.ipynb").read_text()))
    nb = lab_.after_imports(lab_.solved(lab_.all()), (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}], start_new_session=True)\n"
        "time.sleep(600)\n"))
    folder = course / "submitted" / "slow" / lab
    folder.mkdir(parents=True)
    (folder / f"{lab}.ipynb").write_text(json.dumps(nb))
    course_grade = Path(sys.executable).with_name("course-grade")
    grader = subprocess.Popen([str(course_grade), lab, "--jobs", "1", "--timeout", "900", "--cell-timeout", "800"],
                              cwd=course, env=nbgrader_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not processes_with(marker) and time.monotonic() < deadline and grader.poll() is None:
            time.sleep(0.2)
        assert processes_with(marker), "the submission's detached child should be running"
        grader.kill()  # the grader's own process only: its workers and jails must follow
        grader.wait(timeout=30)
        deadline = time.monotonic() + 20
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_with(marker) == [], "a process of the student's outlived the grader"
    finally:
        if grader.poll() is None:
            grader.kill()
        for pid in processes_with(marker):
            os.kill(pid, 9)


# --------------------------------------------------------------------------- repair

def _cell(kind: str, source: str, gid: str | None = None, points: float | None = None, cell_type: str = "code"):
    meta = {"solution": kind == "solution", "grade": kind == "test", "locked": kind != "solution",
            "task": False, "schema_version": 3}
    if gid:
        meta["grade_id"] = gid
    if points is not None:
        meta["points"] = points
    cell = {"cell_type": cell_type, "metadata": {"nbgrader": meta} if gid else {}, "source": source}
    if cell_type == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


STUB = '    """Return x doubled."""\n    # YOUR CODE HERE\n    raise NotImplementedError()'
RELEASE = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3"}}, "cells": [
    _cell("locked", "# Lab\nDouble and triple numbers.", "intro", cell_type="markdown"),
    _cell("locked", "import math", "setup"),
    _cell("solution", "def double(x):\n" + STUB, "double"),
    _cell("test", "assert double(2) == 4", "test_double", 2),
    _cell("solution", "def triple(x):\n" + STUB.replace("doubled", "tripled"), "triple"),
    _cell("test", "assert triple(2) == 6", "test_triple", 3),
]}


def ids(nb: dict) -> list:
    return [c["metadata"].get("nbgrader", {}).get("grade_id") for c in nb["cells"]]


def test_repair_leaves_an_intact_submission_alone():
    sub = json.loads(json.dumps(RELEASE))
    sub["cells"][2]["source"] = "def double(x):\n    return 2 * x"
    fixed, notes = repair(sub, RELEASE)
    assert notes == []
    assert ids(fixed) == ["intro", "setup", "double", "test_double", "triple", "test_triple"]
    assert fixed["cells"][2]["source"] == "def double(x):\n    return 2 * x"


def test_repair_lost_metadata_reordered_and_extra_cells():
    """A Colab copy: no nbgrader metadata, test cells above solutions, a helper cell added."""
    cells = [
        {"cell_type": "code", "metadata": {}, "source": "import math"},
        {"cell_type": "code", "metadata": {}, "source": "assert triple(2) == 6"},
        {"cell_type": "code", "metadata": {}, "source": "def helper(x):\n    return x + x + x"},
        {"cell_type": "code", "metadata": {}, "source": "def triple(x):\n    return helper(x)"},
        {"cell_type": "code", "metadata": {}, "source": "def double(x):\n    return x * 2"},
        {"cell_type": "code", "metadata": {}, "source": "assert double(2) == 4"},
    ]
    fixed, notes = repair({"cells": cells, "metadata": {}}, RELEASE)
    assert ids(fixed) == ["intro", "setup", "double", "test_double", None, "triple", "test_triple"]
    sources = [c["source"] for c in fixed["cells"]]
    assert sources[2] == "def double(x):\n    return x * 2"
    assert sources[4] == "def helper(x):\n    return x + x + x"  # the helper stays just before its user
    assert sources[5] == "def triple(x):\n    return helper(x)"
    assert fixed["cells"][6]["metadata"]["nbgrader"]["points"] == 3
    text = " ".join(notes)
    assert "metadata missing on 5 cells" in text and "reordered" in text


def test_repair_duplicates_deleted_tests_and_raised_points():
    dup_stub = json.loads(json.dumps(RELEASE["cells"][2]))
    solved = json.loads(json.dumps(RELEASE["cells"][2]))
    solved["source"] = "def double(x):\n    return x * 2"
    test_triple = json.loads(json.dumps(RELEASE["cells"][5]))
    test_triple["source"] = "pass"
    test_triple["metadata"]["nbgrader"]["points"] = 100
    cells = [RELEASE["cells"][1], dup_stub, solved, RELEASE["cells"][4], test_triple]  # test_double deleted
    fixed, notes = repair({"cells": cells, "metadata": {}}, RELEASE)
    assert ids(fixed) == ["intro", "setup", "double", None, "test_double", "triple", "test_triple"]
    assert fixed["cells"][2]["source"] == dup_stub["source"]  # the first copy keeps the id...
    assert fixed["cells"][3]["source"] == solved["source"]  # ...the second still runs, after it
    assert fixed["cells"][4]["source"] == "assert double(2) == 4"
    assert fixed["cells"][6]["source"] == "assert triple(2) == 6"
    assert fixed["cells"][6]["metadata"]["nbgrader"]["points"] == 3
    text = " ".join(notes)
    for words in ("2 cells carry the id 'double'", "'test_double' was missing", "'test_triple' was edited",
                  "points of 'test_triple' changed to 100"):
        assert words in text, notes


def test_load_submission_rejects_what_is_not_a_notebook(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text('{"cells": [')
    with pytest.raises(SubmissionError, match="invalid JSON"):
        load_submission(bad)
    bad.write_text('{"hello": 1}')
    with pytest.raises(SubmissionError, match="no list of cells"):
        load_submission(bad)


def test_suspicious_names_the_attacks_and_spares_honest_code():
    honest = json.loads(json.dumps(RELEASE))
    honest["cells"][2]["source"] = "def double(x):\n    return torch.tensor(x) * 2"
    assert suspicious(honest) == []
    nb = json.loads(json.dumps(RELEASE))
    nb["cells"].insert(2, {"cell_type": "code", "metadata": {}, "source":
                           "import socket, sqlite3\nnumpy.allclose = lambda *a: True\nopen('/etc/passwd')\n"
                           "get_ipython().showtraceback = None"})
    assert set(suspicious(nb)) == {"network access", "the gradebook", "comparison patching",
                                   "files outside the submission", "kernel or output tampering"}


# --------------------------------------------------------------------------- the battery

@pytest.fixture(scope="module", params=BATTERY_LABS)
def battery(request, tmp_path_factory):
    """Grade the hostile battery of one lab with the command line, once per lab."""
    lab = request.param
    course = make_course(tmp_path_factory.mktemp(lab), lab)
    solution = json.loads((course / "solutions" / lab / f"{lab}.ipynb").read_text())
    answers = "\n\n".join(hostile._answer(c) for c in solution["cells"]
                          if c.get("metadata", {}).get("nbgrader", {}).get("solution"))
    listener = Listener(answers.encode())  # an "answer server" on loopback
    marker = f"hostile-leftover-{uuid.uuid4().hex}"
    cases = hostile.battery(lab, course, port=listener.port, marker=marker, submitted=course / "submitted")
    hostile.write(cases, course / "submitted", lab)

    from nbgrader.api import Gradebook  # a student graded (by hand, too) before this batch

    db = course / "gradebook.db"
    with warnings.catch_warnings(), Gradebook(f"sqlite:///{db}") as gb:
        warnings.simplefilter("ignore")  # nbgrader's SQLAlchemy noise
        gb.add_student("bystander", first_name="Ada")
        gb.add_submission(lab, "bystander")
        for i, grade in enumerate(gb.find_submission(lab, "bystander").notebooks[0].grades):
            grade.auto_score = grade.max_score
            grade.manual_score = 1.5 if i == 0 else None
            grade.needs_manual_grade = False
        gb.db.commit()
    before = snapshot(db, "bystander")
    started = time.monotonic()
    course_grade = Path(sys.executable).with_name("course-grade")  # the console script of pyproject.toml
    done = subprocess.run([str(course_grade), lab, "--jobs", str(JOBS),
                           "--timeout", str(TIMEOUT), "--cell-timeout", str(CELL_TIMEOUT), "--memory", str(MEMORY_MB)],
                          cwd=course, env=nbgrader_env(), capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    time.sleep(1)
    leftovers = processes_with(marker)
    listener.close()
    with warnings.catch_warnings(), Gradebook(f"sqlite:///{db}") as gb:
        warnings.simplefilter("ignore")
        scores = {s.student.id: s.score for s in gb.assignment_submissions(lab)}
        maxima = {g.name: g.max_score for g in gb.find_notebook(lab, lab).grade_cells}
    report = json.loads((course / "grades" / f"{lab}.json").read_text())
    print(f"\n{lab}: graded {len(cases)} hostile submissions in {seconds:.0f} s")
    return dict(lab=lab, course=course, db=db, cases=cases, done=done, before=before, after=snapshot(db, "bystander"),
                scores=scores, maxima=maxima, outcomes={o["student"]: o for o in report["outcomes"]},
                listener=listener, leftovers=leftovers, solution=solution)


def test_battery_covers_every_attack(battery):
    names = {c.student for c in battery["cases"]}
    assert len(names) >= 15 and REQUIRED_CASES <= names, REQUIRED_CASES - names


def test_command_ran_sandboxed_and_reported_every_submission(battery):
    done = battery["done"]
    assert done.returncode == 1, done.stdout + done.stderr  # one submission (invalid JSON) is not graded
    assert "sandbox: unshare" in done.stdout and "UNSANDBOXED" not in done.stdout + done.stderr
    for case in battery["cases"]:
        assert f"\n{case.student}: " in "\n" + done.stdout, case.student


def test_each_submission_scores_what_its_honest_part_deserves(battery):
    parts = graded_parts(battery["solution"])
    total = sum(p.points for p in parts)
    wrong = {}
    for case in battery["cases"]:
        got = battery["scores"].get(case.student)
        status = battery["outcomes"][case.student]["status"]
        if case.expected is None:
            if got is not None or status != "not graded":
                wrong[case.student] = ("not graded", got)
        elif case.held:  # tampered: held for review, nothing in the gradebook
            if got is not None or status != "held":
                wrong[case.student] = ("held", got, battery["outcomes"][case.student])
        elif got is None or abs(got - case.expected) > 1e-9 or status != "graded":
            wrong[case.student] = (case.expected, got, battery["outcomes"][case.student])
    assert not wrong, f"expected vs got (total {total}): {wrong}"


def test_only_tampering_is_held(battery):
    """The IPython attacks (plain, through the shell's singleton with names built at run time, an AST
    transformer, an event hook that installs the transformer later) are held with evidence; nothing honest is held, the honest variant
    included (the false-hold check)."""
    held = {s for s, o in battery["outcomes"].items() if o["status"] == "held"}
    assert held == {c.student for c in battery["cases"] if c.held}
    for student in held:
        assert any("passed in the notebook's kernel" in e for e in battery["outcomes"][student]["evidence"])
    honest = battery["outcomes"]["honest_variant"]
    assert honest["status"] == "graded" and not honest["evidence"] and not honest["problems"], honest
    if DEMONSTRATIONS.get(battery["lab"]):  # the re-run skipped them: a hold is confirmed with every cell first
        assert any(battery["outcomes"][s]["check_every_cell"] for s in held), held
        assert not honest["check_every_cell"], honest


def test_report_names_what_happened(battery):
    missing = {}
    for case in battery["cases"]:
        o = battery["outcomes"][case.student]
        text = " ".join([o["reason"], *o["problems"], *o["repairs"], *o["flags"], *o["evidence"]]).lower()
        absent = [w for w in case.report if w not in text]
        if absent:
            missing[case.student] = (absent, text)
    assert not missing, missing


def test_nobody_elses_grades_and_nothing_of_the_assignment_changed(battery):
    before, after = battery["before"], battery["after"]
    assert before["grade"] and before == after


def test_no_grade_is_forged(battery):
    students = {c.student for c in battery["cases"] if c.expected is not None and not c.held} | {"bystander"}
    assert set(battery["scores"]) == students
    rows = table_rows(battery["db"], "SELECT grade.auto_score, grade.manual_score, grade_cells.max_score, "
                      "submitted_assignment.student_id FROM grade JOIN grade_cells ON grade.cell_id = grade_cells.id "
                      "JOIN submitted_notebook ON grade.notebook_id = submitted_notebook.id JOIN "
                      "submitted_assignment ON submitted_notebook.assignment_id = submitted_assignment.id")
    for auto, manual, top, student in rows:
        assert auto is None or 0 <= auto <= top, (student, auto, top)
        assert manual is None or student == "bystander", (student, manual)
    points = {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"]["points"]
              for c in battery["solution"]["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade")}
    assert battery["maxima"] == points


def test_network_never_reached_the_loopback_listener(battery):
    assert battery["listener"].hits == []


def test_no_student_process_survives_grading(battery):
    assert battery["leftovers"] == []


def test_feedback_and_csv(battery):
    course, lab = battery["course"], battery["lab"]
    assert (course / "feedback" / "correct" / lab / f"{lab}.html").is_file()
    assert not (course / "feedback" / "invalid_json").exists()
    with open(course / "grades" / f"{lab}.csv") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    for case in battery["cases"]:
        row = rows[case.student]
        if case.expected is None:
            assert row["status"] == "not graded" and row["score"] == "" and row["reason"]
        elif case.held:  # no score exported, and no cell score either
            assert row["status"] == "held" and row["score"] == "", row
            assert all(row[c] == "" for c in battery["maxima"] if c in row), row
        else:
            assert float(row["score"]) == battery["scores"][case.student]


def test_review_accepts_or_rejects_a_held_submission(battery):
    """One command decides: --reject records 0 on every test cell, --accept writes the kept grades."""
    course, lab = battery["course"], battery["lab"]
    review = Path(sys.executable).with_name("course-review")
    listed = subprocess.run([str(review), lab], cwd=course, env=nbgrader_env(), capture_output=True, text=True)
    assert listed.returncode == 0 and "input_transformer: would score" in listed.stdout, listed.stdout + listed.stderr
    kept = json.loads((course / "grades" / "held" / lab / "transformer_singleton" / "held.json").read_text())
    for student, flag in (("input_transformer", "--reject"), ("transformer_singleton", "--accept")):
        done = subprocess.run([str(review), lab, student, flag], cwd=course, env=nbgrader_env(),
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert not (course / "grades" / "held" / lab / student).exists()
    with warnings.catch_warnings():
        from nbgrader.api import Gradebook

        warnings.simplefilter("ignore")
        with Gradebook(f"sqlite:///{battery['db']}") as gb:
            scores = {s.student.id: s.score for s in gb.assignment_submissions(lab)}
    assert scores["input_transformer"] == 0
    assert scores["transformer_singleton"] == kept["record"]["score"] > 0
    with open(course / "grades" / f"{lab}.csv") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert rows["input_transformer"]["status"] == "graded" and float(rows["input_transformer"]["score"]) == 0
    assert float(rows["transformer_singleton"]["score"]) == kept["record"]["score"]
    again = subprocess.run([str(review), lab, "input_transformer", "--accept"], cwd=course, env=nbgrader_env(),
                           capture_output=True, text=True)
    assert again.returncode == 2 and "no held submission" in again.stderr


# --------------------------------------------------------------------------- refusing, unsandboxed

def test_autograde_refuses_without_a_sandbox(monkeypatch, tmp_path, capsys):
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\n")
    monkeypatch.setattr(sandbox, "available", lambda: (False, "no namespaces in this test"))
    with pytest.raises(SandboxUnavailable, match="--unsandboxed"):
        autograde("lab99_none", root=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.grade(["lab99_none"]) == 2
    out = capsys.readouterr()
    assert "UNAVAILABLE" in out.out and "refusing to grade" in out.err
    assert cli.main(["autograde", "lab99_none"]) == 2  # the old sub-command's name still works here


def test_the_old_command_only_points_at_the_new_one():
    done = subprocess.run([sys.executable, "-m", "course_utils.grading", "autograde", "lab02_attention", "--jobs", "2"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "`course-grade lab02_attention --jobs 2`" in done.stderr, done.stderr
    imported = subprocess.run([sys.executable, "-c", "import course_utils.grading"], capture_output=True, text=True)
    assert imported.returncode != 0 and "course_grading" in imported.stderr


def test_unsandboxed_grading_says_so_and_still_grades(monkeypatch, tmp_path, capsys):
    lab = BATTERY_LABS[-1]
    course = make_course(tmp_path, lab)
    correct = next(c for c in hostile.battery(lab, course) if c.student == "correct")
    hostile.write([correct], course / "submitted", lab)
    monkeypatch.setattr(sandbox, "available", lambda: (False, "pretending there are no namespaces"))
    outcomes = autograde(lab, root=course, jobs=1, timeout=TIMEOUT, memory_mb=MEMORY_MB, progress=False,
                         sandbox_required=False)
    assert "UNSANDBOXED" in capsys.readouterr().err
    assert [(o.student, o.score) for o in outcomes] == [("correct", correct.expected)]
    assert json.loads((course / "grades" / f"{lab}.json").read_text())["sandboxed"] is False
