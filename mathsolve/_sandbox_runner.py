"""Trusted start-up half of the Python sandbox (see ``mathsolve.sandbox``).

``mathsolve.sandbox.run_python`` starts this file BY PATH in a fresh interpreter
(``python -I -B -X utf8 _sandbox_runner.py JOB_FILE STATUS_FD``), so it must not
import anything from the ``mathsolve`` package and must stay compatible with any
Python 3.8+ a user may point the sandbox at. It only uses the standard library.

Why the limits are applied here and not in the parent: the parent may be a heavily
threaded process (llama.cpp), where ``preexec_fn`` is unsafe. Everything below runs
in the sandbox's own process before one byte of untrusted code is compiled.

Process layout::

    parent (CLI)  --spawns-->  supervisor (this script; new session)
                                 | joins the pids cgroup, unshares namespaces,
                                 | sets rlimits, then forks:
                                 +--> child: PID 1 of the new PID namespace when
                                      available; mounts, drops capabilities, runs
                                      the untrusted code with exec() in an EMPTY
                                      globals dict.

The supervisor waits for the child and reports how it ended. When PID 1 of a PID
namespace exits, the kernel kills every other process of that namespace, so
nothing the code started can outlive it (new sessions included).

Status channel: one JSON object per line on STATUS_FD, separate from the code's
stdout/stderr. In order: ``{"setup": [...]}`` (supervisor), ``{"ready": [...]}``
(child, right before the code starts: the parent starts the wall clock here),
``{"result": {"status": ..., "error": ...}}`` (child, after the code), and
``{"exit": {...}}`` (supervisor, after the child is gone). The untrusted code runs
in the same process as the child, so it could write to STATUS_FD too; the parent
treats those lines as the code's own claims about itself, never as instructions.

Session mode (``mathsolve.sandbox.PythonSession``, job key ``"session"``): the
same confinement, then one long-lived worker that runs block after block in one
namespace::

    supervisor --forks--> init (PID 1 of the PID namespace: reaps orphans, forwards
                           |    SIGINT, reports the worker's death)
                           +--forks--> worker: reads one request per line on
                                       CONTROL_FD, runs it notebook-style, writes
                                       {"result": {"id": ...}} on STATUS_FD.

The parent holds the write ends of CONTROL_FD and of LIFELINE_FD; the supervisor
kills everything when the lifeline reaches end-of-file (the parent died), and the
worker exits when the control pipe does. A timed-out block gets SIGINT (parent ->
supervisor -> init -> worker), which becomes KeyboardInterrupt inside the block.

Warm mode (``mathsolve.sandbox.WarmPython``, job key ``"warm"``): the session
layout, with a zygote in the worker's place that forks one child per block (see
"warm zygote" below).
"""

from __future__ import annotations

import ast
import io
import json
import linecache
import os
import re
import resource
import select
import signal
import sys
import traceback
import types

try:  # ctypes is optional: without it we only lose the Linux namespace features.
    import ctypes
except ImportError:  # pragma: no cover - minimal interpreters only
    ctypes = None  # type: ignore[assignment]

LINUX = sys.platform.startswith("linux")

# clone(2) / unshare(2) flags.
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000

# statvfs f_flag bits -> the mount flags a read-only remount must keep (inside a
# user namespace the kernel refuses a remount that would clear a "locked" flag).
_KEEP_FLAGS = (
    (0x2, MS_NOSUID),
    (0x4, MS_NODEV),
    (0x8, MS_NOEXEC),
    (0x400, MS_NOATIME),
    (0x800, MS_NODIRATIME),
    (0x1000, MS_RELATIME),
)

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Exit codes of the child; the JSON result line is authoritative, these are the
# fallback when the code closed or clobbered the status descriptor.
EXIT_OK, EXIT_ERROR, EXIT_MEMORY, EXIT_SETUP = 0, 1, 3, 70

# A pathological exception message must not flood the status pipe. Head and tail
# are kept so that a caller's own "first N + ... + last N" truncation is unchanged.
_ERROR_KEEP = 2000
_TRACEBACK_KEEP = 10000  # the same for the full traceback, per end

# Frames of this file are the sandbox's, not the code's: tracebacks start below them.
_THIS_FILE = __file__


def _signal_handlers() -> dict:
    handlers = {}
    for signum in signal.valid_signals():
        try:
            handlers[signum] = signal.getsignal(signum)
        except (OSError, ValueError):
            pass
    return handlers


# The interpreter's own signal handlers, taken before this script changes any: a warm
# zygote's blocks get them back (SIGINT -> KeyboardInterrupt, SIGPIPE ignored, ...).
_STARTUP_HANDLERS = _signal_handlers()


