"""The jailed kernel: a Jupyter kernel manager that starts its kernel in the jail, and nbgrader's Execute hardened.

:class:`SandboxKernelManager` starts the student's kernel with
:func:`course_grading.sandbox.jail_command` (or, unsandboxed, under rlimits
only), talks to it over Unix sockets in its scratch folder and kills it, with
everything it started, after the notebook's time limit.
:class:`SandboxedExecute` replaces nbgrader's ``Execute`` preprocessor in
:func:`course_grading.autograde.autograde`: it arms every test cell with a
nonce so that a cell earns points only if it demonstrably ran to its end, and
records what went wrong (timeouts, memory, a dead kernel) in
``execution.json`` for the report.

Importing this module imports nbgrader (seconds): the grader does it in its
worker processes only. Plugging it into nbgrader::

    cfg.Autograde.autograde_preprocessors = [..., SandboxedExecute, ...]
    cfg.SandboxedExecute.update(scratch=..., control=..., memory_mb=4096, notebook_timeout=600)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from nbgrader.utils import is_grade
from traitlets import Bool, Enum, Float, Int, Unicode

from course_grading.cells import cell_source, without_hidden_tests
from course_grading.integrity import (DELEGATES, DEMONSTRATIONS, Cell, CheckSpec, check_run, compare, forks_warm,
                                      prewarm, resume_plan, start_check, to_python)
from course_grading.sandbox import JailSpec, describe_status, dies_with_grader, jail_command, python_paths
from course_grading.sandbox import jail_env as _jail_env  # the kernel's whole environment

__all__ = ["SandboxKernelManager", "SandboxedExecute", "MEMORY_ERRORS"]

MEMORY_ERRORS = ("MemoryError", "DefaultCPUAllocator", "Cannot allocate memory", "std::bad_alloc")


def _unsandboxed_limits(memory_mb: int) -> Callable[[], None]:
    """A ``preexec_fn`` that caps the kernel's memory when there is no jail."""
    def apply() -> None:
        import resource

        if memory_mb:
            resource.setrlimit(resource.RLIMIT_DATA, (memory_mb * 2**20,) * 2)
    return apply


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs in a jail (or, unsandboxed, under
    rlimits only), talks over Unix sockets in its scratch folder, is
    interrupted by message and is killed, with everything it started, after
    ``deadline`` seconds."""

    def __init__(self, *, scratch: str, control: str, jail: bool, memory_mb: int, uid: int,
                 threads: int, deadline: float, **kw):
        super().__init__(**kw)
        self.scratch, self.control, self.jail = scratch, control, jail
        self.memory_mb, self.uid, self.threads, self.deadline = memory_mb, uid, threads, deadline
        self.expired = False
        self._timer: threading.Timer | None = None
        self.transport = "ipc"
        self.ip = os.path.join(scratch, "ipc", "k")
        self.connection_file = os.path.join(scratch, "ipc", "kernel.json")
        self.kernel_spec.interrupt_mode = "message"
        self.status_file = os.path.join(control, "kernel.status")
        self.log_file = os.path.join(control, "kernel.log")

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        if not self.jail:
            return cmd
        spec = JailSpec(scratch=self.scratch, workdir=os.path.join(self.scratch, "work"),
                        readonly=python_paths(), memory_mb=self.memory_mb, uid=self.uid,
                        env=_jail_env(self.scratch, self.threads), status_file=self.status_file)
        return jail_command(cmd, spec, spec_path=os.path.join(self.control, "jail.json"))

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        if self.jail and os.geteuid() == 0:
            for folder, _, files in os.walk(self.scratch):
                for name in [folder, *(os.path.join(folder, f) for f in files)]:
                    os.chown(name, self.uid, self.uid, follow_symlinks=False)
        kw["env"] = _jail_env(self.scratch, self.threads)
        kw["cwd"] = os.path.join(self.scratch, "work")
        kw["stdout"] = kw["stderr"] = open(self.log_file, "ab")
        if os.name == "posix":  # nothing of the student's outlives a killed grader
            kw["preexec_fn"] = dies_with_grader(None if self.jail else _unsandboxed_limits(self.memory_mb))
        await super()._async_launch_kernel(kernel_cmd, **kw)
        kw["stdout"].close()
        self._timer = threading.Timer(self.deadline, self.expire)
        self._timer.daemon = True
        self._timer.start()

    def expire(self) -> None:
        """Kill the kernel and every process it started (the jail's init takes them along)."""
        self.expired = True
        self.kill_tree()

    def kill_tree(self) -> None:
        """SIGKILL the kernel's process group while its leader (``unshare``, or the
        unsandboxed kernel) is still ours: not yet reaped, so its id cannot be reused."""
        process = getattr(self.provisioner, "process", None)
        pgid = getattr(self.provisioner, "pgid", None)
        try:
            if process is not None and process.poll() is None:
                os.killpg(pgid, signal.SIGKILL) if pgid else process.kill()
        except OSError:
            pass

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        if self._timer:
            self._timer.cancel()
        self.kill_tree()  # nothing the student started survives the grading
        await super()._async_cleanup_resources(restart=restart)

    cleanup_resources = _async_cleanup_resources


def _kind(cell) -> str | None:
    """``'test'``, ``'solution'``, ``'locked'`` or ``''`` for a code cell; None for any other cell."""
    if cell.cell_type != "code":
        return None
    meta = cell.metadata.get("nbgrader", {})
    return "test" if is_grade(cell) else "solution" if meta.get("solution") else "locked" if meta.get("locked") else ""


def _demonstrations(nb, lab: str, kinds: list[str | None]) -> set[int]:
    """The indices of the lab's demonstrations (:data:`DEMONSTRATIONS`): read-only cells that bind
    nothing a later test or answer reads, which a re-run may leave out."""
    names = set(DEMONSTRATIONS.get(lab, ()))
    return {i for i, c in enumerate(nb.cells)
            if kinds[i] == "locked" and c.metadata.get("nbgrader", {}).get("grade_id") in names}


def check_preload(nb, lab: str) -> list[str]:
    """The modules the integrity check imports before any cell: those that the lab's own cells up to
    its last test import (read-only cells, its demonstrations (:data:`DEMONSTRATIONS`) left out, and
    the visible part of its tests, so that a release and a graded submission give the same list), and
    those holding the reference implementations it instruments (:data:`DELEGATES`)."""
    from course_grading.preflight import lab_imports

    kinds = [_kind(c) for c in nb.cells]
    tests = [i for i, k in enumerate(kinds) if k == "test"]
    demos = _demonstrations(nb, lab, kinds)
    own = []
    for i, c in enumerate(nb.cells[: max(tests, default=-1) + 1]):
        if kinds[i] == "test":
            own.append({"cell_type": "code", "source": without_hidden_tests(cell_source(c))})
        elif kinds[i] == "locked" and i not in demos:
            own.append(c)
    modules = lab_imports([{"cells": own}])
    references = {target.partition(":")[0] for targets in DELEGATES.get(lab, {}).values() for target in targets}
    return modules + sorted(references - set(modules))


def prewarm_check(notebook: str | os.PathLike, lab: str, threads: int) -> None:
    """Start this grading worker's warm process for the checks of ``lab`` now, from its release
    ``notebook`` (:func:`course_grading.integrity.prewarm`): it imports the lab's modules while the
    worker starts, so that the first submission's check is forked too."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    prewarm(check_preload(nb, lab), _jail_env("/", threads))


class SandboxedExecute(Execute):
    """nbgrader's Execute preprocessor, hardened.

    * the kernel runs in a jail (:class:`SandboxKernelManager`);
    * every test cell is armed with a last line printing a fresh nonce: it
      earns points only if the nonce appears in its stdout and it has no
      error and no stderr output; otherwise an error output is put first
      (nbgrader then scores it 0), whatever the kernel claims;
    * cells after the last test cell are not run (they cannot change a grade)
      unless ``run_all``;
    * when the kernel dies (``os._exit``, a crash, the notebook time limit),
      the cells after it get a "not run" error instead of failing the
      whole submission; ``report`` says what happened;
    * when a cell ignores the interrupt, the kernel is stopped and grading
      goes on in a fresh kernel from the next part (the earlier non-test
      cells replayed first, the lab's demonstrations left out), so one stuck
      part costs only its own points;
    * the tests that passed are re-run without IPython
      (:mod:`course_grading.integrity`, in a process started beside the
      kernel, without the lab's demonstrations unless that disagrees): if one
      fails there, ``report["held"]`` holds the evidence and the grader holds
      the submission for review; a test whose answer called the part's
      reference implementation scores 0;
    * the kernel is stopped at once after its last cell.
    """

    notebook_timeout = Float(600, help="wall-clock limit for the whole notebook, in seconds").tag(config=True)
    sandbox = Bool(True, help="run the kernel in a jail").tag(config=True)
    memory_mb = Int(4096, help="memory limit of the kernel (RLIMIT_DATA), MiB").tag(config=True)
    scratch = Unicode("", help="the jail's writable folder").tag(config=True)
    control = Unicode("", help="grader-only folder for reports").tag(config=True)
    uid = Int(62000, help="unprivileged uid of the kernel (grader running as root)").tag(config=True)
    threads = Int(1, help="BLAS/OpenMP threads of the kernel").tag(config=True)
    run_all = Bool(False, help="also run the cells after the last test cell").tag(config=True)

    check = Bool(True, help="re-run the passed tests without IPython and hold the submission on disagreement "
                            "(course_grading.integrity)").tag(config=True)
    lab = Unicode("", help="the lab being graded (selects the references its parts must not call)").tag(config=True)
    max_restarts = Int(3, help="fresh kernels started after a kernel was stopped for ignoring an interrupt").tag(
        config=True)
    # Once its last cell has replied, nothing the kernel still holds can change a grade: stop it at once
    # (SIGKILL, then SandboxKernelManager kills what it started) instead of asking it to shut down and
    # waiting for it (nbclient's default, "graceful", waited 1 to 4 s per submission here).
    shutdown_kernel = Enum(["graceful", "immediate"], default_value="immediate").tag(config=True)

    def create_kernel_manager(self):
        left = self.notebook_timeout - (time.monotonic() - getattr(self, "_started", time.monotonic()))
        self.km = SandboxKernelManager(
            kernel_name=self.kernel_name or "python3", config=self.config, scratch=self.scratch,
            control=self.control, jail=self.sandbox, memory_mb=self.memory_mb, uid=self.uid,
            threads=self.threads, deadline=max(left, 1.0))
        return self.km

    def preprocess(self, nb, resources=None, km=None):
        from nbclient.client import NotebookClient

        NotebookClient.__init__(self, nb, km)
        self._started = time.monotonic()
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        self._prepare_scratch(resources)
        tests = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and is_grade(c)]
        last = len(nb.cells) - 1 if self.run_all else max(tests, default=-1)
        kinds = [_kind(c) for c in nb.cells]
        # The check's plain-Python process runs in a jail of its own that the kernel cannot see (its own
        # mount, PID, network and IPC namespaces and scratch folder); no cell is sent to it before the
        # kernel is done. Forked from the worker's warm process, it starts when it is needed; otherwise it
        # starts now, beside the kernel, and imports the lab's modules while the notebook runs.
        self._harness = self._start_check(nb) if self.check and tests else None
        try:
            return self._run(nb, resources, tests, last, kinds)
        finally:
            if self._harness is not None:
                self._harness.close()
                self._harness = None

    def _run(self, nb, resources, tests: list[int], last: int, kinds: list):
        armed = {}
        for i in tests:
            nonce = secrets.token_hex(16)
            armed[i] = (nonce, nb.cells[i].source)
            nb.cells[i].source = nb.cells[i].source + f"\nprint({nonce!r})\n"
        self.report = {"problems": [], "not_run": [], "died": None, "held": [], "restarted": []}
        position, replay, interrupted, self._stopped = 0, [], set(), set()
        while position <= last:
            killed = None
            try:
                with self.setup_kernel():
                    info = self.wait_for_reply(self.kc.kernel_info())
                    nb.metadata["language_info"] = info["content"]["language_info"]
                    for index in replay:  # a fresh kernel: the definitions first, their outputs discarded
                        try:
                            self.preprocess_cell(copy.deepcopy(nb.cells[index]), resources, index)
                        except (CellTimeoutError, DeadKernelError):
                            self.km.kill_tree()
                            where = self._where(nb.cells[index])
                            self.report["died"] = f"the fresh kernel was stopped again in '{where}'"
                            break
                    for index in range(position, last + 1) if killed is None else ():
                        cell = nb.cells[index]
                        if self.report["died"]:
                            self._not_run(cell)
                            continue
                        try:
                            self.preprocess_cell(cell, resources, index)
                        except DeadKernelError:
                            self.report["died"] = self._death(cell)
                            cell.outputs.append(self._error("KernelDied", self.report["died"]))
                        except CellTimeoutError:  # the interrupt did not stop it: stop the kernel
                            self.km.kill_tree()
                            killed = index
                            cell.outputs.append(self._error(
                                "CellTimeoutError", f"'{self._where(cell)}' ran past {self.timeout} s and ignored "
                                                    "the interrupt; the kernel was stopped"))
                            break
                        if any(o.get("ename") == "CellTimeoutError" for o in cell.get("outputs", [])):
                            interrupted.add(index)
            except Exception as e:  # noqa: BLE001 - a kernel that never started, or failed the client
                if not self.report["died"]:
                    self.report["died"] = f"the kernel failed: {type(e).__name__}: {str(e)[:200]}{self._log_tail()}"
                for cell in nb.cells[position: last + 1]:
                    if cell.cell_type == "code" and not cell.get("outputs"):
                        self._not_run(cell)
                break
            if killed is None:
                break
            out_of_time = time.monotonic() - self._started >= self.notebook_timeout
            self._stopped |= interrupted | {killed}
            # the fresh kernel replays the definitions, not the lab's demonstrations (no later cell needs them)
            replay, position = resume_plan(kinds, killed, self._stopped | _demonstrations(nb, self.lab, kinds))
            where = self._where(nb.cells[killed])
            if out_of_time or len(self.report["restarted"]) >= self.max_restarts:
                self.report["died"] = (f"timeout: '{where}' ran past {self.timeout} s and ignored the interrupt; "
                                       "the kernel was stopped")
                for cell in nb.cells[killed + 1: last + 1]:
                    self._not_run(cell)
                break
            self.report["restarted"].append(where)
            skipped = [c for c in nb.cells[killed + 1: position] if c.cell_type == "code"]
            for cell in skipped:
                cell.outputs = [self._error("NotRun", f"not run: the kernel was stopped in '{where}' (it ignored "
                                                      "the interrupt); grading went on in a fresh kernel")]
                if is_grade(cell):
                    self.report["not_run"].append(cell.metadata["nbgrader"]["grade_id"])
            self.report["problems"].append(
                f"timeout: '{where}' ran past {self.timeout} s and ignored the interrupt; the kernel was stopped "
                "and grading went on in a fresh kernel")
        passed = set()
        for i, (nonce, source) in armed.items():
            nb.cells[i].source = source
            if self._judge(nb.cells[i], nonce):
                passed.add(i)
        if self.check and passed:
            self._check(nb, passed, kinds)
        self._summarise(nb)
        self.set_widgets_metadata()
        if self.control:
            Path(self.control, "execution.json").write_text(json.dumps(self.report))
        return nb, self.resources

    def _check(self, nb, passed: set[int], kinds: list) -> None:
        """Re-run the cells without IPython (:mod:`course_grading.integrity`): hold the submission
        when a test that passed here fails there; zero a test whose answer delegated."""
        top = max(passed)
        stopped = self._stopped | {i for i, c in enumerate(nb.cells[: top + 1])  # they would only stall here too
                                   if any(o.get("ename") == "CellTimeoutError" for o in c.get("outputs", []))}
        cells = [Cell(i, kinds[i], to_python(c.source), c.metadata.get("nbgrader", {}).get("grade_id", ""))
                 for i, c in enumerate(nb.cells[: top + 1])
                 if c.cell_type == "code" and (kinds[i] != "test" or i in passed) and i not in stopped]
        demos = _demonstrations(nb, self.lab, kinds)
        short = [c for c in cells if c.index not in demos]
        harness, self._harness = self._harness, None
        if harness is None:  # forked now from the worker's warm process (waiting for it if it still imports)
            forks_warm(self._check_spec, wait=60)
        result = check_run(short, self._check_spec, harness)
        names = {i: nb.cells[i].metadata["nbgrader"]["grade_id"] for i in passed}
        evidence, zeroed = compare(names, passed, result)
        seconds = result.seconds
        left = self.notebook_timeout - seconds
        if evidence and len(short) < len(cells) and left > 0:
            # It disagreed without the lab's demonstrations: run every cell, from a fresh scratch, before holding.
            self._fresh_check_scratch()
            result = check_run(cells, dataclasses.replace(self._check_spec, deadline=left))
            evidence, zeroed = compare(names, passed, result)
            seconds += result.seconds
            self.report["check_every_cell"] = True
        self.report["held"] = evidence
        self.report["check_seconds"] = round(seconds, 1)
        for i, why in zeroed.items():
            nb.cells[i].outputs.insert(0, self._error("Delegated", why))
            self.report["problems"].append(f"'{names[i]}' scored 0: {why}")

    def _start_check(self, nb):
        """Set up the check's scratch folder and start its process (:func:`course_grading.integrity.start_check`),
        preloading the modules that the lab's own cells up to its last test import (:func:`check_preload`);
        None when the process will be forked from a warm one (:func:`course_grading.integrity.forks_warm`)."""
        scratch = Path(self.scratch).with_name(Path(self.scratch).name + "-check")
        self._check_spec = CheckSpec(
            scratch=str(scratch), control=self.control, jail=self.sandbox, memory_mb=self.memory_mb, uid=self.uid,
            env=_jail_env(str(scratch), self.threads), cell_timeout=self.timeout, deadline=self.notebook_timeout,
            delegates=DELEGATES.get(self.lab, {}), preload=check_preload(nb, self.lab))
        self._fresh_check_scratch()
        return None if forks_warm(self._check_spec) else start_check(self._check_spec)

    def _fresh_check_scratch(self) -> None:
        """The check's scratch folder, empty but for a copy of the submission's files."""
        scratch = Path(self._check_spec.scratch)
        shutil.rmtree(scratch, ignore_errors=True)
        (scratch / "work").mkdir(parents=True)
        (scratch / "home").mkdir()
        self._copy_submission_files(scratch / "work")

    def _prepare_scratch(self, resources) -> None:
        """Copy the submission's folder (files only, no notebooks, no links) into the scratch."""
        work = Path(self.scratch, "work")
        for sub in ("work", "home", "ipc"):
            Path(self.scratch, sub).mkdir(parents=True, exist_ok=True)
        self._source = (resources or {}).get("metadata", {}).get("path") or "."
        self._copy_submission_files(work)

    def _copy_submission_files(self, work: Path) -> None:
        source = self._source
        for folder, _, files in os.walk(source):  # does not follow links
            for name in files:
                path = Path(folder, name)
                if path.is_file() and not path.is_symlink() and path.suffix != ".ipynb":
                    target = work / path.relative_to(source)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)

    @staticmethod
    def _error(ename: str, evalue: str):
        return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])

    def _not_run(self, cell) -> None:
        if cell.cell_type == "code":
            cell.outputs = [self._error("NotRun", "not run: " + self.report["died"])]
            if is_grade(cell):
                self.report["not_run"].append(cell.metadata["nbgrader"]["grade_id"])

    @staticmethod
    def _where(cell) -> str:
        return cell.metadata.get("nbgrader", {}).get("grade_id") or "a cell of the student's"

    def _death(self, cell) -> str:
        if self.km is not None and getattr(self.km, "expired", False):
            return f"timeout: the notebook ran past {self.notebook_timeout:g} s (stopped in '{self._where(cell)}')"
        time.sleep(0.2)  # let the jail's init record the status
        how = describe_status(os.path.join(self.control, "kernel.status")) or "ended"
        return f"the kernel died in '{self._where(cell)}' ({how})"

    def _log_tail(self) -> str:
        try:
            tail = Path(self.control, "kernel.log").read_text(errors="replace").strip().splitlines()[-3:]
        except OSError:
            return ""
        return (": " + " | ".join(tail))[:300] if tail else ""

    def _judge(self, cell, nonce: str) -> bool:
        """Keep the points of a test cell only if it demonstrably ran to its end; True if it passed."""
        printed, kept = False, []
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout" and nonce in out.text:
                printed = True
                out.text = out.text.replace(nonce + "\n", "").replace(nonce, "")
                if not out.text:
                    continue
            if out.output_type in ("execute_result", "display_data") and "text/plain" in out.get("data", {}):
                continue  # no partial credit from outputs a kernel can fabricate
            kept.append(out)
        failed = any(o.output_type == "error" or (o.output_type == "stream" and o.name == "stderr") for o in kept)
        cell.outputs = kept
        if not printed and not failed:  # no error shown, yet the test did not finish: its traceback was hidden
            gid = cell.metadata["nbgrader"]["grade_id"]
            self.report["problems"].append(f"test cell '{gid}' did not run to its end (its error was hidden?)")
            cell.outputs.insert(0, self._error("GradingError", "the test did not run to its end"))
        return printed and not failed

    def _summarise(self, nb) -> None:
        problems = self.report["problems"]
        for cell in nb.cells:
            where = self._where(cell)
            for out in cell.get("outputs", []):
                text = f"{out.get('ename', '')} {out.get('evalue', '')}" if out.output_type == "error" else ""
                if out.get("ename") == "CellTimeoutError" and "ignored the interrupt" not in text:
                    problem = f"'{where}' interrupted after {self.timeout} s"
                elif any(m in text for m in MEMORY_ERRORS):
                    problem = f"memory limit ({self.memory_mb} MB) reached in '{where}'"
                elif out.get("ename") in ("ModuleNotFoundError", "ImportError") and _kind(cell) in ("test", "locked"):
                    problem = f"import failed in '{where}', a cell of the lab: {text.strip()[:200]}"
                    self.report.setdefault("environment", []).append(problem)
                elif out.get("ename") in ("ModuleNotFoundError", "ImportError"):
                    problem = f"a package import failed in the submission's code: {text.strip()[:200]}"
                elif out.output_type == "stream" and out.name == "stderr" and is_grade(cell):
                    problem = f"test cell '{where}' wrote to stderr (nbgrader scores that 0)"
                else:
                    continue
                if problem not in problems:
                    problems.append(problem)
        if self.report["died"]:
            self.report["problems"].insert(0, self.report["died"])
        if self.report["not_run"]:
            self.report["problems"].append(f"{len(self.report['not_run'])} test cells not run")
