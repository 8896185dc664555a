"""A jail for running untrusted student code: Linux namespaces, bind mounts and rlimits.

The grader (:mod:`course_utils.grading`) starts each student's Jupyter kernel
inside a jail made with nothing but the kernel and util-linux's ``unshare``:

* new mount, PID, network, IPC and UTS namespaces (``unshare --mount
  --propagation private --net --pid --fork --kill-child --ipc --uts``; when the
  grader is not root a user namespace is added with ``--user --map-root-user``);
* a fresh, read-only ``tmpfs`` root holding only read-only bind mounts of what
  Python needs (``/usr``, a few files of ``/etc``, the interpreter, the virtual
  environment, the course package) plus one writable scratch folder for this
  submission; the old root is unmounted (``pivot_root``), so the gradebook,
  other students' files and the instructor's home are simply not there;
* no network: the new network namespace has only a loopback device, left down,
  so even ``127.0.0.1`` and ``[::1]`` are unreachable;
* privileges dropped before any student code runs: a separate unprivileged
  uid per grading slot (or, without root, every capability dropped),
  ``no_new_privs``, an empty capability bounding set;
* limits: ``RLIMIT_DATA`` caps memory (unlike ``RLIMIT_AS`` it ignores the
  address space that threads and allocators reserve but never touch),
  ``RLIMIT_NPROC`` processes, ``RLIMIT_FSIZE`` file size; the caller enforces a
  wall-clock limit by killing the jail: a small init process (pid 1 of the new
  PID namespace) dies with ``unshare`` and takes every process of the jail with it.

This is the technique of bubblewrap and ``unshare(1)``'s own examples (see
namespaces(7), pivot_root(2), setrlimit(2)), written out so that CI needs no
extra package. The jail's set-up stage runs this file as a script
(``python -I -S sandbox.py SPEC``) before dropping privileges, so the module
imports only the standard library; :func:`jupyter_classes` defines, on first
use, the two Jupyter classes the grader plugs into nbgrader: a kernel manager
that starts its kernel in a jail, and nbgrader's Execute preprocessor hardened
with nonces (see its docstring).

    >>> ok, why = available()                      # doctest: +SKIP
    >>> cmd = jail_command(["python", "-c", "print(1)"], JailSpec(scratch="/tmp/x"))  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import signal
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["JailSpec", "available", "jail_command", "python_paths", "describe_status", "jupyter_classes"]

# Linux constants (include/uapi/linux/mount.h, prctl.h, capability.h)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 28, 38, 47
SECBITS_LOCKED_NOROOT = 0x2F  # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED and their locks
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}

# Devices and /etc files the jail gets (read-only); missing ones are skipped.
DEVICES = ("null", "zero", "full", "random", "urandom")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "hosts",
       "localtime", "alternatives", "ssl", "ca-certificates", "fonts", "mime.types", "matplotlibrc")
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass
class JailSpec:
    """What one jail may see and use.

    Args:
        scratch: the only writable folder (this submission's copy); it appears at
            the same path inside the jail.
        workdir: the working directory inside the jail (default ``scratch``).
        readonly: extra paths bound read-only at the same path (the interpreter,
            the virtual environment and the course package; see :func:`python_paths`).
        memory_mb: ``RLIMIT_DATA`` in MiB (0 = no limit).
        uid: the unprivileged uid (and gid) the code runs as when the grader is root.
        nproc: ``RLIMIT_NPROC`` (processes and threads of ``uid``).
        fsize_mb: largest file the code may write, in MiB.
        tmp_mb: size of the jail's ``/tmp`` and ``/dev/shm`` (each a tmpfs), in MiB.
        env: the whole environment of the jailed program (nothing is inherited).
        status_file: where the jail's init writes how the program ended (outside
            the jail; the jailed code cannot reach it).
    """

    scratch: str
    workdir: str = ""
    readonly: list[str] = field(default_factory=list)
    memory_mb: int = 0
    uid: int = 62000
    nproc: int = 512
    fsize_mb: int = 1024
    tmp_mb: int = 256
    env: dict[str, str] = field(default_factory=dict)
    status_file: str = ""


def python_paths() -> list[str]:
    """The folders this interpreter needs: its installation, the virtual
    environment and the course package (e.g. ``['/usr/local', '/repo/.venv', '/repo/course_utils']``)."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    here = os.path.dirname(os.path.realpath(__file__))  # course_utils/ (an editable install points here)
    paths.add(here)
    exe = os.path.realpath(sys.executable)
    if not any(exe.startswith(p + os.sep) for p in paths):
        paths.add(os.path.dirname(exe))
    return sorted(paths)


