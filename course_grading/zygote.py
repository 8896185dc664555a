"""A warm process that starts jailed Python programs by forking, not by starting an interpreter.

The integrity check (:mod:`course_grading.integrity`) runs each submission's tests a
second time in a fresh, jailed Python process. Starting that process costs more than
the grading around it: the interpreter, then ``import torch`` (about 1.5 s of CPU here)
and, for some labs, ``transformers`` (3 s more). A :class:`Zygote` pays that once per
grading worker: it is a clean Python process, started by the worker, that imports the
lab's modules and then only forks. For each check it makes a child that

1. enters new mount, PID, network, IPC and UTS namespaces (``unshare(2)``) and forks
   the jail's init, which builds the same private root as a jail made by
   :func:`course_grading.sandbox.jail_command` (:func:`course_grading.sandbox._enter`);
2. in the program process: drops privileges and applies the limits as that jail does,
   closes every file descriptor but the two pipes it was handed (``SCM_RIGHTS``) and
   runs the check's Python code in itself, with the modules already imported.

What the child sees is what a jail started from scratch would see: the zygote never runs
student code and never sees a notebook (cells travel over the child's own pipe), so its
memory holds only imported modules and the folder names of earlier checks. It runs as
root only because the jail needs it (the child drops to the slot's uid); without root,
or when it cannot start, the caller falls back to starting a fresh interpreter.

Protocol (one ``AF_UNIX`` socket pair): the worker sends a JSON message naming the jail's
spec file and the program's code, with the program's stdin and result descriptors
attached; the zygote answers ``{"pid": N}`` with a pidfd of the child attached (signals
through a pidfd cannot reach a reused pid). Example::

    z = Zygote(["torch"], env)                      # doctest: +SKIP
    child, results = z.spawn(spec_path, HARNESS)    # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

__all__ = ["PER_CHECK", "Zygote", "Child", "usable"]

#: The variables that differ from one forked program to the next (its home folder): the rest of the
#: environment must be the zygote's, which its imports saw.
PER_CHECK = ("HOME", "MPLCONFIGDIR")

# The zygote's own code: run as ``python -I -c SERVE SANDBOX_PY CONTROL_FD PARENT_PID MODULES_JSON``.
SERVE = r'''
import ctypes, importlib.util, json, os, select, signal, socket, sys

SANDBOX, CONTROL, PARENT, MODULES = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: go with the worker
if os.getppid() != PARENT:
    os._exit(1)
spec = importlib.util.spec_from_file_location("_jail", SANDBOX)
jail = sys.modules["_jail"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(jail)
for name in MODULES:  # the lab's imports, once for every check this worker runs
    try:
        __import__(name)
    except BaseException:
        pass
control = socket.socket(fileno=CONTROL)
FLAGS = 0x00020000 | 0x04000000 | 0x08000000 | 0x20000000 | 0x40000000  # mount, uts, ipc, pid, net


def program(job, stdin_fd, result_fd):
    """In the jail, unprivileged: become the check's Python program (integrity.HARNESS, say)."""
    def run(spec):
        os.dup2(stdin_fd, 0)
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, os.sysconf("SC_OPEN_MAX"))
        os.environ.clear()
        os.environ.update(spec["env"])
        sys.argv[:] = ["-c", str(result_fd)]
        code = job.pop("code")
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    return run


