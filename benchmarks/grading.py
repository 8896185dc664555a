"""Benchmark: the sandboxed grader's cost per submission, beyond the notebook's own run time, for every lab.

Run with ``python benchmarks/grading.py`` (options: ``--help``). For each lab, in a
throwaway course, it releases the lab (``nbgrader generate_assignment``), writes
``--copies`` submissions of the instructor's solution (markers removed), times
the solution itself (``--solution-runs`` runs, 3 by default, their median; a plain
Jupyter kernel, no jail, with the grader's thread count, the cells up to the last
test cell: what the grader runs), then times
``course_grading.autograde.autograde`` with ``--jobs`` parallel jailed kernels,
the integrity check and feedback included, and checks that every copy got full
marks, none was held and none needed the re-run of every cell (the false-hold
rate on the correct solution, and a check of ``integrity.DEMONSTRATIONS``).

The overhead per submission is ``total wall time x jobs / copies - solution time``;
the share of it taken by the integrity check (the second, plain-Python run of
the passed tests) is reported beside it. With few copies the run's fixed costs
(the preflight, starting the worker processes, importing nbgrader in each)
weigh on that figure; the median time a worker spent on one submission, minus
the solution time, is the cost of one more submission. On a shared machine wall
times follow the load, so the CPU time of every process involved is reported too (sampled from
``/proc``, jails included: :class:`CpuMeter`): ``CPU s per submission - solution CPU s``
is the grader's work per submission whatever else runs.

``--baseline DIR`` grades each lab a second time with the ``course_grading``
package found in ``DIR`` (for example ``git archive main course_grading | tar -x
-C DIR``), the two graders alternating, so that the table compares them under the
same load. Each (lab, grader) runs in a fresh process. Prints a markdown table
and keeps it in ``benchmarks/results/grading.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout
if os.environ.get("GRADING_BENCH_GRADER"):  # the baseline's package first (in the worker processes too)
    sys.path.insert(0, os.environ["GRADING_BENCH_GRADER"])

from common import save, table  # noqa: E402


def solved(release: dict, solution: dict) -> dict:
    """The release notebook with every solution cell filled in from the solution."""
    from course_grading.cells import cell_source, strip_markers

    answers = {c["metadata"]["nbgrader"]["grade_id"]: c for c in solution["cells"]
               if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    nb = copy.deepcopy(release)
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell["source"] = strip_markers(cell_source(answers[gid]))
    return nb


class CpuMeter(threading.Thread):
    """The CPU time (user + system) of every process descending from this one, jailed ones included,
    sampled from ``/proc``: a killed jail's processes are reaped by the kernel without adding their
    time to anyone's ``RUSAGE_CHILDREN``, so that cannot count them. Known processes are read every
    ``interval`` seconds and new ones looked for every ``5 * interval``: the last interval of a
    process's life, and processes shorter than ``5 * interval``, are missed."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval, self.tick = interval, os.sysconf("SC_CLK_TCK")
        self.seen: dict[tuple[int, str], float] = {}  # (pid, start time) -> CPU seconds
        self.known: set[int] = set()
        self.done = threading.Event()
        self.own = 0.0  # this thread's own CPU seconds (not the grader's)

    @staticmethod
    def _stat(pid: int) -> list[str] | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()  # fields from the state on: [1] ppid, [11] utime ...
        except (OSError, IndexError):
            return None

    def _discover(self) -> None:
        children: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit() and (fields := self._stat(int(name))):
                children.setdefault(int(fields[1]), []).append(int(name))
        todo, found = [os.getpid()], set()
        while todo:
            for pid in children.get(todo.pop(), []):
                if pid not in found:
                    found.add(pid)
                    todo.append(pid)
        self.known = found

    def _read(self) -> None:
        for pid in list(self.known):
            fields = self._stat(pid)
            if fields is None:
                self.known.discard(pid)
                continue
            key = (pid, fields[19])
            self.seen[key] = max(self.seen.get(key, 0.0), (int(fields[11]) + int(fields[12])) / self.tick)

    def run(self) -> None:
        n = 0
        while not self.done.is_set():
            if n % 5 == 0:
                self._discover()
            self._read()
            n += 1
            self.own = time.thread_time()
            self.done.wait(self.interval)

    def total(self) -> float:
        """CPU seconds seen so far."""
        self._read()
        return sum(self.seen.values())

    def stop(self) -> float:
        self.done.set()
        self.join()
        return self.total()