class Reporter:
    """Writes status lines to the dedicated descriptor; never raises."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, obj: dict, fresh_line: bool = False) -> None:
        """``fresh_line``: end whatever partial line the code may have written first."""
        data = (("\n" if fresh_line else "") + json.dumps(obj) + "\n").encode("utf-8")
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            pass  # the code closed or replaced the descriptor: the parent falls back to exit codes


# ----------------------------------------------------------------------------- libc


def _libc():
    if not LINUX or ctypes is None:
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - static or odd builds
        return None


LIBC = _libc()


def _check(ret: int) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _unshare(flags: int) -> None:
    _check(LIBC.unshare(flags))


def _mount(source, target, fstype, flags: int, data=None) -> None:
    def enc(value):
        return None if value is None else os.fsencode(value)

    _check(LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)))


def _prctl(option: int, arg2: int = 0) -> None:
    _check(LIBC.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)))


# ----------------------------------------------------------------------- supervisor


def follow_parent(parent_pid: int | None, deathsig: bool = True) -> None:
    """Die with the caller: if the CLI is killed, nobody would enforce the timeout.

    PR_SET_PDEATHSIG fires when the parent THREAD exits; that thread is blocked in
    run_python() for the whole run, so it cannot fire early. A session outlives
    the call that started it (its thread may end first), so sessions watch the
    parent PROCESS through the lifeline pipe instead (``deathsig=False``).
    """
    if deathsig and LIBC is not None:
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(EXIT_SETUP)  # the caller died before the prctl took effect


def join_cgroup(procs_file: str | None) -> list[str]:
    """Move this process into the pids cgroup the parent created (fork-bomb cap)."""
    if not procs_file:
        return []
    try:
        with open(procs_file, "w") as fh:
            fh.write(str(os.getpid()))
    except OSError:
        return []
    return ["cgroup-pids"]


def _write_file(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def enter_namespaces(network: bool) -> list[str]:
    """Unshare what the kernel lets us; returns the namespaces obtained.

    Root unshares directly. Other users first need a user namespace (mapping their
    own uid to itself, so file ownership looks unchanged); without it they keep the
    host namespaces and rely on rlimits only.
    """
    if LIBC is None:
        return []
    got: list[str] = []
    if os.geteuid() != 0:
        uid, gid = os.geteuid(), os.getegid()
        try:
            _unshare(CLONE_NEWUSER)
            _write_file("/proc/self/setgroups", "deny")
            _write_file("/proc/self/uid_map", "%d %d 1\n" % (uid, uid))
            _write_file("/proc/self/gid_map", "%d %d 1\n" % (gid, gid))
        except OSError:
            return []
        got.append("userns")
    wanted = [
        (CLONE_NEWPID, "pidns"),
        (CLONE_NEWNS, "mountns"),
        (CLONE_NEWIPC, "ipcns"),  # SysV shm/semaphores die with the run instead of leaking
        (CLONE_NEWUTS, "utsns"),
    ]
    if not network:
        wanted.insert(0, (CLONE_NEWNET, "netns"))  # only a down loopback inside
    all_flags = 0
    for flag, _ in wanted:
        all_flags |= flag
    try:
        _unshare(all_flags)  # one syscall in the common case
        return got + [name for _, name in wanted]
    except OSError:
        pass
    for flag, name in wanted:  # partial support (seccomp profiles, LSMs): take what works
        try:
            _unshare(flag)
            got.append(name)
        except OSError:
            pass
    return got


def _count_user_tasks(uid: int) -> int:
    """Tasks (processes and threads) of ``uid`` on the host: RLIMIT_NPROC counts them all."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat("/proc/" + name).st_uid != uid:
                continue
            total += len(os.listdir("/proc/%s/task" % name))
        except OSError:
            continue
    return total


