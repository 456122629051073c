"""The child's view of the machine, set up inside its new mount namespace: every
mount read-only, private size-capped tmpfs for the work dir, /tmp and /dev/shm, a
fresh /proc; then every capability dropped and privilege gains forbidden.

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import os
import re
import sys

from .kernel import (
    LIBC,
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAPBSET_DROP,
    PR_SET_NO_NEW_PRIVS,
    check_call,
    ctypes,
    mount,
    prctl,
)

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
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
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
    mount(None, point, None, flags)


def setup_mounts(workdir: str, fresh_proc: bool, size_mb: int) -> list[str]:
    """Make the whole filesystem read-only except private /tmp, /dev/shm and work dir.

    Runs inside the new mount namespace, so the host's mounts are untouched. The
    writable places are size-capped tmpfs: whatever the code writes there lives
    in the namespace only, is bounded, and vanishes with the run.
    """
    got: list[str] = []
    # Private first: otherwise our mounts would propagate back to the host's peers.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
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
        mount(workdir, workdir, None, MS_BIND)
        mount(None, workdir, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV)
    if fresh_proc:
        try:  # /proc of the new PID namespace: host processes become invisible
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
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
        mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=%o" % (size_mb, mode))
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
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            dropped = False
            break
    try:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two zeroed {effective, permitted, inheritable}
    try:
        check_call(LIBC.capset(header, data))
    except (OSError, AttributeError):
        dropped = False
    if dropped:
        got.append("no-caps")
    try:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        got.append("no-new-privs")
    except OSError:
        pass
    return got
