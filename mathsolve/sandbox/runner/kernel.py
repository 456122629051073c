"""The runner's thin layer over the kernel: libc calls through ctypes (unshare, mount,
prctl), the flags they take, resource limits, the status channel to the parent, exit
codes, and the signal dispositions the interpreter started with.

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

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

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# Exit codes of the child; the JSON result line is authoritative, these are the
# fallback when the code closed or clobbered the status descriptor.
EXIT_OK, EXIT_ERROR, EXIT_MEMORY, EXIT_SETUP = 0, 1, 3, 70
# A program that could not be executed (the shells' convention for "not found").
EXIT_NOT_EXECUTED = 127


def _signal_handlers() -> dict:
    handlers = {}
    for signum in signal.valid_signals():
        try:
            handlers[signum] = signal.getsignal(signum)
        except (OSError, ValueError):
            pass
    return handlers


# The interpreter's own signal handlers, taken at import, before the runner changes any
# (the entry script imports every module first): a warm zygote's blocks get them back
# (SIGINT -> KeyboardInterrupt, SIGPIPE ignored, ...).
STARTUP_HANDLERS = _signal_handlers()


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


def check_call(ret: int) -> None:
    """Raise the OSError a libc call that returned non-zero left in errno."""
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def unshare(flags: int) -> None:
    check_call(LIBC.unshare(flags))


def mount(source, target, fstype, flags: int, data=None) -> None:
    def enc(value):
        return None if value is None else os.fsencode(value)

    check_call(LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)))


def prctl(option: int, arg2: int = 0) -> None:
    check_call(LIBC.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)))


def flush_stdio() -> None:
    """Flush Python's and C's standard streams, before an ``os._exit``."""
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


def set_handler(signum: int, handler) -> None:
    """``signal.signal`` where Python allows it; silently nothing elsewhere."""
    try:
        signal.signal(signum, handler)
    except (OSError, ValueError, RuntimeError, TypeError):
        pass  # SIGKILL, SIGSTOP, and handlers not settable from Python


def ceil_s(seconds: float) -> int:
    return max(1, int(-(-seconds // 1)))  # RLIMIT_CPU has 1 s granularity


def setrlimit(which: int, soft: int, hard: int | None) -> bool:
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


def exit_report(status: int, usage) -> dict:
    """How a reaped process ended, for the parent: exit code or signal, and CPU time."""
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status), "cpu_s": cpu}
    return {"code": os.WEXITSTATUS(status), "cpu_s": cpu}
