"""Shared timing helpers for the benchmark scripts.

Each benchmark times the course's code and its reference in the same process,
alternating between them after a warm-up, and reports medians. Ratios are
what matter: absolute numbers depend on the machine and on what else runs.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def alternate_rounds(fns: dict[str, Callable[[], object]], repeats: int = 5,
                     warmup: int = 1) -> dict[str, list[float]]:
    """Run each function ``warmup`` times, then ``repeats`` rounds in which
    every function runs once (order rotating each round). Returns each
    function's seconds, one per round (round ``r`` of every function ran
    back to back, so their ratio suffers least from drifting load)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def alternate(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """:func:`alternate_rounds`, reduced to each function's median seconds."""
    return {n: statistics.median(t) for n, t in alternate_rounds(fns, repeats, warmup).items()}


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A markdown table."""
    def fmt(x: object) -> str:
        if isinstance(x, float):
            return f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"
        return str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    import torch

    try:
        import transformers

        tv = transformers.__version__
    except ImportError:  # pragma: no cover
        tv = "not installed"
    return (f"{platform.machine()}, {torch.get_num_threads()} torch threads, Python {sys.version.split()[0]}, "
            f"torch {torch.__version__}, transformers {tv}, {datetime.date.today().isoformat()}")


def save(name: str, title: str, body: str) -> None:
    """Print a result and keep it in benchmarks/results/NAME.md for RESULTS.md."""
    text = f"## {title}\n\n{machine()}\n\n{body}\n"
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{name}.md").write_text(text)
