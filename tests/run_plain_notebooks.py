#!/usr/bin/env python3
"""Run every chapter and lab solution as a plain notebook, against the package alone.

What a student gets in Colab or a bare JupyterLab is the ``course_utils``
wheel and its dependencies, and nothing of this repository: no book tools, no
source tree on the path, no files beside the notebook. This script rebuilds
that situation and runs every chapter (``chapters/*.ipynb``) and every lab
solution (``solutions/*/*.ipynb``) in it:

1. builds the wheel of this repository (``pip wheel --no-deps``, from a copy of
   the files git would commit, so nothing is written into the repository);
2. makes a fresh virtual environment with the given interpreter and installs
   PyTorch (``--torch``), the wheel (which brings its own dependencies) and,
   to run notebooks, only ``ipykernel`` and ``nbclient``;
3. executes each notebook with that environment's kernel, from a temporary
   copy of the notebook's folder, with a fresh ``HOME`` (no caches), without
   ``PYTHONPATH`` or ``COURSE_UTILS_BOOK_BUILD`` and, where it can, with no
   network: the kernels run inside ``unshare --net`` (a namespace with only
   the loopback interface, which chapter 10 and lab 9 need) when this script
   runs as root and ``unshare`` and ``ip`` are available; otherwise the
   output says the network was left on. With ``--jobs N`` the kernels share the
   cores: each gets ``cores / N`` BLAS and OpenMP threads, as a student's one
   kernel gets them all (two kernels of two threads each on two cores spun
   waiting for each other: chapters 3, 5 and 8 ran 4 to 8 times slower).

It prints one line per notebook with its time, under a progress bar, and
exits with 1 if any notebook fails, after printing the error of the failing
cell (2 if the environment could not be set up). Not collected by pytest; CI
runs it as::

    python tests/run_plain_notebooks.py --python python3.12 --jobs 2
    python tests/run_plain_notebooks.py --only 03_attention --keep /tmp/plain   # one notebook, keep its output
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Environment variables a student's kernel would not have.
DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "COURSE_UTILS_BOOK_BUILD",
               "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "MPLBACKEND",
               "JUPYTER_PATH", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR")
#: What a plain notebook needs besides the package.
RUNNER_PACKAGES = ("ipykernel", "nbclient")
#: Modules of the book build that must not come with the package.
BOOK_TOOLS = ("myst_nb", "jupyter_book", "sphinx", "jupytext")


def notebooks(root: Path = ROOT, only: str | None = None) -> list[Path]:
    """The chapters' notebooks, then the lab solutions; with ``only``, those whose path contains it."""
    found = sorted(root.glob("chapters/*.ipynb")) + sorted(root.glob("solutions/*/*.ipynb"))
    return [p for p in found if only is None or only in p.relative_to(root).as_posix()]


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a set-up step; on failure print its output and exit with 2."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        print(f"FAILED: {what}\n$ {shlex.join(cmd)}\n{done.stdout}\n{done.stderr}", file=sys.stderr)
        sys.exit(2)
    print(f"  {what} ({time.perf_counter() - start:.0f} s)", flush=True)
    return done


def copy_source(root: Path, dest: Path) -> Path:
    """Copy the files git would commit (tracked, or untracked and not ignored) to ``dest``."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = root / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def build_wheel(python: str, source: Path, out: Path) -> Path:
    """``pip wheel --no-deps`` of the repository copy in ``source``; the wheel's path."""
    _run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
         "built the wheel")
    wheels = sorted(out.glob("course_utils-*.whl"))
    if len(wheels) != 1:
        sys.exit(f"expected one course_utils wheel in {out}, found {wheels}")
    return wheels[0]


