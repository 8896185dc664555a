"""Run times of the labs, the chapters and the book build.

    python benchmarks/notebooks.py            # labs, chapters and book
    python benchmarks/notebooks.py labs       # only the lab solutions
    python benchmarks/notebooks.py chapters   # only the chapters
    python benchmarks/notebooks.py book       # only the book: a cold build, then a cached rebuild

Each lab solution (``solutions/labNN_*/labNN_*.ipynb``) and each chapter
(``chapters/NN_*.ipynb``) is executed from scratch in a fresh kernel with
``nbclient``, the way nbval and the book build run them, and timed: wall-clock
seconds and the CPU seconds of the kernel process. The labs' limit is 90 s of
wall-clock time on a 2-core machine. The book is built with the README's
command into a temporary folder twice: first with an empty execution cache
(every chapter runs), then again (nothing runs). Targets: cold under 10 min,
cached under 1 min.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import save, table

ROOT = Path(__file__).resolve().parent.parent
LAB_LIMIT_S = 90.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_notebook(path: Path) -> tuple[float, float]:
    """Execute ``path`` in a fresh kernel, in its own folder. Returns (wall s, kernel CPU s)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    cpu0, t0 = _children_cpu(), time.perf_counter()
    client.execute()  # shuts the kernel down and waits for it, so its CPU time is counted
    return time.perf_counter() - t0, _children_cpu() - cpu0


def labs() -> None:
    rows = []
    for path in sorted((ROOT / "solutions").glob("lab*/lab*.ipynb")):
        wall, cpu = run_notebook(path)
        print(f"{path.stem}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
        rows.append([path.stem, f"{wall:.1f}", f"{cpu:.1f}", "yes" if wall <= LAB_LIMIT_S else "**no**"])
    body = table(["lab (solution)", "wall s", "kernel CPU s", f"within {LAB_LIMIT_S:.0f} s"], rows)
    body += "\n\nEach solution notebook executed from scratch in a fresh kernel (nbclient), one after another."
    save("labs", "Lab solutions: run time", body)


def chapters() -> None:
    rows = []
    for path in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")):
        wall, cpu = run_notebook(path)
        print(f"{path.stem}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
        rows.append([path.stem, f"{wall:.1f}", f"{cpu:.1f}"])
    rows.append(["**total**", f"{sum(float(r[1]) for r in rows):.1f}", f"{sum(float(r[2]) for r in rows):.1f}"])
    body = table(["chapter", "wall s", "kernel CPU s"], rows)
    body += "\n\nEach chapter's notebook executed from scratch in a fresh kernel (nbclient), one after another."
    save("chapters", "Chapters: execution time", body)


def book() -> None:
    exe = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or "jupyter-book"
    out = Path(tempfile.mkdtemp(prefix="book-bench-"))
    cmd = [exe, "build", str(ROOT), "--all", "-W", "-n", "--keep-going", "--path-output", str(out)]
    rows = []
    try:
        for label in ("cold (empty execution cache)", "cached rebuild"):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - t0
            print(f"{label}: {seconds:.0f} s", flush=True)
            rows.append([label, f"{seconds:.0f}", f"{seconds / 60:.1f}"])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    body = table(["book build", "s", "min"], rows)
    body += ("\n\n`jupyter-book build . --all -W -n --keep-going` (strict) into a fresh folder, then the same "
             "command again; `--all` rewrites every page both times, the cache spares the execution. "
             "Targets: cold < 10 min, cached < 1 min.")
    save("book", "Book build time", body)


def main(argv: list[str]) -> int:
    parts = {"labs": labs, "chapters": chapters, "book": book}
    chosen = argv or list(parts)
    unknown = [a for a in chosen if a not in parts]
    if unknown:
        print(f"unknown part(s) {unknown}; choose from {list(parts)}", file=sys.stderr)
        return 2
    for name in chosen:
        parts[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