def solution_seconds(solution: dict, folder: Path, runs: int = 3) -> tuple[float, float]:
    """Wall and CPU time of the solution's cells up to its last test cell, in a plain kernel (what grading runs):
    the medians of ``runs`` runs (a single run moves by about a second from one to the next)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.reads(json.dumps(solution), as_version=4)
    tests = [i for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("nbgrader", {}).get("grade")
             and c.cell_type == "code"]
    nb.cells = nb.cells[: max(tests) + 1]
    walls, cpus = [], []
    for _ in range(runs):
        meter = CpuMeter()
        meter.start()
        start = time.perf_counter()
        NotebookClient(copy.deepcopy(nb), timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute()
        walls.append(time.perf_counter() - start)
        cpus.append(meter.stop())
    return statistics.median(walls), statistics.median(cpus)


def bench(root: Path, lab: str, copies: int, jobs: int, timeout: float, memory: int, solution_runs: int = 3) -> dict:
    """Grade ``copies`` solved copies of ``lab`` with the ``course_grading`` this process imports; one row."""
    from course_grading.autograde import autograde
    from course_grading.course import nbgrader_command, nbgrader_env

    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        course = Path(tmp) / "course"
        course.mkdir()
        shutil.copy(root / "nbgrader_config.py", course)
        shutil.copytree(root / "solutions" / lab, course / "solutions" / lab)
        subprocess.run(nbgrader_command() + ["generate_assignment", lab, "--force", "--log-level=WARN",
                                             f"--CourseDirectory.root={course}"], cwd=course, env=nbgrader_env(),
                       check=True)
        name = f"{lab}.ipynb"
        solution = json.loads((course / "solutions" / lab / name).read_text())
        nb = solved(json.loads((course / "labs" / lab / name).read_text()), solution)
        for i in range(copies):
            folder = course / "submitted" / f"student{i:03d}" / lab
            folder.mkdir(parents=True)
            (folder / name).write_text(json.dumps(nb))
        own, own_cpu = solution_seconds(solution, course / "solutions" / lab, solution_runs)
        load = os.getloadavg()[0]
        parent_cpu = time.process_time()  # the grader's parent is this process
        meter = CpuMeter()
        meter.start()
        start = time.perf_counter()
        outcomes = autograde(lab, root=course, jobs=jobs, timeout=timeout, memory_mb=memory, progress=False)
        seconds = time.perf_counter() - start
        cpu = meter.stop() + time.process_time() - parent_cpu - meter.own
    for o in outcomes:
        if o.status != "graded" or o.score != o.max_score or getattr(o, "check_every_cell", False):
            print(o.summary(), file=sys.stderr)
    return dict(lab=lab, copies=copies, jobs=jobs, load=load, total=seconds, solution=own, solution_cpu=own_cpu,
                cpu=cpu, worker=statistics.median(o.seconds for o in outcomes),
                check=statistics.median(o.check_seconds for o in outcomes),
                full=sum(o.status == "graded" and o.score == o.max_score for o in outcomes),
                held=sum(o.status == "held" for o in outcomes),
                every_cell=sum(bool(getattr(o, "check_every_cell", False)) for o in outcomes))


def one(args: argparse.Namespace) -> None:
    """Internal: one lab with one grader, as a JSON line on stdout (the last line)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # the solution's kernel gets the
        os.environ[var] = str(max(1, (os.cpu_count() or 1) // args.jobs))  # thread count the grader gives a kernel
    import course_grading

    from course_grading.course import find_root

    row = bench(find_root(HERE), args.one, args.copies, args.jobs, args.timeout, args.memory, args.solution_runs)
    row["grader"] = str(Path(course_grading.__file__).parent)
    print(json.dumps(row), flush=True)


def run(lab: str, grader: str | None, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", lab, "--copies", str(args.copies),
           "--jobs", str(args.jobs), "--timeout", str(args.timeout), "--memory", str(args.memory),
           "--solution-runs", str(args.solution_runs)]
    env = {k: v for k, v in os.environ.items() if k != "GRADING_BENCH_GRADER"}
    if grader:
        env["GRADING_BENCH_GRADER"] = grader
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{lab} ({grader or 'this checkout'}) failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labs", nargs="*", help="labs to grade (default: every lab)")
    ap.add_argument("--lab", help="one lab (same as --labs LAB)")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--memory", type=int, default=4096, help="MiB per kernel")
    ap.add_argument("--solution-runs", type=int, default=3, help="runs of the solution alone per row (median)")
    ap.add_argument("--baseline", help="a folder holding another course_grading package, graded beside this one")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args)
    from course_grading.course import find_root, list_labs

    root = find_root(HERE)
    labs = [args.lab] if args.lab else args.labs or list_labs(root)
    graders = [("this checkout", None)] + ([("baseline", str(Path(args.baseline).resolve()))] if args.baseline else [])
    loads, rows, bad = [os.getloadavg()[0]], [], []
    for k, lab in enumerate(labs):
        for label, grader in graders if k % 2 == 0 else graders[::-1]:  # alternate which grader goes first
            r = run(lab, grader, args)
            loads.append(r["load"])
            per = r["total"] * r["jobs"] / r["copies"]
            cpu_per = r["cpu"] / r["copies"]
            rows.append([lab, label, r["copies"], r["jobs"], round(r["load"], 1), r["total"], per, r["solution"],
                         per - r["solution"], r["worker"] - r["solution"], r["check"], cpu_per, r["solution_cpu"],
                         cpu_per - r["solution_cpu"], f"{r['full']}/{r['copies']}", f"{r['held']}/{r['copies']}",
                         f"{r['every_cell']}/{r['copies']}"])
            print(rows[-1], flush=True)
            if r["full"] != r["copies"] or r["held"] or (grader is None and r["every_cell"]):
                bad.append(f"{lab} ({label})")
    body = table(["lab", "grader", "copies", "jobs", "load average", "total s",
                  "s per submission (total x jobs / copies)", "solution s", "overhead s",
                  "overhead in the worker s (median)", "of which the integrity check s", "CPU s per submission",
                  "solution CPU s", "CPU overhead s", "full marks", "held", "re-run of every cell"], rows)
    body += (f"\n\nSandboxed (unshare jail per kernel), integrity check and feedback included; solution time: the "
             f"solved notebook up to its last test cell in a plain kernel with the grader's thread count, the "
             f"median of {args.solution_runs} runs per row; CPU: user + system time of every process involved; "
             f"load average: the 1-minute figure when each row started (from {min(loads):.1f} to "
             f"{max(loads):.1f}); {os.cpu_count()} CPU cores." +
             (" Baseline: the course_grading package of " + args.baseline + ", graded in the same run, "
              "alternating with this checkout." if args.baseline else ""))
    save("grading", f"Grading cost per submission ({args.copies} copies of each lab's solution)", body)
    if bad:
        raise SystemExit(f"not every copy got full marks without a hold (or needed every cell re-run): {bad}")


if __name__ == "__main__":
    main()
