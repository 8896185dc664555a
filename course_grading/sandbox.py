"""A jail for running untrusted student code: Linux namespaces, bind mounts and rlimits.

The grader (:mod:`course_grading.autograde`) starts each student's Jupyter kernel
inside a jail made with nothing but the kernel and util-linux's ``unshare``:

* new mount, PID, network, IPC and UTS namespaces (``unshare --mount
  --propagation private --net --pid --fork --kill-child --ipc --uts``; when the
  grader is not root a user namespace is added with ``--user --map-root-user``);
* a fresh, read-only ``tmpfs`` root holding only read-only bind mounts of what
  Python needs (``/usr``, a few files of ``/etc``, the interpreter, the virtual
  environment, the course package) plus one writable scratch folder for this
  submission; the old root is unmounted (``pivot_root``), so the gradebook,
  other students' files and the instructor's home are simply not there;
* no network: the new network namespace has only its own loopback device,
  which the jail brings up (an ``ioctl``, no ``ip`` command needed) so that a
  lab can run several processes that talk over ``127.0.0.1`` (``torch.distributed``
  with Gloo); it has no other interface and no route, and its ``127.0.0.1`` is
  not the grading machine's, so nothing outside the jail, not even the host's
  loopback services, can be reached; names resolve from the jail's files only
  (its own ``nsswitch.conf``: no DNS lookups that could only fail);
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
imports only the standard library. The Jupyter side, a kernel manager that
starts its kernel in a jail and nbgrader's Execute preprocessor hardened with
nonces, is :mod:`course_grading.kernel`.

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
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

__all__ = ["JailSpec", "available", "jail_command", "jail_env", "python_paths", "describe_status", "dies_with_grader"]

# Linux constants (include/uapi/linux/mount.h, prctl.h, capability.h)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 28, 38, 47
SECBITS_LOCKED_NOROOT = 0x2F  # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED and their locks
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1  # include/uapi/linux/sockios.h, if.h
IFREQ = "16sh22x"  # struct ifreq: the interface name, then ifr_flags in a 24-byte union
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}

# Devices and /etc files the jail gets (read-only); missing ones are skipped.
DEVICES = ("null", "zero", "full", "random", "urandom")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "hosts",
       "localtime", "alternatives", "ssl", "ca-certificates", "fonts", "mime.types", "matplotlibrc")
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The jail's own name service: its files only. With no way out, asking DNS only fails, and a
# failed DNS lookup is an error (EAI_AGAIN) where "not found" falls back to the numeric address:
# Gloo's TCP store, which names each client it accepts (``::ffff:127.0.0.1``), would warn on stderr.
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\n"


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
        home: a second path at which the scratch's ``home`` folder appears,
            writable (a warm process's home, :mod:`course_grading.zygote`);
            empty: none.
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
    home: str = ""


def python_paths() -> list[str]:
    """The folders a student's kernel needs: this interpreter's installation, the
    virtual environment and the course package the labs import
    (e.g. ``['/repo/.venv', '/repo/course_utils', '/usr/local']``). The grading
    toolkit itself is not among them: nothing in the jail needs it."""
    import importlib.util

    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    spec = importlib.util.find_spec("course_utils")  # an editable install points outside the environment
    for folder in (spec.submodule_search_locations or []) if spec else []:
        paths.add(os.path.realpath(folder))
    exe = os.path.realpath(sys.executable)
    if not any(exe.startswith(p + os.sep) for p in paths):
        paths.add(os.path.dirname(exe))
    return sorted(paths)


def jail_env(scratch: str, threads: int) -> dict[str, str]:
    """The whole environment of a student's kernel (or check run, or preflight) with its
    scratch folder ``scratch``: nothing of the grader's is inherited."""
    home = os.path.join(scratch, "home")
    env = {"PATH": os.pathsep.join([str(os.path.dirname(sys.executable)), "/usr/local/bin", "/usr/bin", "/bin"]),
           "HOME": home, "USER": "student", "LOGNAME": "student", "LANG": "C.UTF-8", "TMPDIR": "/tmp",
           "MPLCONFIGDIR": os.path.join(home, ".matplotlib"), "HF_HUB_OFFLINE": "1",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1", "NBGRADER_EXECUTION": "autograde"}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    if "PYTHONHASHSEED" in os.environ:
        env["PYTHONHASHSEED"] = os.environ["PYTHONHASHSEED"]
    return env


def _unshare_args() -> list[str]:
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    args = [unshare, "--mount", "--propagation", "private", "--net", "--pid", "--fork",
            "--kill-child", "--ipc", "--uts"]
    if os.geteuid() != 0:
        args += ["--user", "--map-root-user"]
    return args


def dies_with_grader(then: Callable[[], None] | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` for every process the grader starts (a jail's ``unshare``, an
    unsandboxed kernel, a grading worker): the process gets SIGKILL when the grader's
    thread that started it dies, so a grader that is killed (``kill -9``, a closed
    terminal) leaves no student code running. A jail goes with its ``unshare``: the
    jail's init has ``--kill-child``, and a pid namespace dies with its init. ``then``,
    if given, runs next (another ``preexec_fn``). Does nothing but ``then`` off Linux.

    Example: ``subprocess.Popen(argv, preexec_fn=dies_with_grader())``.
    """
    if platform.system() != "Linux":
        return then or (lambda: None)
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded before the fork

    def apply() -> None:
        die_with_parent(parent, prctl)
        if then is not None:
            then()
    return apply


def die_with_parent(parent: int, prctl: Callable[..., int] | None = None) -> None:
    """Have this process SIGKILLed when its parent ``parent`` (the thread of it that
    started this process) dies, and exit at once if it already has. Linux only."""
    prctl = prctl or ctypes.CDLL(None, use_errno=True).prctl
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


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
        host = socket.socket()  # a listener on the host's loopback, which the jail must not reach
        host.bind(("127.0.0.1", 0))
        host.listen()
        probe = (
            "import os, socket\n"
            "s = socket.socket(); s.settimeout(2)\n"
            f"try:\n    s.connect(('127.0.0.1', {host.getsockname()[1]})); net = 'reachable'\n"
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
        finally:
            host.close()
    out = done.stdout.strip().split("|")
    if done.returncode != 0 or len(out) != 3:
        _AVAILABLE = (False, f"the sandbox probe failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
    elif out[0] != "blocked":
        _AVAILABLE = (False, "the sandbox probe could reach the host's 127.0.0.1: no network isolation")
    elif out[1] != "False":
        _AVAILABLE = (False, "the sandbox probe could see the host's files")
    elif os.geteuid() == 0 and out[2] == "0":
        _AVAILABLE = (False, "the sandbox probe still ran as root")
    else:
        how = "unprivileged uid" if os.geteuid() == 0 else "user namespace without capabilities"
        _AVAILABLE = (True, f"unshare namespaces (mount, pid, net with its own loopback only, ipc, uts), "
                            f"private root, {how}")
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


def _loopback_up() -> None:
    """Bring up ``lo`` of the jail's own network namespace (``ip link set lo up``,
    done with the ``SIOCSIFFLAGS`` ioctl so that no package is needed). The
    namespace has no other interface, so this gives the jail a ``127.0.0.1`` of
    its own and no way out."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            _, flags = struct.unpack(IFREQ, fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack(IFREQ, b"lo", 0)))
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))
        except OSError as e:
            raise OSError(e.errno, f"cannot bring up the loopback interface of the jail's network namespace: "
                                   f"{e.strerror}") from None


def _enter(spec_path: str, run: Callable[[dict], None] | None = None) -> None:
    """Build the jail's root, pivot into it, fork the program unprivileged, reap, report.

    The program is ``spec["argv"]`` (``execve``), or ``run(spec)`` when given: a warm
    process's child (:mod:`course_grading.zygote`) runs its code without a new interpreter."""
    global _libc
    _libc = ctypes.CDLL(None, use_errno=True)
    with open(spec_path) as f:
        spec = json.load(f)
    real_root = _real_root()
    status = os.open(spec["status_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if spec["status_file"] else -1
    _build_root(spec, os.path.dirname(spec_path), real_root)

    pid = os.fork()
    if pid == 0:  # the program: unprivileged, limited, alone
        try:
            os.setsid()
            _limits(spec)
            _drop_privileges(spec, real_root)
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            os.chdir(spec["workdir"] or spec["scratch"])
            os.umask(0o022)
            if run is not None:
                if status >= 0:
                    os.close(status)
                run(spec)
                os._exit(0)
            os.execve(spec["argv"][0], spec["argv"], spec["env"])
        except SystemExit as e:
            os._exit(e.code if isinstance(e.code, int) else 1)
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


def _build_root(spec: dict, near: str, real_root: bool) -> None:
    """In fresh mount and network namespaces: bring up the loopback, make the jail's root in a
    tmpfs (a folder made in ``near``) and pivot into it, read-only but for the scratch folder
    (``real_root``: the machine's root runs this, not a user namespace's)."""
    _loopback_up()
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates to the host
    root = tempfile.mkdtemp(prefix="jail-root-", dir=near)
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
    with open(root + "/etc/nsswitch.conf", "w") as f:
        f.write(NSSWITCH)
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
    if spec.get("home"):
        _bind(os.path.join(spec["scratch"], "home"), root + spec["home"], writable=True)

    os.chdir(root)
    os.makedirs(root + "/.old")
    _check(_libc.syscall(PIVOT_ROOT[platform.machine()], b".", b".old"), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


if __name__ == "__main__":
    _enter(sys.argv[1])