def _ceil_s(seconds: float) -> int:
    return max(1, int(-(-seconds // 1)))  # RLIMIT_CPU has 1 s granularity


def set_rlimits(limits: dict, namespaces: list[str], have_cgroup: bool, session: bool = False) -> list[str]:
    """Apply the resource limits; returns the protections that took effect.

    A session's worker moves its CPU soft limit before every block (RLIMIT_CPU
    counts the whole life of a process), so its hard limit stays open.
    """
    got: list[str] = []
    mib = 1024 * 1024
    cpu = _ceil_s(limits["cpu_s"])
    wanted = [
        # soft -> SIGXCPU, hard -> SIGKILL
        (resource.RLIMIT_CPU, cpu, resource.RLIM_INFINITY if session else cpu + 1),
        (resource.RLIMIT_FSIZE, limits["file_size_mb"] * mib, None),
        (resource.RLIMIT_NOFILE, limits["open_files"], None),
        (resource.RLIMIT_CORE, 0, None),
    ]
    ok = True
    for which, soft, hard in wanted:
        ok = _setrlimit(which, soft, hard) and ok
    if ok:
        got.append("rlimits")
    # macOS accepts RLIMIT_AS (or not, depending on the release) but never enforces it.
    # None: a warm zygote, whose blocks each get their own (see block_limits).
    memory_mb = limits["memory_mb"]
    if memory_mb is not None and sys.platform != "darwin" and _setrlimit(resource.RLIMIT_AS, memory_mb * mib, None):
        got.append("memory-limit")
    # RLIMIT_NPROC is ignored for uid 0 (the parent's cgroup covers root), and
    # counts every task of the user on the host unless we are in our own user
    # namespace, where it counts only the namespace's tasks.
    if LINUX and os.geteuid() != 0 and hasattr(resource, "RLIMIT_NPROC"):
        allowed = limits["processes"]
        if "userns" not in namespaces:
            if have_cgroup:
                return got
            allowed += _count_user_tasks(os.getuid())
        if _setrlimit(resource.RLIMIT_NPROC, allowed, None):
            got.append("nproc")
    return got


def _setrlimit(which: int, soft: int, hard: int | None) -> bool:
    """Set soft AND hard limit (the code must not be able to raise it back)."""
    _, cur_hard = resource.getrlimit(which)
    if hard is None:
        hard = soft
    if cur_hard != resource.RLIM_INFINITY:  # lowering is always allowed, raising is not
        hard = min(hard, cur_hard)
        soft = min(soft, hard)
    try:
        resource.setrlimit(which, (soft, hard))
    except (OSError, ValueError):
        return False
    return True


def become_subreaper() -> list[str]:
    """Without a PID namespace: make orphans of the code re-parent to us, not to
    init, so that we can still find and kill them, even after they setsid()."""
    if LIBC is None:
        return []
    try:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        return []
    return ["subreaper"]


def _children_of(parent: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # state ppid pgrp session ...
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(name))
    return found


def kill_descendants(child: int | None) -> None:
    """Kill the child (while unreaped its pid cannot be recycled), then our other
    children until none is left. As a subreaper, every descendant whose parent
    dies becomes our child and is killed in a later round. With a PID namespace,
    killing the child (its PID 1) is enough: the kernel kills the rest."""
    if child is not None:
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    me = os.getpid()
    while True:
        # /proc may be the sandbox's own (mounted by the child in a shared mount
        # namespace); its pids then mean nothing here, hence the explicit kill above.
        for pid in _children_of(me) if LINUX and _SUBREAPER else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


_SUBREAPER = False
_LIVE_CHILD: int | None = None  # the child's pid until it has been reaped (init: the worker's)


def _on_sigterm(signum, frame) -> None:
    # The parent asks for a clean stop (timeout, output cap): take everything down.
    kill_descendants(_LIVE_CHILD)
    os._exit(0)


def _forward_sigint(signum, frame) -> None:
    # Session mode: the parent interrupts a timed-out block; the supervisor passes
    # it to init, init to the worker (each holds its child in _LIVE_CHILD).
    if _LIVE_CHILD is not None:
        try:
            os.kill(_LIVE_CHILD, signal.SIGINT)
        except OSError:
            pass


def _ignore_signal(signum, frame) -> None:
    pass


def _wait_watching_parent(child: int, lifeline: int):
    """Session mode: wait for the child while reaping the orphans a subreaper
    inherits, and take everything down when the parent PROCESS is gone (its end
    of the lifeline pipe is closed: we read end-of-file)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, _ignore_signal)  # a Python handler, so SIGCHLD wakes select()
    while True:
        while True:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == child:
                return status, usage
            if pid == 0:
                break
        ready, _, _ = select.select([lifeline, wake_r], [], [], 5.0)
        if lifeline in ready and not os.read(lifeline, 1):
            kill_descendants(child)
            os._exit(0)
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except OSError:
                pass


def supervise(child: int, reporter: Reporter, subreaper: bool, lifeline: int | None = None) -> None:
    """Wait for the child, clean up after it, report how it ended, then exit."""
    global _LIVE_CHILD, _SUBREAPER
    _LIVE_CHILD, _SUBREAPER = child, subreaper
    signal.signal(signal.SIGTERM, _on_sigterm)  # installed after fork: the code never sees it
    try:
        if lifeline is None:
            _, status, usage = os.wait4(child, 0)
        else:
            status, usage = _wait_watching_parent(child, lifeline)
    except ChildProcessError:  # pragma: no cover - cannot happen for our own child
        reporter.send({"exit": {"code": None}})
        os._exit(0)
    _LIVE_CHILD = None
    if subreaper:
        kill_descendants(None)  # background processes the code left behind
    reporter.send({"exit": _exit_report(status, usage)})
    os._exit(0)


def _exit_report(status: int, usage) -> dict:
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status), "cpu_s": cpu}
    return {"code": os.WEXITSTATUS(status), "cpu_s": cpu}


# ---------------------------------------------------------------------------- child


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split(" ")
            if len(fields) > 4:
                # mountinfo escapes space, tab, newline and backslash as octal.
                points.append(_OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def _remount_readonly(point: str) -> None:
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY
    try:
        current = os.statvfs(point).f_flag
    except OSError:
        current = 0
    for st_bit, ms_bit in _KEEP_FLAGS:
        if current & st_bit:
            flags |= ms_bit
    _mount(None, point, None, flags)


def setup_mounts(workdir: str, fresh_proc: bool, size_mb: int) -> list[str]:
    """Make the whole filesystem read-only except private /tmp, /dev/shm and work dir.

    Runs inside the new mount namespace, so the host's mounts are untouched. The
    writable places are size-capped tmpfs: whatever the code writes there lives
    in the namespace only, is bounded, and vanishes with the run.
    """
    got: list[str] = []
    # Private first: otherwise our mounts would propagate back to the host's peers.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    root_ok = True
    for point in _mount_points():
        try:
            _remount_readonly(point)
        except OSError:
            if point == "/":
                root_ok = False
    if root_ok:
        got.append("readonly-fs")
    # Code that writes to /tmp by name keeps working, privately; unless the
    # interpreter or its packages live under /tmp (a venv there), which a tmpfs
    # over /tmp would hide.
    private_tmp = not _python_under("/tmp/") and _mount_tmpfs("/tmp", size_mb, 0o1777)
    if private_tmp:
        PRIVATE_SCRATCH.append("/tmp")
    if private_tmp and workdir.startswith("/tmp/"):
        os.makedirs(workdir, 0o700)  # same path, now inside the private /tmp
        got.append("tmpfs-workdir")
    elif _mount_tmpfs(workdir, size_mb, 0o700):
        got.append("tmpfs-workdir")
    else:
        # Keep the host directory writable instead: a bind mount has its own flags.
        _mount(workdir, workdir, None, MS_BIND)
        _mount(None, workdir, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV)
    if fresh_proc:
        try:  # /proc of the new PID namespace: host processes become invisible
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
            got.append("fresh-proc")
        except OSError:
            pass
    if _mount_tmpfs("/dev/shm", size_mb, 0o1777):  # multiprocessing needs a writable one
        PRIVATE_SCRATCH.append("/dev/shm")
    return got


# The shared scratch directories that are private tmpfs mounts of this sandbox (set
# up by setup_mounts): a warm zygote empties them after every block. Never the host's.
PRIVATE_SCRATCH: list = []


def _python_under(prefix: str) -> bool:
    """Whether this interpreter, its packages or this runner live below ``prefix``."""
    needed = [sys.prefix, sys.exec_prefix, sys.base_prefix, os.path.abspath(__file__), *sys.path]
    return any(os.path.abspath(p).startswith(prefix) for p in needed if p)


def _mount_tmpfs(target: str, size_mb: int, mode: int) -> bool:
    """A private, size-capped tmpfs on ``target``; it vanishes with the namespace."""
    if not os.path.isdir(target):
        return False
    try:
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=%o" % (size_mb, mode))
    except OSError:
        return False
    return True


def drop_privileges() -> list[str]:
    """Drop every capability (also for future execve) and forbid privilege gains.

    Root keeps uid 0 but loses CAP_SYS_ADMIN and friends, so it cannot undo the
    read-only mounts, leave the cgroup through a mount, or load modules.
    """
    got: list[str] = []
    if LIBC is None:
        return got
    dropped = True
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            last_cap = int(fh.read())
    except (OSError, ValueError):
        last_cap = 63
    for cap in range(last_cap + 1):  # bounding set first: needs CAP_SETPCAP, still held
        try:
            _prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            dropped = False
            break
    try:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two zeroed {effective, permitted, inheritable}
    try:
        _check(LIBC.capset(header, data))
    except (OSError, AttributeError):
        dropped = False
    if dropped:
        got.append("no-caps")
    try:
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        got.append("no-new-privs")
    except OSError:
        pass
    return got


def _clip(text: str, keep: int) -> str:
    """Head and tail of an over-long text (the middle is what a reader needs least)."""
    return text if len(text) <= 2 * keep + 3 else text[:keep] + "..." + text[-keep:]


def _last_traceback_line() -> str:
    """The last line of the formatted traceback, as the reference executor keeps it."""
    try:
        line = traceback.format_exc().split("\n")[-2]
    except BaseException:  # formatting itself can fail (e.g. out of memory)
        line = sys.exc_info()[0].__name__
    return _clip(line, _ERROR_KEEP)


def register_source(filename: str, source: str) -> None:
    """Let tracebacks (and ``inspect``) show the code's lines. linecache entries
    whose mtime is None are never dropped by ``checkcache()``."""
    lines = io.StringIO(source, newline=None).readlines()  # the compiler's line breaks
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (len(source), None, lines, filename)


def format_traceback(exc: BaseException, fallback: str, shown_as: dict | None = None) -> str:
    """``traceback.format_exc()`` as if the code had run as a script: the sandbox's
    own frames are left out, so a SyntaxError has no "Traceback" header (like
    ``python main.py``). ``shown_as`` renames code files (a session's cells) in the
    text, after their source lines have been looked up under their real names."""
    try:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == _THIS_FILE:
            tb = tb.tb_next
        summary = traceback.TracebackException(type(exc), exc, tb)  # looks the lines up now
        if shown_as:
            _rename_files(summary, shown_as, set())
        text = "".join(summary.format())
    except BaseException:  # out of memory, pathological exception objects
        text = fallback + "\n"
    return _clip(text, _TRACEBACK_KEEP)


def _rename_files(summary, names: dict, seen: set) -> None:
    if summary is None or id(summary) in seen:
        return
    seen.add(id(summary))
    for frame in summary.stack:
        if frame.filename in names:
            frame.filename = names[frame.filename]
    if getattr(summary, "filename", None) in names:  # a SyntaxError's location
        summary.filename = names[summary.filename]
    for nested in (summary.__cause__, summary.__context__, *(getattr(summary, "exceptions", None) or ())):
        _rename_files(nested, names, seen)


def execute(prelude: str, code: str, filename: str) -> tuple[str, str | None, str | None]:
    """Run prelude then code in one fresh, EMPTY globals dict: (status, error, traceback).

    An empty dict (no ``__name__`` key) makes ``__name__`` resolve through the
    builtins to ``"builtins"``, as in the reference's exec-in-a-dict runtime.
    BaseException is caught on purpose, like the reference's bare ``except:``:
    ``sys.exit(3)`` gives status "error" with ``SystemExit: 3``.
    """
    namespace: dict = {}
    try:
        if prelude:
            register_source("<prelude>", prelude)
            exec(compile(prelude, "<prelude>", "exec", dont_inherit=True), namespace)
        register_source(filename, code)
        # dont_inherit: this file's __future__ imports must not leak into the code.
        exec(compile(code, filename, "exec", dont_inherit=True), namespace)
    except BaseException as exc:
        status = "memory" if isinstance(exc, MemoryError) else "error"
        error = _last_traceback_line()
        return status, error, format_traceback(exc, error)
    return "ok", None, None


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    if LIBC is not None:  # C-level stdio of extensions: os._exit() would drop it
        try:
            LIBC.fflush(None)
        except BaseException:
            pass


def prepare_child(job: dict, reporter: Reporter, namespaces: list[str]) -> list[str]:
    """Finish the confinement in the child; returns the protections obtained."""
    try:
        if LIBC is not None:
            # If the supervisor is killed, take the child down too (setsid'd or not).
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        got: list[str] = []
        if "mountns" in namespaces:
            try:
                got += setup_mounts(job["workdir"], "pidns" in namespaces, job["limits"]["file_size_mb"])
            except OSError:
                pass  # e.g. a kernel refusing private propagation: run without a read-only view
        os.chdir(job["workdir"])
        if LINUX:
            got += drop_privileges()
        sys.argv = [""]
        return got
    except BaseException:
        reporter.send({"setup_error": _last_traceback_line()})
        _flush_stdio()
        os._exit(EXIT_SETUP)


def run_child(job: dict, reporter: Reporter, namespaces: list[str]) -> None:
    """Finish the confinement, run the code, report, exit. Never returns."""
    got = prepare_child(job, reporter, namespaces)
    reporter.send({"ready": got})
    me = os.getpid()
    # Called right here: the code's stack depth (hence where RecursionError strikes)
    # is the same for every block, warm ones included (WarmBlock.run).
    outcome = execute(job["prelude"], job["code"], job["code_filename"])
    report_and_exit(outcome, me, lambda result: reporter.send({"result": result}))


def report_and_exit(outcome: tuple, me: int, report) -> None:
    """After ``execute``: flush the code's output, ``report(result dict)``, exit with
    the matching code. Never returns."""
    status, error, tb = outcome
    _flush_stdio()
    if os.getpid() == me:  # a copy made by os.fork() in the code must not report
        report({"status": status, "error": error, "traceback": tb})
    os._exit({"ok": EXIT_OK, "memory": EXIT_MEMORY}.get(status, EXIT_ERROR))


# ------------------------------------------------------------------------- sessions


class CpuTimeExceeded(BaseException):
    """Raised inside a session block that used up its CPU allowance (SIGXCPU)."""


_IN_BLOCK = [False]  # the worker is inside a block: signals become exceptions there


def _on_block_sigint(signum, frame) -> None:
    if _IN_BLOCK[0]:
        raise KeyboardInterrupt


def _on_block_sigxcpu(signum, frame) -> None:
    if _IN_BLOCK[0]:
        raise CpuTimeExceeded()


class Stdio:
    """The worker's standard streams (stdout and stderr: one pipe, unbuffered with
    ``-u``; stdin: /dev/null), restored before each block: a block that closed or
    replaced them, or their descriptors (``exit()`` closes stdin), does not break
    the next ones."""

    def __init__(self) -> None:
        self.spares = {fd: os.dup(fd) for fd in (0, 1, 2)}
        self.streams = [sys.stdin, sys.stdout, sys.stderr]
        self.errors = [stream.errors for stream in self.streams]

    def restore(self) -> None:
        for fd, spare in self.spares.items():
            try:
                os.dup2(spare, fd)
            except OSError:
                pass
            if self.streams[fd].closed:
                raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
                if fd == 0:
                    stream = io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8", errors=self.errors[0])
                else:
                    stream = io.TextIOWrapper(raw, encoding="utf-8", errors=self.errors[fd], write_through=True)
                self.streams[fd] = stream
        sys.stdin, sys.stdout, sys.stderr = self.streams
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = self.streams


def _arm_block(cpu_s: float) -> None:
    """Before each block: our signal handlers (the last block may have replaced
    them), and a CPU allowance of ``cpu_s`` from now on (RLIMIT_CPU counts the
    whole life of the process)."""
    signal.signal(signal.SIGINT, _on_block_sigint)
    signal.signal(signal.SIGXCPU, _on_block_sigxcpu)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = _ceil_s(usage.ru_utime + usage.ru_stime + cpu_s)
    try:
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (OSError, ValueError):
        pass


def run_block(code: str, filename: str, namespace: dict, shown_as: dict, display_cap: int) -> dict:
    """One block, like a notebook cell: the rest first, then a final bare expression
    is evaluated and, when not None, its repr() is the display."""
    display = None
    try:
        _IN_BLOCK[0] = True
        register_source(filename, code)
        tree = compile(code, filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, filename, "exec", dont_inherit=True), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), filename, "eval", dont_inherit=True), namespace)
            if value is not None:
                display = repr(value)[: display_cap + 1]
        _IN_BLOCK[0] = False
    except BaseException as exc:
        _IN_BLOCK[0] = False
        if isinstance(exc, CpuTimeExceeded):
            return {"status": "timeout", "error": None, "traceback": None}
        status = "memory" if isinstance(exc, MemoryError) else "error"
        error = _last_traceback_line()
        return {"status": status, "error": error, "traceback": format_traceback(exc, error, shown_as)}
    return {"status": "ok", "error": None, "traceback": None, "display": display}


def serve(job: dict, reporter: Reporter, got: list[str]) -> None:
    """The session worker: one request line, one block, one result line, until the
    parent closes the control pipe. Runs in a fresh ``__main__`` module's namespace
    (``__name__ == "__main__"``, as in a notebook)."""
    control = os.fdopen(job["control_fd"], "rb")
    stdio = Stdio()
    module = types.ModuleType("__main__")
    sys.modules["__main__"] = module  # `import __main__`, pickling by reference: the notebook
    shown_as: dict = {}  # each block's own file name -> the name tracebacks show
    me = os.getpid()
    reporter.send({"ready": got})
    while True:
        try:
            request = json.loads(control.readline() or "null")
            filename = "cell%d.py" % int(request["cell"])
            code = request["code"]
        except (OSError, ValueError, TypeError, KeyError):
            os._exit(0)  # end-of-file: the session is closed or the parent is gone
        shown_as[filename] = job["code_filename"]
        stdio.restore()
        _arm_block(job["limits"]["cpu_s"])
        try:
            result = run_block(code, filename, module.__dict__, shown_as, job["limits"]["output_bytes"])
        except BaseException:  # an interrupt that landed in the bookkeeping around the code
            _IN_BLOCK[0] = False
            result = {"status": "error", "error": "KeyboardInterrupt", "traceback": None}
        _flush_stdio()
        if os.getpid() != me:  # a copy made by os.fork() in the block
            os._exit(0)
        result["id"] = request.get("id")
        reporter.send({"result": result}, fresh_line=True)


def run_session(job: dict, reporter: Reporter, namespaces: list[str]) -> None:
    """Session mode's child: finish the confinement, fork the worker, then stay as
    its init (PID 1 of the namespace, when there is one): reap orphans so that a
    long session does not fill the process cap with zombies, pass interrupts on,
    and report how the worker ended. Never returns."""
    global _LIVE_CHILD
    got = prepare_child(job, reporter, namespaces)
    _LIVE_CHILD = None  # the supervisor's value, copied by fork
    signal.signal(signal.SIGINT, _forward_sigint)  # before fork: no window without it
    worker = os.fork()
    if worker == 0:
        if LIBC is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if job.get("warm"):
            serve_warm(job, reporter, got, namespaces)
        serve(job, reporter, got)
        os._exit(EXIT_ERROR)  # pragma: no cover - neither ever returns
    _LIVE_CHILD = worker
    os.close(job["control_fd"])
    while True:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == worker:
            _LIVE_CHILD = None
            reporter.send({"worker_exit": _exit_report(status, usage)})
            os._exit(0)

# ---------------------------------------------------------------------- warm zygote
#
# Warm mode (``mathsolve.sandbox.WarmPython``, job key ``"warm"``): the session layout
# (supervisor, init, one long-lived process), but the long-lived process is a ZYGOTE:
# it imports the preload modules once, then forks one child per block and never runs
# model code itself::
#
#     init --forks--> zygote: imports the preload modules; per request on CONTROL_FD:
#                       |     fork, wait, kill everything the block started, empty
#                       |     the scratch directories, {"result": {"id": ...}} on STATUS_FD
#                       +--forks--> block: new process group, its own limits, the
#                                   interpreter's signal handlers, fresh RNG seeds, then
#                                   execute() exactly like run_child; its result goes to
#                                   the zygote on a private pipe (STATUS_FD is closed).
#
# Requests: {"id", "code", "prelude", "cpu_s", "memory_mb"}; {"kill": id} ends that
# block early (the parent's wall clock or output cap). The zygote ignores every
# signal it can (a block may signal its parent), so only SIGKILL or SIGSTOP stop it;
# it exits when the control pipe closes. Its death ends the whole run (init exits
# with it), and the parent starts a new one for the next block.

_RESULT_CAP = 4 * 1024 * 1024  # bytes of a block's private result pipe kept (its tail)
IPC_RMID = 0


class ControlLines:
    """JSON requests from the parent, one per line, read without blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.partial = b""
        self.eof = False
        os.set_blocking(fd, False)

    def read(self) -> list:
        messages = []
        while not self.eof:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            lines = (self.partial + chunk).split(b"\n")
            self.partial = lines.pop()
            for line in lines:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    messages.append(message)
        return messages


def serve_warm(job: dict, reporter: Reporter, got: list, namespaces: list) -> None:
    """The zygote's life: preload, then one forked child per block, until the
    control pipe closes. Never returns."""
    import gc

    for signum in _STARTUP_HANDLERS:
        if signum != signal.SIGCHLD:
            _set_handler(signum, signal.SIG_IGN)
    try:  # CPU limits are per block (each child's own clock); the zygote's is open
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, hard))
    except (OSError, ValueError):
        pass
    os.chdir("/")  # blocks chdir into the work dir by path: it is re-made after each
    preloaded = preload(job["warm"]["preload"])
    random_module = sys.modules.get("random")  # loaded by a preload module, or not at all
    rngs = [] if random_module is None else [
        obj for obj in gc.get_objects()
        if isinstance(obj, random_module.Random) and not isinstance(obj, random_module.SystemRandom)]
    gc.freeze()  # the preloaded objects: children's collections skip them (fewer copied pages)
    if LINUX and LIBC is not None:
        try:  # orphans of a block re-parent to us, so the sweep reaches them
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        except OSError:
            pass
    scratch = Scratch(job["workdir"], "ipcns" in namespaces)
    scratch.clean()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, _ignore_signal)  # a Python handler, so SIGCHLD wakes select()
    control = ControlLines(job["control_fd"])
    context = {"job": job, "rngs": rngs, "wake": (wake_r, wake_w), "control": control,
               "pidns": "pidns" in namespaces, "zygote": os.getpid()}
    enforced = ["memory-limit"] if sys.platform != "darwin" and _as_unlimited() else []
    reporter.send({"ready": got + enforced, "preloaded": preloaded})
    pending: list = []
    while True:
        while not pending:
            if control.eof:
                os._exit(0)  # the parent closed us, or is gone
            select.select([control.fd], [], [])
            pending += [m for m in control.read() if "code" in m]  # a stale kill is dropped
        request = pending.pop(0)
        result, clean = run_warm_block(request, context, scratch)
        if not clean:  # a block left something we cannot remove: the next gets a new zygote
            result["retiring"] = True
        reporter.send({"result": result})
        if not clean:
            os._exit(0)


