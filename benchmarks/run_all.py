"""Run every CPU benchmark and collect the tables into benchmarks/RESULTS.md.

    python benchmarks/run_all.py            # run every CPU benchmark, then collect
    python benchmarks/run_all.py --collect  # only collect the last results into RESULTS.md

Each script prints its table and keeps it in benchmarks/results/NAME.md;
RESULTS.md is those files in order, under a header naming the machine.
The slower measurements made by their own commands (``grading.py``, and
``notebooks.py`` for the labs, chapters and book build) are included from
their last run, and so is ``results/gpu.md``, written by hand from the output of
``gpu.py`` and ``cuda_check.py`` on a lent GPU.
Run it on an otherwise idle machine: the ratios compare code in one process,
but a loaded machine distorts them (thread oversubscription in particular).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["train_step", "generate", "encoder", "real_shapes", "profiles", "cpu_efficiency", "bpe_training"]


def main(argv: list[str]) -> int:
    for name in [] if "--collect" in argv else SCRIPTS:
        print(f"== {name}", flush=True)
        out = subprocess.run([sys.executable, str(HERE / f"{name}.py")], cwd=HERE, check=True,
                             capture_output=True, text=True).stdout
        print(out, flush=True)
        result = HERE / "results" / f"{name}.md"
        if name == "bpe_training":  # prints its own table; keep it as the result
            result.parent.mkdir(exist_ok=True)
            result.write_text(f"## BPE training, ours vs Hugging Face tokenizers\n\n{out}")
    sys.path.insert(0, str(HERE))
    from common import machine

    parts = [f"# Benchmark results\n\nMade by `python benchmarks/run_all.py` on: {machine()}.\n"]
    targets = HERE / "results" / "targets.md"  # the analysis, written by hand against these tables
    if targets.is_file():
        parts.append(targets.read_text())
    for name in SCRIPTS + ["chapter2_threads", "labs", "chapters", "book", "grading", "gpu"]:
        path = HERE / "results" / f"{name}.md"
        if path.is_file():
            parts.append(path.read_text())
    (HERE / "RESULTS.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
