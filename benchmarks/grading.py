"""Benchmark: grade many copies of a lab's correct submission with the sandboxed autograder.

Run with ``python benchmarks/grading.py`` (options: ``--help``). In a throwaway
course it releases the lab (``nbgrader generate_assignment``), writes
``--copies`` submissions of the instructor's solution (markers removed), then
times ``course_grading.autograde.autograde`` with ``--jobs`` parallel jailed
kernels, feedback included, and checks that every copy got full marks.
Prints a markdown table and keeps it in ``benchmarks/results/grading.md``.
The number depends mostly on the lab's import and test time and on how many
cores are free; on a shared machine expect it to vary.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from common import save, table  # noqa: E402
from course_grading.autograde import autograde  # noqa: E402
from course_grading.cells import cell_source, strip_markers  # noqa: E402
from course_grading.course import find_root, nbgrader_command, nbgrader_env  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lab", default="lab02_attention")
    ap.add_argument("--copies", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--memory", type=int, default=4096, help="MiB per kernel")
    args = ap.parse_args()
    root = find_root(Path(__file__).parent)
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        course = Path(tmp) / "course"
        course.mkdir()
        shutil.copy(root / "nbgrader_config.py", course)
        shutil.copytree(root / "solutions" / args.lab, course / "solutions" / args.lab)
        subprocess.run(nbgrader_command() + ["generate_assignment", args.lab, "--force", "--log-level=WARN",
                                             f"--CourseDirectory.root={course}"], cwd=course, env=nbgrader_env(), check=True)
        name = f"{args.lab}.ipynb"
        nb = solved(json.loads((course / "labs" / args.lab / name).read_text()),
                    json.loads((course / "solutions" / args.lab / name).read_text()))
        for i in range(args.copies):
            folder = course / "submitted" / f"student{i:03d}" / args.lab
            folder.mkdir(parents=True)
            (folder / name).write_text(json.dumps(nb))
        load = os.getloadavg()[0]
        start = time.perf_counter()
        outcomes = autograde(args.lab, root=course, jobs=args.jobs, timeout=args.timeout, memory_mb=args.memory)
        seconds = time.perf_counter() - start
    full = sum(o.status == "graded" and o.score == o.max_score for o in outcomes)
    per = [o.seconds for o in outcomes]
    rows = [[args.lab, args.copies, args.jobs, seconds, seconds / args.copies, 60 * args.copies / seconds,
             sorted(per)[len(per) // 2], f"{full}/{args.copies}"]]
    body = table(["lab", "copies", "jobs", "total s", "s per submission", "submissions per min",
                  "median s in a worker", "full marks"], rows)
    body += (f"\n\nSandboxed (unshare jail per kernel), feedback generated; {os.cpu_count()} CPU cores, "
             f"load average {load:.1f} when it started.")
    save("grading", f"Grading {args.copies} copies of {args.lab}", body)
    if full != args.copies:
        raise SystemExit(f"only {full} of {args.copies} copies got full marks")


if __name__ == "__main__":
    main()