def _unshare_args() -> list[str]:
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    args = [unshare, "--mount", "--propagation", "private", "--net", "--pid", "--fork",
            "--kill-child", "--ipc", "--uts"]
    if os.geteuid() != 0:
        args += ["--user", "--map-root-user"]
    return args


def jail_command(argv: list[str], spec: JailSpec, spec_path: str | None = None) -> list[str]:
    """The command that runs ``argv`` inside a jail described by ``spec``.

    ``spec`` is written as JSON to ``spec_path`` (default: ``spec.status_file``
    with ``.spec.json``), a place the jail cannot see. Example::

        subprocess.run(jail_command(["/usr/bin/id"], JailSpec(scratch=d, status_file=f)))
    """
    if not argv:
        raise ValueError("argv must name a program, got an empty list")
    if not os.path.isabs(spec.scratch):
        raise ValueError(f"scratch must be an absolute path, got {spec.scratch!r}")
    if not spec_path and not spec.status_file:
        raise ValueError("give spec_path or spec.status_file: the jail's files go next to it")
    spec_path = spec_path or spec.status_file + ".spec.json"
    with open(spec_path, "w") as f:
        json.dump({**asdict(spec), "argv": list(argv)}, f)
    return _unshare_args() + [sys.executable, "-I", "-S", os.path.realpath(__file__), spec_path]


_AVAILABLE: tuple[bool, str] | None = None