def make_venv(python: str, venv: Path, wheel: Path, torch: str, torch_args: list[str],
              constraint: str | None) -> Path:
    """A fresh virtual environment with torch, the wheel and the notebook runner; its python."""
    _run([python, "-m", "venv", str(venv)], f"made a virtual environment with {python}")
    vpy = venv / "bin" / "python"
    pip = [str(vpy), "-m", "pip", "install", "--quiet"] + (["--constraint", constraint] if constraint else [])
    _run(pip + torch_args + [torch], f"installed {torch}")
    _run(pip + [str(wheel)], f"installed {wheel.name} and its dependencies")
    _run(pip + list(RUNNER_PACKAGES), f"installed {' and '.join(RUNNER_PACKAGES)}")
    return vpy


def check_venv(vpy: Path, venv: Path, cwd: Path, env: dict[str, str]) -> None:
    """The package imports from the venv (not from this repository), and no book tool is installed."""
    code = ("import importlib.util, course_utils, sys; print(course_utils.__file__); "
            f"print(*[m for m in {BOOK_TOOLS!r} if importlib.util.find_spec(m)])")
    done = _run([str(vpy), "-c", code], "checked the install", cwd=cwd, env=env)
    where, tools = (done.stdout.splitlines() + ["", ""])[:2]
    if not Path(where).resolve().is_relative_to(venv.resolve()):
        sys.exit(f"course_utils was imported from {where}, not from the fresh environment {venv}")
    if tools.strip():
        sys.exit(f"the package brought tools of the book build: {tools}")
    print(f"  course_utils from {where}", flush=True)


def isolation() -> tuple[list[str], str]:
    """The command prefix that cuts the network off, and a line saying what it does.

    The runner talks to its kernels over Unix sockets, so they need no network
    at all; the loopback interface of the new namespace is brought up when
    ``ip`` is there, as on any student's machine.
    """
    if os.geteuid() != 0:
        return [], "network: NOT isolated (not running as root, so no `unshare --net`)"
    if shutil.which("unshare") is None:
        return [], "network: NOT isolated (unshare not found)"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return [], f"network: NOT isolated (`unshare --net` failed: {probe.stderr.strip()})"
    if shutil.which("ip") is None:  # chapter 10 and lab 9 need 127.0.0.1 (their processes talk over it)
        return [], "network: NOT isolated (`ip` not found to bring up the loopback of a new namespace)"
    return (["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$@"'],
            "network: none (kernels run inside `unshare --net`, loopback only)")


def _no_network() -> str:
    """'cut off' if no outside address can be reached from here, else 'reachable'."""
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        return "cut off"
    return "REACHABLE"


def execute(paths: list[Path], workdir: Path, timeout: int) -> int:
    """Run each notebook from a copy of its folder (in this interpreter's kernel); 1 if any failed."""
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from tqdm import tqdm

    print(f"  outside network from the kernels' namespace: {_no_network()}", flush=True)
    failures, total = [], 0.0
    bar = tqdm(paths, unit="notebook", dynamic_ncols=True, file=sys.stdout)
    for i, path in enumerate(bar):
        rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        bar.set_postfix_str(rel)
        folder = workdir / f"{i:02d}_{path.parent.name}"
        shutil.copytree(path.parent, folder)
        copy = folder / path.name
        nb = nbformat.read(copy, as_version=4)
        # Unix sockets (in the work folder), not TCP: nothing needs a network interface
        km = KernelManager(kernel_name="python3", transport="ipc", ip=str(folder / "kernel-ipc"))
        client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=False,
                                resources={"metadata": {"path": str(folder)}})
        start = time.perf_counter()
        try:
            client.execute()
            error = None
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
            error = str(err)
        finally:
            if km.has_kernel:  # a kernel manager passed in is not shut down by nbclient
                km.shutdown_kernel(now=True)
        seconds = time.perf_counter() - start
        total += seconds
        nbformat.write(nb, copy)  # with its outputs, for --keep
        tqdm.write(f"{rel:<60} {seconds:7.1f} s  {'ok' if error is None else 'FAILED'}", file=sys.stdout)
        if error is not None:
            failures.append((rel, error))
            tqdm.write(error, file=sys.stdout)
    bar.close()
    print(f"{'total':<60} {total:7.1f} s  {len(paths) - len(failures)} of {len(paths)} notebooks ran")
    for rel, _ in failures:
        print(f"FAILED: {rel}")
    return 1 if failures else 0


