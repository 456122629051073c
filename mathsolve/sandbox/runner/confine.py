"""The supervisor's confinement, applied to itself before it forks the child, so that
everything the code starts inherits it: staying tied to the caller, the pids cgroup,
the namespaces, the resource limits, and (without a PID namespace) becoming a child
subreaper.

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import os
import resource
import signal
import sys

from .kernel import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    EXIT_SETUP,
    LIBC,
    LINUX,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_PDEATHSIG,
    ceil_s,
    prctl,
    setrlimit,
    unshare,
)


def follow_parent(parent_pid: int | None, deathsig: bool = True) -> None:
    """Die with the caller: if the CLI is killed, nobody would enforce the timeout.

    PR_SET_PDEATHSIG fires when the parent THREAD exits; that thread is blocked in
    run_python() or run_program() for the whole run, so it cannot fire early. A session outlives
    the call that started it (its thread may end first), so sessions watch the
    parent PROCESS through the lifeline pipe instead (``deathsig=False``).
    """
    if deathsig and LIBC is not None:
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
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
            unshare(CLONE_NEWUSER)
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
        unshare(all_flags)  # one syscall in the common case
        return got + [name for _, name in wanted]
    except OSError:
        pass
    for flag, name in wanted:  # partial support (seccomp profiles, LSMs): take what works
        try:
            unshare(flag)
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


def set_rlimits(limits: dict, namespaces: list[str], have_cgroup: bool, session: bool = False) -> list[str]:
    """Apply the resource limits; returns the protections that took effect.

    A session's worker moves its CPU soft limit before every block (RLIMIT_CPU
    counts the whole life of a process), so its hard limit stays open.
    """
    got: list[str] = []
    mib = 1024 * 1024
    cpu = ceil_s(limits["cpu_s"])
    wanted = [
        # soft -> SIGXCPU, hard -> SIGKILL
        (resource.RLIMIT_CPU, cpu, resource.RLIM_INFINITY if session else cpu + 1),
        (resource.RLIMIT_FSIZE, limits["file_size_mb"] * mib, None),
        (resource.RLIMIT_NOFILE, limits["open_files"], None),
        (resource.RLIMIT_CORE, 0, None),
    ]
    ok = True
    for which, soft, hard in wanted:
        ok = setrlimit(which, soft, hard) and ok
    if ok:
        got.append("rlimits")
    # macOS accepts RLIMIT_AS (or not, depending on the release) but never enforces it.
    # None: a warm zygote, whose blocks each get their own (see block_limits).
    memory_mb = limits["memory_mb"]
    if memory_mb is not None and sys.platform != "darwin" and setrlimit(resource.RLIMIT_AS, memory_mb * mib, None):
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
        if setrlimit(resource.RLIMIT_NPROC, allowed, None):
            got.append("nproc")
    return got


def become_subreaper() -> list[str]:
    """Without a PID namespace: make orphans of the code re-parent to us, not to
    init, so that we can still find and kill them, even after they setsid()."""
    if LIBC is None:
        return []
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        return []
    return ["subreaper"]