def available() -> tuple[bool, str]:
    """Whether jails work here, and why not: ``(True, "…")`` or ``(False, reason)``.

    The check runs a jailed probe that must see no network, no ``/root`` and
    run unprivileged; the answer is cached for the process.
    """
    global _AVAILABLE
    if _AVAILABLE is not None:
        return _AVAILABLE
    if platform.system() != "Linux":
        _AVAILABLE = (False, f"the sandbox needs Linux namespaces; this is {platform.system()}")
        return _AVAILABLE
    if not shutil.which("unshare"):
        _AVAILABLE = (False, "the sandbox needs util-linux's `unshare`, which is not on PATH")
        return _AVAILABLE
    with tempfile.TemporaryDirectory(prefix="jail-probe-") as tmp:
        scratch = os.path.join(tmp, "scratch")
        os.mkdir(scratch)
        outside = os.path.join(tmp, "outside")
        open(outside, "w").close()
        probe = (
            "import os, socket\n"
            "s = socket.socket(); s.settimeout(2)\n"
            "try:\n    s.connect(('127.0.0.1', 9)); net = 'reachable'\n"  # loopback only
            "except OSError:\n    net = 'blocked'\n"
            f"print(net, os.path.exists({outside!r}), os.geteuid(), sep='|')\n"
        )
        if os.geteuid() == 0:
            os.chown(scratch, 62999, 62999)
        spec = JailSpec(scratch=scratch, readonly=python_paths(), uid=62999, memory_mb=1024,
                        status_file=os.path.join(tmp, "status"), env={"PATH": "/usr/bin:/bin"})
        try:
            done = subprocess.run(jail_command([sys.executable, "-I", "-S", "-c", probe], spec),
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            _AVAILABLE = (False, f"the sandbox probe failed to run: {e}")
            return _AVAILABLE
    out = done.stdout.strip().split("|")
    if done.returncode != 0 or len(out) != 3:
        _AVAILABLE = (False, f"the sandbox probe failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
    elif out[0] != "blocked":
        _AVAILABLE = (False, "the sandbox probe could reach 127.0.0.1: no network isolation")
    elif out[1] != "False":
        _AVAILABLE = (False, "the sandbox probe could see the host's files")
    elif os.geteuid() == 0 and out[2] == "0":
        _AVAILABLE = (False, "the sandbox probe still ran as root")
    else:
        how = "unprivileged uid" if os.geteuid() == 0 else "user namespace without capabilities"
        _AVAILABLE = (True, f"unshare namespaces (mount, pid, net, ipc, uts), private root, {how}")
    return _AVAILABLE


def describe_status(path: str) -> str:
    """How a jailed program ended, from its init's status file, in words
    (e.g. ``'killed by signal 9 (SIGKILL)'``); ``''`` when unknown."""
    try:
        with open(path) as f:
            status = int(f.read().strip() or "x")
    except (OSError, ValueError):
        return ""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by signal {sig} ({signal.Signals(sig).name})"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return f"ended with status {status}"


# ---------------------------------------------------------------------------
# Jupyter: a kernel manager that jails its kernel, nbgrader's Execute with nonces
# ---------------------------------------------------------------------------

MEMORY_ERRORS = ("MemoryError", "DefaultCPUAllocator", "Cannot allocate memory", "std::bad_alloc")


def _jail_env(scratch: str, threads: int) -> dict[str, str]:
    """The whole environment of a student's kernel: nothing of the grader's is inherited."""
    home = os.path.join(scratch, "home")
    env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
           "HOME": home, "USER": "student", "LOGNAME": "student", "LANG": "C.UTF-8", "TMPDIR": "/tmp",
           "MPLCONFIGDIR": os.path.join(home, ".matplotlib"), "HF_HUB_OFFLINE": "1",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1", "NBGRADER_EXECUTION": "autograde"}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    if "PYTHONHASHSEED" in os.environ:
        env["PYTHONHASHSEED"] = os.environ["PYTHONHASHSEED"]
    return env


def _unsandboxed_limits(memory_mb: int):
    def apply() -> None:
        import resource

        if memory_mb:
            resource.setrlimit(resource.RLIMIT_DATA, (memory_mb * 2**20,) * 2)
    return apply


_CLASSES: dict[str, type] = {}


def jupyter_classes() -> dict[str, type]:
    """Define the Jupyter classes on first use (importing nbgrader takes seconds)."""
    if _CLASSES:
        return _CLASSES
    from jupyter_client.manager import AsyncKernelManager
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbformat import NotebookNode
    from nbgrader.preprocessors import Execute
    from nbgrader.utils import is_grade
    from traitlets import Bool, Float, Int, Unicode

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
            if not self.jail and os.name == "posix":
                kw["preexec_fn"] = _unsandboxed_limits(self.memory_mb)
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
          whole submission; ``report`` says what happened.
        """

        notebook_timeout = Float(600, help="wall-clock limit for the whole notebook, in seconds").tag(config=True)
        sandbox = Bool(True, help="run the kernel in a jail").tag(config=True)
        memory_mb = Int(4096, help="memory limit of the kernel (RLIMIT_DATA), MiB").tag(config=True)
        scratch = Unicode("", help="the jail's writable folder").tag(config=True)
        control = Unicode("", help="grader-only folder for reports").tag(config=True)
        uid = Int(62000, help="unprivileged uid of the kernel (grader running as root)").tag(config=True)
        threads = Int(1, help="BLAS/OpenMP threads of the kernel").tag(config=True)
        run_all = Bool(False, help="also run the cells after the last test cell").tag(config=True)

        def create_kernel_manager(self):
            self.km = SandboxKernelManager(
                kernel_name=self.kernel_name or "python3", config=self.config, scratch=self.scratch,
                control=self.control, jail=self.sandbox, memory_mb=self.memory_mb, uid=self.uid,
                threads=self.threads, deadline=self.notebook_timeout)
            return self.km

        def preprocess(self, nb, resources=None, km=None):
            from nbclient.client import NotebookClient

            NotebookClient.__init__(self, nb, km)
            self.reset_execution_trackers()
            self._check_assign_resources(resources)
            self._prepare_scratch(resources)
            tests = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and is_grade(c)]
            last = len(nb.cells) - 1 if self.run_all else max(tests, default=-1)
            armed = {}
            for i in tests:
                nonce = secrets.token_hex(16)
                armed[i] = (nonce, nb.cells[i].source)
                nb.cells[i].source = nb.cells[i].source + f"\nprint({nonce!r})\n"
            self.report = {"problems": [], "not_run": [], "died": None}
            try:
                with self.setup_kernel():
                    info = self.wait_for_reply(self.kc.kernel_info())
                    nb.metadata["language_info"] = info["content"]["language_info"]
                    for index, cell in enumerate(nb.cells[: last + 1]):
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
                            self.report["died"] = (f"timeout: '{self._where(cell)}' ran past {self.timeout} s and "
                                                   "ignored the interrupt; the kernel was stopped")
                            cell.outputs.append(self._error("CellTimeoutError", self.report["died"]))
            except Exception as e:  # noqa: BLE001 - a kernel that never started, or failed the client
                if not self.report["died"]:
                    self.report["died"] = f"the kernel failed: {type(e).__name__}: {str(e)[:200]}{self._log_tail()}"
                for cell in nb.cells[: last + 1]:
                    if cell.cell_type == "code" and not cell.get("outputs"):
                        self._not_run(cell)
            finally:
                for i, (nonce, source) in armed.items():
                    nb.cells[i].source = source
                    self._judge(nb.cells[i], nonce)
            self._summarise(nb)
            self.set_widgets_metadata()
            if self.control:
                Path(self.control, "execution.json").write_text(json.dumps(self.report))
            return nb, self.resources

        def _prepare_scratch(self, resources) -> None:
            """Copy the submission's folder (files only, no notebooks, no links) into the scratch."""
            work = Path(self.scratch, "work")
            for sub in ("work", "home", "ipc"):
                Path(self.scratch, sub).mkdir(parents=True, exist_ok=True)
            source = (resources or {}).get("metadata", {}).get("path") or "."
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

        def _judge(self, cell, nonce: str) -> None:
            """Keep the points of a test cell only if it demonstrably ran to its end."""
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
            if not printed and not failed:
                gid = cell.metadata["nbgrader"]["grade_id"]
                self.report["problems"].append(f"test cell '{gid}' did not run to its end (its error was hidden?)")
                cell.outputs.insert(0, self._error("GradingError", "the test did not run to its end"))
            elif not printed:
                cell.outputs.insert(0, self._error("GradingError", "the test did not run to its end"))

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

    _CLASSES.update(SandboxKernelManager=SandboxKernelManager, SandboxedExecute=SandboxedExecute)
    return _CLASSES


def __getattr__(name: str):
    if name in ("SandboxKernelManager", "SandboxedExecute"):
        return jupyter_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------
# Inside the jail: run as a script by `unshare`, as root of the new namespaces.
# ----------------------------------------------------------------------------

_libc = None


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _bind(src: str, target: str, writable: bool) -> None:
    """Bind ``src`` onto ``target`` (created as a file or folder), read-only unless ``writable``."""
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "w").close()
    _mount(src, target, None, MS_BIND)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY)
    _mount(None, target, None, flags)