def child(job, stdin_fd, result_fd):
    os.setsid()  # signal dispositions stay those of a fresh interpreter: the zygote changes none
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # go with the zygote
    if libc.unshare(FLAGS) != 0:
        os._exit(126)
    init = os.fork()
    if init == 0:  # pid 1 of the new namespace: the jail's init, then the program
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # go with this child, as unshare --kill-child does
        jail._enter(job["spec"], run=program(job, stdin_fd, result_fd))
        os._exit(1)
    os.close(stdin_fd)
    os.close(result_fd)
    _, status = os.waitpid(init, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


control.sendall(b'{"ready": true}\n')
while True:
    while True:  # reap the children that ended
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    if not select.select([control], [], [], 1.0)[0]:
        continue
    message, fds, _, _ = socket.recv_fds(control, 65536, 2)
    if not message:
        os._exit(0)
    job = json.loads(message)
    pid = os.fork()
    if pid == 0:
        control.close()
        try:
            child(job, fds[0], fds[1])
        finally:
            os._exit(125)
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    socket.send_fds(control, [json.dumps({"pid": pid}).encode() + b"\n"], [pidfd])
    os.close(pidfd)
    del job, message
'''


def usable() -> bool:
    """Whether this process can use a zygote: Linux with pidfds, and root (the jail's
    namespaces are made without a user namespace, which a forked child could not enter)."""
    return (sys.platform == "linux" and os.geteuid() == 0 and hasattr(os, "pidfd_open")
            and hasattr(signal, "pidfd_send_signal") and hasattr(socket, "send_fds"))


class Child:
    """A jailed program forked by a :class:`Zygote`: ``stdin`` (a binary file), ``pid``,
    :meth:`kill` and :meth:`wait`, like the part of ``subprocess.Popen`` the check uses."""

    def __init__(self, pid: int, pidfd: int, stdin_fd: int):
        self.pid, self.pidfd = pid, pidfd
        self.stdin = os.fdopen(stdin_fd, "wb")
        self.returncode: int | None = None

    def kill(self) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the child has ended (its pidfd becomes readable): 0, or None on timeout (its
        exit status is its parent's, the zygote's, to collect; how the program ended is in the jail's
        status file)."""
        if self.returncode is None and select.select([self.pidfd], [], [], timeout)[0]:
            self.returncode = 0
            os.close(self.pidfd)
            self.pidfd = -1
        return self.returncode


class Zygote:
    """The warm process of one grading worker for one set of modules and one environment.

    Args:
        modules: imported once, before any fork (a lab's imports: ``["torch", ...]``).
        env: the environment of the programs; ``HOME`` is replaced by a folder of the
            zygote's, which each child's jail binds onto its own scratch's ``home``
            (what was imported keeps pointing at a home that works).
    """

    def __init__(self, modules: list[str], env: dict[str, str]):
        from course_grading import sandbox

        self.modules = list(modules)
        self.folder = tempfile.mkdtemp(prefix="zygote-")
        self.home = os.path.join(self.folder, "home")
        os.mkdir(self.home)
        self.env = self.environment(env)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", SERVE, os.path.abspath(sandbox.__file__), str(theirs.fileno()),
             str(os.getpid()), json.dumps(self.modules)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),), env=self.env, cwd=self.folder, start_new_session=True,
            preexec_fn=sandbox.dies_with_grader())
        theirs.close()
        self.control = ours
        self._ready = False
        atexit.register(self.close)

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with this zygote's home folder (:data:`PER_CHECK`), for a program it forks."""
        return {**env, "HOME": self.home, "MPLCONFIGDIR": os.path.join(self.home, ".matplotlib")}

    def ready(self, timeout: float = 0) -> bool:
        """Whether the zygote has imported its modules and takes requests (waits up to ``timeout`` s)."""
        with self.lock:
            return self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> bool:
        if not self._ready and select.select([self.control], [], [], timeout)[0]:
            self._ready = self.control.recv(64).startswith(b'{"ready": true}')
            if not self._ready:
                raise OSError("the zygote ended before it was ready")
        return self._ready

    def spawn(self, spec_path: str, code: str, timeout: float = 120) -> tuple[Child, int]:
        """Fork a jailed program that runs ``code`` (Python source; ``sys.argv[1]`` is the
        number of its result descriptor) in the jail of ``spec_path`` (written by
        :func:`course_grading.sandbox.jail_command`). Returns the child (write its stdin) and
        the read end of its result descriptor. Raises ``OSError`` when the zygote fails."""
        stdin_r, stdin_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            with self.lock:
                if not self._wait_ready(timeout):
                    raise OSError("the zygote did not start in time")
                socket.send_fds(self.control, [json.dumps({"spec": spec_path, "code": code}).encode()],
                                [stdin_r, result_w])
                if not select.select([self.control], [], [], 30)[0]:
                    raise OSError("the zygote did not answer")
                message, fds, _, _ = socket.recv_fds(self.control, 4096, 1)
            if not message or not fds:
                raise OSError("the zygote ended")
        except BaseException:
            os.close(stdin_w)
            os.close(result_r)
            raise
        finally:
            os.close(stdin_r)
            os.close(result_w)
        return Child(json.loads(message)["pid"], fds[0], stdin_w), result_r

    def close(self) -> None:
        """Stop the zygote (its children go with it) and remove its folder."""
        try:
            self.proc.kill()
            self.proc.wait()
        except OSError:
            pass
        self.control.close()
        shutil.rmtree(self.folder, ignore_errors=True)
