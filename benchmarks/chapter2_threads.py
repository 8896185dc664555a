"""Chapter 2's races at different CPU speeds: do its conclusions change?

Chapter 2 compares an LSTM and a transformer on copying and key-value recall,
and two starts of the transformer, at equal numbers of optimizer updates. This
script runs those exact experiments (the chapter's step budgets, seeds and
models, read from the chapter itself) in fresh processes with 1 torch thread
and with every core, which changes the speed of the machine as seen by the
experiment (and with one thread on a core shared with a busy process, about
half the speed of one free core), and prints, for each setting, what the chapter concludes from the
run: accuracies against chance, when the transformer left the plateau, and the
seconds each model took. The conclusions must be the same; only the seconds
may differ.

    python benchmarks/chapter2_threads.py            # three runs, about 15 min on 2 cores
    python benchmarks/chapter2_threads.py --threads 1 2

Result: benchmarks/results/chapter2_threads.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

from common import save, table

CHAPTER = Path(__file__).resolve().parents[1] / "chapters" / "02_next_word.md"


def chapter_budgets() -> dict[str, int]:
    """COPY_STEPS and RECALL_STEPS as the chapter sets them (so this script cannot drift from it)."""
    text = CHAPTER.read_text()
    return {name: int(re.search(rf"^{name} = ([0-9_]+)", text, re.M).group(1))
            for name in ("COPY_STEPS", "RECALL_STEPS")}


def _spin() -> None:
    while True:
        pass


def run_once(threads: int, copy_steps: int, recall_steps: int) -> dict:
    """The chapter's three races in this process, with ``threads`` torch threads.

    ``threads=0`` is the slow setting: one thread, pinned to one core that a busy
    process shares (about half the speed of one free core).
    """
    import multiprocessing

    import torch

    label = threads
    if threads == 0:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        multiprocessing.Process(target=_spin, daemon=True).start()  # inherits the pinning
        threads = 1

    from course_utils.rnn import associative_recall_experiment, plateau_exit_step

    torch.set_num_threads(threads)
    copying = associative_recall_experiment(max_steps=copy_steps, task="copy", progress=False)
    recall = associative_recall_experiment(max_steps=recall_steps, progress=False)
    gpt2 = associative_recall_experiment(max_steps=recall_steps, models=("transformer",), progress=False,
                                         sizes={"transformer": {"init": "gpt2"}})["transformer"]
    import inspect

    n_pairs = inspect.signature(associative_recall_experiment).parameters["n_pairs"].default  # the chapter's
    plateau = math.log(n_pairs)
    rows = {}
    for race, results in (("copy", copying), ("recall", recall), ("recall, GPT-2 start", {"transformer": gpt2})):
        for name, r in results.items():
            rows[f"{race}: {name}"] = {"accuracy": r["accuracy"], "seconds": r["seconds"], "steps": r["steps"],
                                       "left_plateau": (plateau_exit_step(r["loss_curve"], plateau)
                                                        if race != "copy" else None)}
    return {"threads": label, "rows": rows}


def verdicts(rows: dict) -> dict[str, str]:
    """What the chapter's prose concludes from one run, in words (its own thresholds)."""
    import inspect

    from course_utils.rnn import associative_recall_experiment

    vocab = inspect.signature(associative_recall_experiment).parameters["vocab_size"].default
    copy_chance, recall_chance = 1 / (vocab - 1), 1 / (vocab - vocab // 2)  # as the chapter computes them

    def vs(acc: float, chance: float) -> str:
        return "near chance" if acc / chance < 2 else "well above chance" if acc < 0.9 else "solved (>= 90 %)"

    out = {k: vs(v["accuracy"], copy_chance if k.startswith("copy") else recall_chance) for k, v in rows.items()}
    lecun = rows["recall: transformer"]["left_plateau"]
    gpt2 = rows["recall, GPT-2 start: transformer"]["left_plateau"]
    out["LeCun start leaves the plateau first"] = str(lecun is not None and (gpt2 is None or lecun < gpt2))
    return out


def _label(threads: int) -> str:
    return "1 thread on a shared core" if threads == 0 else f"{threads} thread(s)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[0, 1, os.cpu_count() or 1],
                    help="torch threads per run; 0 = one thread on a core shared with a busy process")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    budgets = chapter_budgets()
    if args.child is not None:
        print(json.dumps(run_once(args.child, budgets["COPY_STEPS"], budgets["RECALL_STEPS"])))
        return
    runs = []
    for threads in args.threads:  # a fresh process each: torch's thread pool is set once per process
        out = subprocess.run([sys.executable, __file__, "--child", str(threads)], check=True, text=True,
                             stdout=subprocess.PIPE, cwd=Path(__file__).parent).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    names = list(runs[0]["rows"])
    rows = []
    for name in names:
        cells = [name]
        for run in runs:
            r = run["rows"][name]
            exit_step = "" if r["left_plateau"] is None else f", left plateau at {r['left_plateau']:,}"
            cells.append(f"{r['accuracy']:.1%} in {r['steps']:,} updates, {r['seconds']:.0f} s{exit_step}")
        rows.append(cells)
    verdict = [verdicts(run["rows"]) for run in runs]
    same = all(v == verdict[0] for v in verdict)
    rows += [[k, *[v[k] for v in verdict]] for k in verdict[0]]
    speed = [sum(r["seconds"] for r in run["rows"].values()) for run in runs]
    body = (table(["race: model", *[_label(run["threads"]) for run in runs]], rows)
            + "\n\nTotal training seconds: "
            + ", ".join(f"{_label(run['threads'])} {s:.0f} s" for run, s in zip(runs, speed))
            + f" (slowest / fastest: {max(speed) / min(speed):.2f}).\n\nSame conclusions at every speed: **{same}**.")
    save("chapter2_threads", "Chapter 2's races at different CPU speeds", body)
    if not same:
        sys.exit("the conclusions differ between speeds")


if __name__ == "__main__":
    main()
