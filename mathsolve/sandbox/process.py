"""The parent's dealings with processes at the operating-system level: finding the
interpreter, the minimal environment a runner and its program get, watching a process
exit without reaping it (pidfd, waitid), stopping it, killing what is left of its
session, naming signals.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from mathsolve.sandbox.result import SandboxError

LINUX = sys.platform.startswith("linux")


def find_interpreter(python: str | None) -> str:
    """The interpreter to run: ``python`` (a path or a command name), default this one."""
    if python is None:
        if not sys.executable:
            raise SandboxError("cannot locate the running Python interpreter (sys.executable is empty)")
        return sys.executable
    found = shutil.which(python)
    if found is None:
        raise SandboxError(f"Python interpreter not found: {python}")
    return os.path.abspath(found)


def child_env(workdir: str, interpreter: str) -> dict[str, str]:
    """A minimal environment: nothing from the parent except harmless settings.
    ``interpreter``: its folder comes first on PATH (for a program: the program's)."""
    locale = "en_US.UTF-8" if sys.platform == "darwin" else "C.UTF-8"
    env = {
        # The interpreter's own bin dir first, so a `python` the code spawns is the same one.
        # (A program's own folder: the tools it comes with are found first.)
        "PATH": os.pathsep.join([os.path.dirname(interpreter), "/usr/local/bin", "/usr/bin", "/bin"]),
        "LANG": locale,
        "LC_ALL": locale,
        "HOME": workdir,
        "TMPDIR": workdir,
        "TMP": workdir,
        "TEMP": workdir,
        # For interpreters the code may start itself (-I makes ours ignore PYTHON* vars).
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONNOUSERSITE": "1",
        # One thread per BLAS/OpenMP pool: stays within `processes` and does not
        # fight the LLM for cores.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    for name in ("TZ", "LD_LIBRARY_PATH"):  # needed by some installs; never secrets
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def pidfd_open(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def has_exited(proc: subprocess.Popen) -> bool:
    """Exit check that does NOT reap (WNOWAIT), so the group id stays reserved."""
    if not hasattr(os, "waitid"):  # macOS before Python 3.13: reaping check instead
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True


def stop_politely(proc: subprocess.Popen, grace_s: float = 1.0) -> None:
    """SIGTERM the supervisor and wait (without reaping) for it to finish."""
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while not has_exited(proc) and time.monotonic() < deadline:
        time.sleep(0.002)


def kill_session_leftovers(sid: int) -> None:
    """Without a PID namespace: kill processes of the sandbox's session that moved
    to another process group (killpg missed them). Linux /proc only."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp session ...
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            try:
                os.kill(int(name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; the number itself for one Python does not know."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (perhaps someone else's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