def run_parallel(paths: list[Path], jobs: int, run_one) -> int:
    """Run ``run_one(i, path)`` (a finished ``subprocess.CompletedProcess``) for
    every notebook, ``jobs`` at a time, in the given order; print each one's
    output when it ends; 1 if any failed."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    start, failed = time.perf_counter(), []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_one, i, path): path for i, path in enumerate(paths)}
        for future in as_completed(futures):
            done = future.result()
            lines = [line for line in done.stdout.splitlines() if not line.lstrip().startswith(("total", "0%", "100%"))
                     and "notebook/s" not in line and "s/notebook" not in line]
            print("\n".join(lines), flush=True)
            if done.returncode != 0:
                failed.append(futures[future])
    print(f"{'wall clock':<60} {time.perf_counter() - start:7.1f} s  {len(paths) - len(failed)} of {len(paths)} "
          f"notebooks ran, {jobs} at a time")
    for path in failed:
        print(f"FAILED: {path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the fresh environment (default: this one)")
    ap.add_argument("--torch", default="torch==2.13.0", help="the PyTorch requirement installed first (default: %(default)s)")
    ap.add_argument("--torch-args", default="", help='extra pip arguments for torch, e.g. "--index-url https://download.pytorch.org/whl/cpu"')
    ap.add_argument("--constraint", help="a pip constraints file for every install (default: none, as in Colab)")
    ap.add_argument("--only", help="run only the notebooks whose path contains this")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell (default: %(default)s, as the book)")
    ap.add_argument("--keep", type=Path, help="work in this new folder and keep it (wheel, venv, executed notebooks)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="notebooks run at the same time, each in its own kernel (default: %(default)s)")
    ap.add_argument("--execute", action="store_true", help=argparse.SUPPRESS)  # internal: run inside the venv
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.execute:
        return execute(args.paths, args.workdir, args.timeout)

    paths = notebooks(ROOT, args.only)
    if not paths:
        print(f"no notebook matches {args.only!r}", file=sys.stderr)
        return 2
    if args.keep:
        args.keep.mkdir(parents=True)
        work = args.keep.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="plain-notebooks-"))
    try:
        print(f"setting up in {work}", flush=True)
        wheel = build_wheel(args.python, copy_source(ROOT, work / "source"), work / "dist")
        venv = work / "venv"
        vpy = make_venv(args.python, venv, wheel, args.torch, shlex.split(args.torch_args), args.constraint)
        env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
        env["HOME"] = str(work / "home")
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONNOUSERSITE"] = "1"  # nothing from ~/.local, whatever HOME says
        if args.jobs > 1:  # the kernels running at once share the cores
            threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
        (work / "home").mkdir()
        (work / "run").mkdir()
        check_venv(vpy, venv, work / "run", env)
        prefix, network = isolation()
        print(network, flush=True)
        print(f"running {len(paths)} notebooks with {vpy}" + (
            f", {args.jobs} at a time, {env['OMP_NUM_THREADS']} thread(s) each" if args.jobs > 1 else ""), flush=True)

        def command(chunk: list[Path], workdir: Path) -> list[str]:
            workdir.mkdir(parents=True, exist_ok=True)
            return prefix + [str(vpy), str(Path(__file__).resolve()), "--execute", "--timeout", str(args.timeout),
                             "--workdir", str(workdir), "--"] + [str(p) for p in chunk]

        if args.jobs <= 1:
            return subprocess.run(command(paths, work / "run"), cwd=work / "run", env=env).returncode
        return run_parallel(paths, args.jobs, lambda i, path: subprocess.run(
            command([path], work / "run" / f"job{i:02d}"), cwd=work / "run", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
