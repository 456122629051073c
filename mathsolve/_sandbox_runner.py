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
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import sys
import traceback

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


class Reporter:
    """Writes status lines to the dedicated descriptor; never raises."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode("utf-8")
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


def follow_parent(parent_pid: int | None) -> None:
    """Die with the caller: if the CLI is killed, nobody would enforce the timeout.

    PR_SET_PDEATHSIG fires when the parent THREAD exits; that thread is blocked in
    run_python() for the whole run, so it cannot fire early.
    """
    if LIBC is None:
        return
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


def set_rlimits(limits: dict, namespaces: list[str], have_cgroup: bool) -> list[str]:
    """Apply the resource limits; returns the protections that took effect."""
    got: list[str] = []
    mib = 1024 * 1024
    cpu = max(1, int(-(-limits["cpu_s"] // 1)))  # ceil: RLIMIT_CPU has 1 s granularity
    wanted = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),  # soft -> SIGXCPU, hard -> SIGKILL
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
    if sys.platform != "darwin" and _setrlimit(resource.RLIMIT_AS, limits["memory_mb"] * mib, None):
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
_LIVE_CHILD: int | None = None  # the child's pid until it has been reaped


def _on_sigterm(signum, frame) -> None:
    # The parent asks for a clean stop (timeout, output cap): take everything down.
    kill_descendants(_LIVE_CHILD)
    os._exit(0)


def supervise(child: int, reporter: Reporter, subreaper: bool) -> None:
    """Wait for the child, clean up after it, report how it ended, then exit."""
    global _LIVE_CHILD, _SUBREAPER
    _LIVE_CHILD, _SUBREAPER = child, subreaper
    signal.signal(signal.SIGTERM, _on_sigterm)  # installed after fork: the code never sees it
    try:
        _, status, usage = os.wait4(child, 0)
    except ChildProcessError:  # pragma: no cover - cannot happen for our own child
        reporter.send({"exit": {"code": None}})
        os._exit(0)
    _LIVE_CHILD = None
    if subreaper:
        kill_descendants(None)  # background processes the code left behind
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        reporter.send({"exit": {"signal": os.WTERMSIG(status), "cpu_s": cpu}})
    else:
        reporter.send({"exit": {"code": os.WEXITSTATUS(status), "cpu_s": cpu}})
    os._exit(0)


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
    _mount_tmpfs("/dev/shm", size_mb, 0o1777)  # multiprocessing needs a writable one
    return got


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


def _last_traceback_line() -> str:
    """The last line of the formatted traceback, as the reference executor keeps it."""
    try:
        line = traceback.format_exc().split("\n")[-2]
    except BaseException:  # formatting itself can fail (e.g. out of memory)
        line = sys.exc_info()[0].__name__
    if len(line) > 2 * _ERROR_KEEP + 3:
        line = line[:_ERROR_KEEP] + "..." + line[-_ERROR_KEEP:]
    return line


def execute(prelude: str, code: str) -> tuple[str, str | None]:
    """Run prelude then code in one fresh, EMPTY globals dict.

    An empty dict (no ``__name__`` key) makes ``__name__`` resolve through the
    builtins to ``"builtins"``, as in the reference's exec-in-a-dict runtime.
    BaseException is caught on purpose, like the reference's bare ``except:``:
    ``sys.exit(3)`` gives status "error" with ``SystemExit: 3``.
    """
    namespace: dict = {}
    try:
        if prelude:
            exec(compile(prelude, "<prelude>", "exec", dont_inherit=True), namespace)
        # dont_inherit: this file's __future__ imports must not leak into the code.
        exec(compile(code, "<string>", "exec", dont_inherit=True), namespace)
    except BaseException as exc:
        status = "memory" if isinstance(exc, MemoryError) else "error"
        return status, _last_traceback_line()
    return "ok", None


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass


def run_child(job: dict, reporter: Reporter, namespaces: list[str]) -> None:
    """Finish the confinement, run the code, report, exit. Never returns."""
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
        reporter.send({"ready": got})
    except BaseException:
        reporter.send({"setup_error": _last_traceback_line()})
        _flush_stdio()
        os._exit(EXIT_SETUP)
    me = os.getpid()
    status, error = execute(job["prelude"], job["code"])
    _flush_stdio()
    if os.getpid() == me:  # a copy made by os.fork() in the code must not report
        reporter.send({"result": {"status": status, "error": error}})
    os._exit({"ok": EXIT_OK, "memory": EXIT_MEMORY}.get(status, EXIT_ERROR))


def main(argv: list[str]) -> None:
    job_path, status_fd = argv[1], int(argv[2])
    reporter = Reporter(status_fd)
    with open(job_path, encoding="utf-8") as fh:
        job = json.load(fh)
    os.unlink(job_path)  # the code has no business reading its own job description
    follow_parent(job.get("parent_pid"))
    got = join_cgroup(job.get("cgroup_procs"))
    namespaces = enter_namespaces(job["network"]) if job.get("namespaces", True) else []
    got += set_rlimits(job["limits"], namespaces, "cgroup-pids" in got)
    if "pidns" not in namespaces:  # with one, the kernel already kills everything
        got += become_subreaper()
    reporter.send({"setup": got + namespaces})
    child = os.fork()
    if child == 0:
        run_child(job, reporter, namespaces)
    supervise(child, reporter, "subreaper" in got)


if __name__ == "__main__":
    main(sys.argv)
