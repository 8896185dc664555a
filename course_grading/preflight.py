"""Preflight: before grading, check inside the jail that the lab's imports work.

A grading environment the jail cannot use (``course_utils`` installed in
editable mode from a checkout the jail does not mount, a package missing from
the virtual environment) would otherwise zero every correct answer that needs
it, and report each submission as graded. :func:`preflight` imports, in a
jail built exactly like a student's kernel's, every module the lab's own cells
import, and says which fail and why::

    >>> preflight(Path("labs/lab02_attention"), ["lab02_attention"], jail=True)  # doctest: +SKIP
    []
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from course_grading.cells import cell_source
from course_grading.integrity import to_python

__all__ = ["PreflightError", "lab_imports", "preflight"]


class PreflightError(RuntimeError):
    """The lab's imports fail in the jail: grading would give wrong grades."""


def lab_imports(notebooks: list[dict]) -> list[str]:
    """The absolute imports of the notebooks' code cells, e.g. ``['course_utils.attention', 'math', 'torch']``
    (``course_utils`` is always among them)."""
    found = {"course_utils"}
    for nb in notebooks:
        for cell in nb.get("cells", []):
            if cell.get("cell_type") != "code":
                continue
            try:
                tree = ast.parse(to_python(cell_source(cell)))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found |= {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module)
    return sorted(found)


_PROBE = r"""
import importlib, json, sys, warnings
warnings.simplefilter("ignore")
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except BaseException as e:
        failed[name] = f"{type(e).__name__}: {e}"[:300]
print(json.dumps(failed))
"""


def preflight(release: Path, notebooks: list[str], jail: bool, memory_mb: int = 4096) -> list[str]:
    """Import every module the lab's release notebooks import, in a jail like a kernel's
    (or, unsandboxed, in a plain process with the kernel's environment). Returns one line
    per module that fails, empty when all import."""
    from course_grading.sandbox import JailSpec, dies_with_grader, jail_command, jail_env, python_paths

    nbs = [json.loads((Path(release) / f"{name}.ipynb").read_text()) for name in notebooks]
    modules = lab_imports(nbs)
    with tempfile.TemporaryDirectory(prefix="preflight-") as tmp:
        scratch = Path(tmp, "scratch")
        (scratch / "work").mkdir(parents=True)
        (scratch / "home").mkdir()
        env = jail_env(str(scratch), 1)
        argv = [sys.executable, "-I", "-c", _PROBE, json.dumps(modules)]
        if jail:
            uid = 62999
            if os.geteuid() == 0:
                for folder, _, files in os.walk(scratch):
                    for name in [folder, *(os.path.join(folder, f) for f in files)]:
                        os.chown(name, uid, uid)
            spec = JailSpec(scratch=str(scratch), workdir=str(scratch / "work"), readonly=python_paths(),
                            memory_mb=memory_mb, uid=uid, env=env, status_file=str(Path(tmp, "status")))
            argv = jail_command(argv, spec, spec_path=str(Path(tmp, "jail.json")))
        try:
            done = subprocess.run(argv, cwd=scratch / "work", env=env, capture_output=True, text=True, timeout=600,
                                  preexec_fn=dies_with_grader())
        except subprocess.TimeoutExpired:
            return [f"importing {', '.join(modules)} took more than 600 s in the jail"]
    try:
        failed = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [f"the import check could not run in the jail (exit {done.returncode}): {done.stderr.strip()[-300:]}"]
    where = "in the jail" if jail else "in the grading environment"
    return [f"`import {name}` fails {where}: {why}" for name, why in sorted(failed.items())]
