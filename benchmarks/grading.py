"""Benchmark: the sandboxed grader's cost per submission, beyond the notebook's own run time, for every lab.

Run with ``python benchmarks/grading.py`` (options: ``--help``). For each lab, in a
throwaway course, it releases the lab (``nbgrader generate_assignment``), writes
``--copies`` submissions of the instructor's solution (markers removed), times
the solution itself (a plain Jupyter kernel, no jail, the cells up to the last
test cell: what the grader runs), then times
``course_grading.autograde.autograde`` with ``--jobs`` parallel jailed kernels,
the integrity check and feedback included, and checks that every copy got full
marks and none was held (the false-hold rate on the correct solution). The
overhead per submission is ``total wall time x jobs / copies - solution time``;
the share of it taken by the integrity check (the second, plain-Python run of
the passed tests) is reported beside it. With few copies the run's fixed costs
(the preflight, starting the worker processes, importing nbgrader in each)
weigh on that figure; the median time a worker spent on one submission, minus
the solution time, is the cost of one more submission. Prints a markdown table and keeps it
in ``benchmarks/results/grading.md``. On a shared machine expect it to vary.
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from common import save, table  # noqa: E402
from course_grading.autograde import autograde  # noqa: E402
from course_grading.cells import cell_source, strip_markers  # noqa: E402
from course_grading.course import find_root, list_labs, nbgrader_command, nbgrader_env  # noqa: E402


def solved(release: dict, solution: dict) -> dict:
    """The release notebook with every solution cell filled in from the solution."""
    answers = {c["metadata"]["nbgrader"]["grade_id"]: c for c in solution["cells"]
               if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    nb = copy.deepcopy(release)
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell["source"] = strip_markers(cell_source(answers[gid]))
    return nb


def solution_seconds(solution: dict, folder: Path) -> float:
    """Wall time of the solution's cells up to its last test cell, in a plain kernel (what grading runs)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.reads(json.dumps(solution), as_version=4)
    tests = [i for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("nbgrader", {}).get("grade")
             and c.cell_type == "code"]
    nb.cells = nb.cells[: max(tests) + 1]
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return time.perf_counter() - start


def bench(root: Path, lab: str, copies: int, jobs: int, timeout: float, memory: int) -> list[object]:
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
        own = solution_seconds(solution, course / "solutions" / lab)
        start = time.perf_counter()
        outcomes = autograde(lab, root=course, jobs=jobs, timeout=timeout, memory_mb=memory, progress=False)
        seconds = time.perf_counter() - start
    full = sum(o.status == "graded" and o.score == o.max_score for o in outcomes)
    held = sum(o.status == "held" for o in outcomes)
    per = seconds * jobs / copies
    check = statistics.median(o.check_seconds for o in outcomes)
    worker = statistics.median(o.seconds for o in outcomes)
    for o in outcomes:
        if o.status != "graded" or o.score != o.max_score:
            print(o.summary(), file=sys.stderr)
    return [lab, copies, jobs, seconds, per, own, per - own, worker - own, check, worker - own - check,
            f"{full}/{copies}", f"{held}/{copies}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labs", nargs="*", help="labs to grade (default: every lab)")
    ap.add_argument("--lab", help="one lab (same as --labs LAB)")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--memory", type=int, default=4096, help="MiB per kernel")
    args = ap.parse_args()
    root = find_root(Path(__file__).parent)
    labs = [args.lab] if args.lab else args.labs or list_labs(root)
    load = os.getloadavg()[0]
    rows = []
    for lab in labs:
        rows.append(bench(root, lab, args.copies, args.jobs, args.timeout, args.memory))
        print(rows[-1], flush=True)
    body = table(["lab", "copies", "jobs", "total s", "s per submission (total x jobs / copies)",
                  "solution s", "overhead s", "overhead in the worker s (median)", "of which the integrity check s",
                  "worker overhead without the check s", "full marks", "held"], rows)
    body += (f"\n\nSandboxed (unshare jail per kernel), integrity check and feedback included; solution time: the "
             f"solved notebook up to its last test cell in a plain kernel; {os.cpu_count()} CPU cores, load "
             f"average {load:.1f} when it started.")
    save("grading", f"Grading cost per submission ({args.copies} copies of each lab's solution)", body)
    bad = [r[0] for r in rows if r[-2] != f"{args.copies}/{args.copies}" or not r[-1].startswith("0/")]
    if bad:
        raise SystemExit(f"not every copy got full marks without a hold: {bad}")


if __name__ == "__main__":
    main()