def _drop_privileges(spec: dict, real_root: bool) -> None:
    for cap in range(64):  # empty the bounding set (stops at the first unknown capability)
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
            break
    _libc.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    if real_root:  # the machine's root: become an unprivileged uid of our own
        uid = spec["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    else:  # root of a user namespace: keep uid 0 there, give up every capability
        _check(_libc.prctl(PR_SET_SECUREBITS, SECBITS_LOCKED_NOROOT, 0, 0, 0), "securebits")
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capset(header, data), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _real_root() -> bool:
    """True when uid 0 here is the machine's root (no user namespace)."""
    try:
        with open("/proc/self/uid_map") as f:
            first = f.read().split()
        return first[:3] == ["0", "0", "4294967295"]
    except OSError:
        return False


def _limits(spec: dict) -> None:
    import resource

    mb = 1024 * 1024
    if spec["memory_mb"]:
        resource.setrlimit(resource.RLIMIT_DATA, (spec["memory_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (spec["nproc"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["fsize_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _enter(spec_path: str) -> None:
    """Build the jail's root, pivot into it, fork the program unprivileged, reap, report."""
    global _libc
    _libc = ctypes.CDLL(None, use_errno=True)
    with open(spec_path) as f:
        spec = json.load(f)
    real_root = _real_root()
    status = os.open(spec["status_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if spec["status_file"] else -1

    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates to the host
    root = tempfile.mkdtemp(prefix="jail-root-", dir=os.path.dirname(spec_path))
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    small = f"size={int(spec['tmp_mb'])}m,mode=1777"
    for tmpfs in ("/tmp", "/dev/shm"):
        os.makedirs(root + tmpfs, exist_ok=True)
        _mount("tmpfs", root + tmpfs, "tmpfs", MS_NOSUID | MS_NODEV, small)
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            target = f"{root}/dev/{name}"
            open(target, "w").close()
            _mount("/dev/" + name, target, None, MS_BIND)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"{root}/dev/{name}")
    os.symlink("/proc/self/fd", f"{root}/dev/fd")
    os.makedirs(root + "/etc")  # users: only the jail's own, not the host's list
    uid, home = spec["uid"] if real_root else 0, spec["env"].get("HOME", "/")
    with open(root + "/etc/passwd", "w") as f:
        f.write(f"root:x:0:0:root:/root:/bin/sh\nstudent:x:{uid}:{uid}:student:{home}:/bin/sh\n")
    with open(root + "/etc/group", "w") as f:
        f.write(f"root:x:0:\nstudent:x:{uid}:\n")
    os.makedirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)

    bound: list[str] = []
    paths = list(SYSTEM) + ["/etc/" + e for e in ETC] + list(spec["readonly"])
    for path in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if not os.path.exists(path) or any(path.startswith(b + "/") for b in bound):
            continue  # missing, or already visible through a read-only parent
        if os.path.islink(path) and path in SYSTEM:  # merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(path), root + path)
        else:
            _bind(os.path.realpath(path), root + path, writable=False)
            bound.append(path)
    _bind(spec["scratch"], root + spec["scratch"], writable=True)

    os.chdir(root)
    os.makedirs(root + "/.old")
    _check(_libc.syscall(PIVOT_ROOT[platform.machine()], b".", b".old"), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)

    pid = os.fork()
    if pid == 0:  # the program: unprivileged, limited, alone
        try:
            os.setsid()
            _limits(spec)
            _drop_privileges(spec, real_root)
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            os.chdir(spec["workdir"] or spec["scratch"])
            os.umask(0o022)
            os.execve(spec["argv"][0], spec["argv"], spec["env"])
        except BaseException as e:  # noqa: BLE001 - report and leave; nothing to clean up
            os.write(2, f"jail: cannot start {spec['argv'][0]}: {e}\n".encode())
            os._exit(127)
    # init of the PID namespace: reap orphans until the program ends, then end the jail
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            done, code = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if done == pid:
            if status >= 0:
                os.write(status, str(code).encode())
                os.close(status)
            os._exit(os.WEXITSTATUS(code) if os.WIFEXITED(code) else 128 + os.WTERMSIG(code))


if __name__ == "__main__":
    _enter(sys.argv[1])