def _set_handler(signum: int, handler) -> None:
    try:
        signal.signal(signum, handler)
    except (OSError, ValueError, RuntimeError, TypeError):
        pass  # SIGKILL, SIGSTOP, and handlers not settable from Python


def _as_unlimited() -> bool:
    """Each block sets its own address-space limit: possible only below an open hard one."""
    return resource.getrlimit(resource.RLIMIT_AS)[1] == resource.RLIM_INFINITY


def preload(names: list) -> list:
    """Import the preload modules (their import-time output goes nowhere); returns
    those that imported. A module that fails is simply not warm: blocks import it
    themselves, and fail as they would in a fresh interpreter."""
    loaded = []
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        for name in names:
            try:
                __import__(name)
                loaded.append(name)
            except BaseException:
                pass
    finally:
        _flush_stdio()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)
    return loaded


def run_warm_block(request: dict, context: dict, scratch: Scratch) -> tuple:
    """Fork the block, wait for it (or a kill request), sweep, clean: (result, clean)."""
    result_r, result_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(result_r)
        block_child(request, context, result_w)
    os.close(result_w)
    os.set_blocking(result_r, False)
    try:
        os.setpgid(child, child)  # also done by the child: no window either way
    except OSError:
        pass
    control, (wake_r, _) = context["control"], context["wake"]
    claimed = bytearray()
    killed = False
    reaped = None
    watched = [control.fd, wake_r, result_r]
    while reaped is None and not _has_exited(child):
        for fd in select.select(watched, [], [], 1.0)[0]:
            if fd == result_r and _read_some(result_r, claimed) == 0:
                watched.remove(result_r)
            elif fd == wake_r:
                _drain_fd(wake_r)
            elif fd == control.fd:
                messages = control.read()
                if control.eof or any(m.get("kill") == request.get("id") for m in messages):
                    killed = True
                    _kill_group(child)
                    if control.eof:  # the parent is gone: take everything down, leave
                        sweep(child, context["pidns"])
                        os._exit(0)
        if not hasattr(os, "waitid"):  # no exit check without reaping (macOS before 3.13)
            reaped = _reap(child)
    status_usage = sweep(child, context["pidns"]) or reaped
    while _read_some(result_r, claimed):  # what the (now dead) block wrote last
        pass
    os.close(result_r)
    clean = scratch.clean()
    result = {"id": request.get("id"), "killed": killed}
    if status_usage is not None:
        result["exit"] = _exit_report(*status_usage)
    claim = _last_json(claimed)
    if claim is not None:
        for key in ("status", "error", "traceback"):
            result[key] = claim.get(key)
    return result, clean


def _has_exited(pid: int) -> bool:
    """Exit check that does NOT reap: until the sweep, the block's pid (its process
    group id) cannot be recycled for an unrelated group."""
    if not hasattr(os, "waitid"):
        return False
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _reap(pid: int):
    try:
        found, status, usage = os.wait4(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return (status, usage) if found == pid else None


def _kill_group(pgid: int) -> None:
    for kill, target in ((os.killpg, pgid), (os.kill, pgid)):
        try:
            kill(target, signal.SIGKILL)
        except OSError:
            pass


def sweep(child: int, pidns: bool):
    """Kill the block's process group and every other process it started, reap
    them all; returns the block child's (wait status, rusage) when we reaped it.

    In a PID namespace, kill(-1) reaches every process of the namespace but init
    and us; without one, we are a child subreaper, so whatever the block left
    behind re-parents to us and is killed in the next round."""
    found = None
    me = os.getpid()
    while True:
        _kill_group(child)
        if pidns:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        elif LINUX:
            for pid in _children_of(me):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            return found
        if pid == child:
            found = (status, usage)


def _read_some(fd: int, into: bytearray):
    """One chunk of a block's result pipe: its size, 0 at end-of-file, None when
    nothing is there now."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError:
        return 0
    into.extend(chunk)
    if len(into) > 2 * _RESULT_CAP:  # junk the code wrote there: keep the tail
        del into[:-_RESULT_CAP]
    return len(chunk)


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass


def _last_json(data: bytearray):
    """The block's result: the last line of its private pipe, if it is one."""
    try:
        value = json.loads(bytes(data).rstrip(b"\n").rsplit(b"\n", 1)[-1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Scratch:
    """Everything a block can write: the work dir (re-made at the same path after
    each block, so blocks see what a fresh run_python sees), the private /tmp and
    /dev/shm, the run's own temporary directory, and SysV IPC objects."""

    def __init__(self, workdir: str, ipcns: bool) -> None:
        self.workdir = workdir
        self.tops = list(PRIVATE_SCRATCH) + [os.path.dirname(workdir)]
        self.modes = {}
        for top in self.tops:
            try:
                self.modes[top] = os.stat(top).st_mode & 0o7777
            except OSError:
                pass
        self.ipcns = ipcns

    def clean(self) -> bool:
        """Empty it all; False if something stayed (the zygote then retires)."""
        for top, mode in self.modes.items():
            try:
                os.chmod(top, mode)  # a block may have chmod-ed them
            except OSError:
                pass
            _empty_tree(top, self.workdir)
        try:
            os.makedirs(self.workdir, 0o700, exist_ok=True)
            os.chmod(self.workdir, 0o700)
            fresh = not os.path.islink(self.workdir) and os.listdir(self.workdir) == []
        except OSError:
            fresh = False
        if self.ipcns:  # a private IPC namespace: every object in it was made by a block
            _remove_sysv_ipc()
        return fresh


def _empty_tree(top: str, keep: str) -> None:
    """Remove everything below ``top`` except the directories leading to ``keep``
    (emptied too). Never follows a symbolic link."""
    try:
        names = os.listdir(top)
    except OSError:
        return
    prefix = top.rstrip("/") + "/"
    inner = keep[len(prefix):].split("/", 1)[0] if keep.startswith(prefix) else None
    for name in names:
        path = prefix + name
        if name == inner and os.path.isdir(path) and not os.path.islink(path):
            try:
                os.chmod(path, 0o700)
            except OSError:
                pass
            _empty_tree(path, keep)
        elif os.path.isdir(path) and not os.path.islink(path):
            remove_tree(path)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def remove_tree(path: str) -> None:
    """Remove a directory tree even if the code made parts of it unreadable or
    unwritable (never following a symbolic link). Also used by mathsolve.sandbox."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path) or os.path.islink(path):
        return
    try:
        os.chmod(path, 0o700)  # this one first: os.walk cannot list it otherwise
    except OSError:
        pass
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            try:
                os.chmod(os.path.join(dirpath, name), 0o700, follow_symlinks=False)
            except (OSError, NotImplementedError):
                pass
    shutil.rmtree(path, ignore_errors=True)


def _remove_sysv_ipc() -> None:
    if LIBC is None:
        return
    for kind, remove in (("shm", lambda i: LIBC.shmctl(i, IPC_RMID, None)),
                         ("sem", lambda i: LIBC.semctl(i, 0, IPC_RMID)),
                         ("msg", lambda i: LIBC.msgctl(i, IPC_RMID, None))):
        try:
            with open("/proc/sysvipc/" + kind) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 1 and fields[1].isdigit():
                remove(int(fields[1]))


class WarmBlock(BaseException):
    """Raised in a block's freshly forked child once it is set up: it unwinds the
    zygote's stack up to ``main``, which calls ``run`` where ``run_child`` would be
    called, so that the code runs at the same stack depth as in run_python."""

    def __init__(self, request: dict, filename: str, result_fd: int) -> None:
        super().__init__()
        self.request, self.filename, self.result_fd = request, filename, result_fd

    def run(self) -> None:
        me = os.getpid()
        outcome = execute(self.request.get("prelude") or "", self.request["code"], self.filename)
        report_and_exit(outcome, me, Reporter(self.result_fd).send)


def block_child(request: dict, context: dict, result_fd: int) -> None:
    """In the forked child: undo what is the zygote's, apply the block's limits,
    then raise WarmBlock to run the code like run_child does."""
    try:
        os.setpgid(0, 0)
        if LIBC is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the zygote
            _prctl(PR_SET_DUMPABLE, 1)  # as any fresh process: its own /proc entries are its own
        if os.getppid() != context["zygote"]:
            os._exit(EXIT_SETUP)  # the zygote died before the prctl took effect
        signal.set_wakeup_fd(-1)
        for signum, handler in _STARTUP_HANDLERS.items():
            if handler is not None:
                _set_handler(signum, handler)
        # Nothing of the zygote's stays open: its control and status pipes above all.
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, max(resource.getrlimit(resource.RLIMIT_NOFILE)[0], result_fd + 1))
        block_limits(request)
        reseed(context["rngs"])
        os.chdir(context["job"]["workdir"])
    except BaseException:
        os._exit(EXIT_SETUP)
    raise WarmBlock(request, context["job"]["code_filename"], result_fd)


def block_limits(request: dict) -> None:
    """CPU: ``cpu_s`` of this child's own time (a fork starts at zero), SIGXCPU then
    SIGKILL as in run_python. Memory: ``memory_mb`` on top of the address space the
    child has at birth (the zygote's: interpreter plus preloaded modules)."""
    cpu = _ceil_s(request["cpu_s"])
    _setrlimit(resource.RLIMIT_CPU, cpu, cpu + 1)
    memory_mb = request.get("memory_mb")
    if memory_mb is not None and sys.platform != "darwin":
        _setrlimit(resource.RLIMIT_AS, _address_space() + memory_mb * 1024 * 1024, None)


def _address_space() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def reseed(rngs: list) -> None:
    """Fresh random state, as a new interpreter would have: every random.Random
    the zygote holds (the random module's, sympy's ...) and numpy's legacy global
    generator. Warnings shown once by the zygote's imports may show again."""
    for rng in rngs:
        rng.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            numpy_random.seed()
        except BaseException:
            pass
    warnings = sys.modules.get("warnings")
    if warnings is not None and isinstance(getattr(warnings, "onceregistry", None), dict):
        warnings.onceregistry.clear()
        mutated = getattr(warnings, "_filters_mutated", None)  # invalidates per-module registries
        if mutated is not None:
            mutated()



def main(argv: list[str]) -> None:
    job_path, status_fd = argv[1], int(argv[2])
    reporter = Reporter(status_fd)
    with open(job_path, encoding="utf-8") as fh:
        job = json.load(fh)
    os.unlink(job_path)  # the code has no business reading its own job description
    session = bool(job.get("session"))
    follow_parent(job.get("parent_pid"), deathsig=not session)
    got = join_cgroup(job.get("cgroup_procs"))
    namespaces = enter_namespaces(job["network"]) if job.get("namespaces", True) else []
    got += set_rlimits(job["limits"], namespaces, "cgroup-pids" in got, session)
    if "pidns" not in namespaces:  # with one, the kernel already kills everything
        got += become_subreaper()
    reporter.send({"setup": got + namespaces})
    if job.get("warm") and LIBC is not None:
        # Non-dumpable (inherited by init and the zygote, given back to each block):
        # a block cannot open their status descriptor through /proc/PID/fd to forge
        # the end of a block, nor ptrace them. After the user namespace's uid map:
        # that file belongs to root once the process is non-dumpable.
        try:
            _prctl(PR_SET_DUMPABLE, 0)
        except OSError:
            pass
    if session:
        signal.signal(signal.SIGINT, _forward_sigint)  # before fork: no window without it
    child = os.fork()
    if child == 0:
        if session:
            os.close(job["lifeline_fd"])
            block = None
            try:
                run_session(job, reporter, namespaces)
            except WarmBlock as raised:  # a warm zygote's block child, its stack unwound
                block = raised.with_traceback(None)
            if block is not None:  # outside the handler: the code sees no exception context
                block.run()
        run_child(job, reporter, namespaces)
    if session:
        os.close(job["control_fd"])
    supervise(child, reporter, "subreaper" in got, job["lifeline_fd"] if session else None)


if __name__ == "__main__":
    main(sys.argv)
