"""Run untrusted, model-written Python in a separate, confined interpreter.

Public API (tool backends and third-party plugins rely on it; keep it small)::

    run_python(code, *, limits=Limits(), prelude="", python=None) -> ExecResult
    PythonSession(*, limits=Limits(), python=None)   .run(code) -> ExecResult, .close()
    WarmPython(preload=(), *, python=None)   .run(code, *, limits=Limits(), prelude="") -> ExecResult,
                                             .close(), .preloaded
    capabilities() -> dict[str, bool | str]
    Limits, ExecResult, SandboxError, PROTECTIONS, CODE_FILENAME

Semantics (those of the ToRA executor the reference numbers were measured with):

* every call runs the code alone in a FRESH interpreter process (``python``,
  default ``sys.executable``, so the install's sympy/numpy are importable): no
  state from earlier calls, no pre-imported names;
* ``prelude`` (e.g. the imports the Numina protocol prepends) runs first, in the
  same namespace, compiled separately so the code's line numbers do not move;
* the code is exec'd in an EMPTY globals dict: ``__name__`` resolves through the
  builtins to ``"builtins"``, never ``"__main__"``; the last expression is not
  printed;
* stdout and stderr are captured separately, as UTF-8 text (invalid bytes are
  replaced); the model's output is returned raw: result formatting ("Done",
  truncation) belongs to the caller;
* any exception ending the code, ``BaseException`` included (the reference used a
  bare ``except:``), gives ``status="error"`` and ``error`` = the last line of the
  formatted traceback, e.g. ``NameError: name 'x' is not defined``. So
  ``sys.exit(3)`` is ``"SystemExit: 3"`` and ``sys.exit()`` is ``"SystemExit"``;
  output printed before it is kept in ``stdout``. A ``MemoryError`` gives
  ``status="memory"`` (``error`` still holds its line);
* ``traceback`` is then the whole traceback, as ``python main.py`` would print it:
  the code is compiled as file ``CODE_FILENAME`` (``"main.py"``), its frames show
  their source lines, and the sandbox's own frames are left out (so a SyntaxError
  has no "Traceback" header, only the ``File "main.py", line N`` part). The prelude's
  frames are ``"<prelude>"``. Over-long tracebacks keep their first and last 10,000
  characters;
* the wall-clock limit starts when the code (prelude included) starts, not when
  the interpreter is spawned: a slow start on a loaded machine does not eat the
  code's budget. ``duration_s`` is the wall time of the whole call.

Confinement on Linux (each item is reported in ``ExecResult.protections`` only
when it really took effect; ``capabilities()`` measures them on this machine):

==================  ==========================================================
``session-kill``    new session; the whole process group is SIGKILLed at the end
``tmpdir``          fresh private cwd (also HOME and TMPDIR), removed afterwards
``minimal-env``     no parent variables (no tokens/keys): safe PATH, UTF-8
                    locale, TZ; one BLAS/OpenMP thread
``isolated-python`` ``python -I -B``: no PYTHONPATH/user site/script dir on
                    sys.path (the install's site-packages stay importable)
``rlimits``         RLIMIT_CPU (``cpu_s``), RLIMIT_FSIZE, RLIMIT_NOFILE, no core
``memory-limit``    RLIMIT_AS (``memory_mb``, per process)
``cgroup-pids``     a throw-away cgroup with ``pids.max = processes`` (when this
                    process may create one: root, or a delegated cgroup v2)
``nproc``           RLIMIT_NPROC (non-root only: the kernel ignores it for uid 0;
                    inside our user namespace it counts only the sandbox's tasks)
``subreaper``       without a PID namespace, the supervisor is a child subreaper:
                    orphans re-parent to it, and it kills them all at the end,
                    setsid() ones included
``userns``          user namespace (non-root), which unlocks the ones below
``netns``           new network namespace: only a down loopback, no network
``pidns``           new PID namespace; the code is its PID 1, so when it ends
                    the kernel kills everything it started, new sessions too;
                    ``os.getppid()`` is 0 and host processes cannot be signalled
``mountns``         ``readonly-fs``: every mount is read-only;
                    ``tmpfs-workdir``: the cwd is a private tmpfs capped at
                    ``file_size_mb`` (so are /tmp, unless the interpreter
                    lives there, and /dev/shm: code writing there by name
                    works, privately); ``fresh-proc``: /proc shows only the
                    sandbox
``ipcns``/``utsns`` SysV IPC objects and the hostname are private
``no-caps``         all capabilities dropped (bounding set too), so root inside
                    cannot remount, leave the cgroup, load modules, ...
``no-new-privs``    setuid binaries cannot raise privileges
==================  ==========================================================

Root unshares the namespaces directly; other users get them through a user
namespace where the distribution allows unprivileged ones (most do; Ubuntu 24.04
restricts them by default). What is lost without them: network access stays
open, the filesystem stays writable wherever the user can write, and a process
that both leaves the session and kills the supervisor can survive the call
(the ``cgroup-pids`` sweep still catches it when present). As root without a PID
namespace (a container without CAP_SYS_ADMIN) the code can also signal any
host process. Fork bombs are capped by ``cgroup-pids`` or ``nproc``; as root
with neither, only the wall clock bounds them. The memory limit is per process.

macOS gets: ``session-kill``, ``tmpdir``, ``minimal-env``, ``isolated-python``,
``rlimits`` (CPU, file size, open files, core). It does NOT get a memory limit
(RLIMIT_AS is not enforced), network isolation, a process cap, a read-only
filesystem, or a way to catch processes that leave the session. Windows is not
supported (``SandboxError``).

Known differences from the reference's in-process ``exec``: output written to
file descriptor 1 directly (``os.write(1, ...)``, child processes) is captured
too, and the reference's refusal of code containing ``input(`` or ``os.system(``
is the caller's business (here ``input()`` simply meets end-of-file).

``PythonSession`` keeps ONE confined interpreter for many blocks (a notebook
kernel, for protocols trained with one): same confinement, per-block limits, a
final bare expression's repr() in ``display``, stderr merged into stdout; see its
docstring and docs/sandbox.md ("Sessions").

``WarmPython`` has ``run_python``'s semantics and results, with the ``preload``
modules imported once, in a confined zygote that forks a fresh child per block; see
its docstring and docs/sandbox.md ("Warm backends").

The untrusted code never runs in the caller's process, and nothing is set up
with ``preexec_fn`` (unsafe in the threaded llama.cpp process): the limits are
applied by ``_sandbox_runner.py``, a trusted script started by path that runs in
the new process before the code. The code travels in a file in the private
temporary directory, never on a command line.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from mathsolve._sandbox_runner import remove_tree  # standard library only, like all of the runner
from mathsolve.tools.base import Limits  # the limits are part of the tool contract; re-exported here

__all__ = [
    "CODE_FILENAME",
    "ExecResult",
    "Limits",
    "PROTECTIONS",
    "PythonSession",
    "SandboxError",
    "WarmPool",
    "WarmPython",
    "capabilities",
    "run_python",
]

#: The file name the code's frames carry in ``ExecResult.traceback`` (the code is
#: compiled under it; a session's blocks are shown under it too). Protocols that
#: filter tracebacks (Numina's reference kept the lines naming the code file)
#: look for it.
CODE_FILENAME = "main.py"

_LINUX = sys.platform.startswith("linux")
_RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_runner.py")

#: Every protection name that can appear in ``ExecResult.protections``, in report order.
PROTECTIONS: tuple[str, ...] = (
    "session-kill",
    "tmpdir",
    "minimal-env",
    "isolated-python",
    "rlimits",
    "memory-limit",
    "cgroup-pids",
    "nproc",
    "subreaper",
    "userns",
    "netns",
    "pidns",
    "mountns",
    "readonly-fs",
    "tmpfs-workdir",
    "fresh-proc",
    "ipcns",
    "utsns",
    "no-caps",
    "no-new-privs",
)

# Set up by the parent itself, whatever the platform.
_PARENT_PROTECTIONS = ("session-kill", "tmpdir", "minimal-env", "isolated-python")

# Interpreter start plus namespace set-up must finish within this (plus the
# code's own timeout); beyond it the sandbox itself is considered broken.
_STARTUP_GRACE_S = 30.0
_CHUNK = 64 * 1024
# Longest status line taken in (a result: error line, traceback, a session's display,
# JSON-escaped); a longer one is junk the code wrote and is skipped.
_STATUS_LINE_CAP = 1024 * 1024
_INTERRUPT_GRACE_S = 1.0  # a session's timed-out block: SIGINT, then this long before a kill
_POLL_S = 0.02  # exit polling where pidfd is unavailable (macOS)
# Off-switches for tests and debugging, to exercise the fallbacks of machines
# where the kernel refuses namespaces or cgroups.
_USE_NAMESPACES = True
_USE_CGROUP = True
_MEMORY_MARKERS = (b"MemoryError", b"std::bad_alloc", b"Cannot allocate memory", b"out of memory")


class SandboxError(RuntimeError):
    """The sandbox itself failed (interpreter missing, runner crashed): not the code's fault."""


@dataclass
class ExecResult:
    """Outcome of one execution.

    ``status``: "ok" | "error" | "timeout" | "memory" | "output-limit".
    ``error``: last traceback line when the code raised (status "error", or
    "memory" for a MemoryError); a short description when the process died
    otherwise (``Killed by signal SIGSEGV``, ``Exited with code 3``); None else.
    ``traceback``: the full traceback text when the code raised (frames of the
    code in ``CODE_FILENAME``, with their source lines); None otherwise,
    including timeouts and deaths without an exception.
    ``display``: ``PythonSession`` only: repr() of the block's final bare
    expression when it is not None (a notebook's Out); None otherwise.
    """

    status: str
    stdout: str
    stderr: str
    error: str | None
    duration_s: float
    protections: tuple[str, ...] = field(default_factory=tuple)
    traceback: str | None = None
    display: str | None = None


# ----------------------------------------------------------------------------- API


def run_python(
    code: str, *, limits: Limits = Limits(), prelude: str = "", python: str | None = None
) -> ExecResult:
    """Execute ``code`` in a fresh, confined interpreter and return what happened.

    Never raises for anything the code does; raises ``SandboxError`` when the
    sandbox cannot be started and ``ValueError`` for nonsensical limits.
    """
    if os.name != "posix":
        raise SandboxError("the Python sandbox needs a POSIX system (Linux or macOS)")
    _check_limits(limits)
    interpreter = _find_interpreter(python)
    started = time.monotonic()
    run = _Run.start(interpreter, limits, {"code": code, "prelude": prelude})
    try:
        run.collect()
    finally:
        run.finish()
    return run.result(time.monotonic() - started)


def capabilities(python: str | None = None) -> dict[str, bool | str]:
    """Which protections this machine grants, measured by running a trivial child.

    Keys: every name of ``PROTECTIONS`` (bool), plus ``platform`` and ``python``.
    """
    result = run_python("pass", limits=Limits(timeout_s=30), python=python)
    caps: dict[str, bool | str] = {name: name in result.protections for name in PROTECTIONS}
    caps["platform"] = sys.platform
    caps["python"] = _find_interpreter(python)
    return caps


# ------------------------------------------------------------------------ set-up


def _check_limits(limits: Limits) -> None:
    if not limits.timeout_s > 0:
        raise ValueError("Limits.timeout_s must be positive")
    if not limits.effective_cpu_s() > 0:
        raise ValueError("Limits.cpu_s must be positive")
    for name in ("memory_mb", "file_size_mb", "processes"):
        if getattr(limits, name) < 1:
            raise ValueError(f"Limits.{name} must be at least 1")
    if limits.output_bytes < 0:
        raise ValueError("Limits.output_bytes must not be negative")
    if limits.open_files < 16:  # the interpreter itself needs a handful
        raise ValueError("Limits.open_files must be at least 16")


def _find_interpreter(python: str | None) -> str:
    if python is None:
        if not sys.executable:
            raise SandboxError("cannot locate the running Python interpreter (sys.executable is empty)")
        return sys.executable
    found = shutil.which(python)
    if found is None:
        raise SandboxError(f"Python interpreter not found: {python}")
    return os.path.abspath(found)


def _write_job(root: str, workdir: str, limits: dict, network: bool, cgroup: _PidsCgroup | None,
               fields: dict) -> str:
    """The code goes to the runner in a private file, never on the command line."""
    job = {
        "workdir": workdir,
        "network": network,
        "namespaces": _USE_NAMESPACES,
        "parent_pid": os.getpid(),
        "cgroup_procs": cgroup.procs_file if cgroup is not None else None,
        "code_filename": CODE_FILENAME,
        "limits": limits,
        **fields,
    }
    path = os.path.join(root, "job.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(job, fh)
    return path


def _child_env(workdir: str, interpreter: str) -> dict[str, str]:
    """A minimal environment: nothing from the parent except harmless settings."""
    locale = "en_US.UTF-8" if sys.platform == "darwin" else "C.UTF-8"
    env = {
        # The interpreter's own bin dir first, so a `python` the code spawns is the same one.
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


# ------------------------------------------------------------------------ cgroup


@lru_cache(maxsize=1)
def _pids_cgroup_parent() -> str | None:
    """Directory under which a child cgroup with the pids controller can be made."""
    try:
        with open("/proc/self/cgroup") as fh:
            memberships = [line.rstrip("\n").split(":", 2) for line in fh]
        with open("/proc/self/mountinfo") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return None
    v1 = _cgroup_v1_pids_dir(memberships, mounts)
    if v1 is not None:
        return v1
    return _cgroup_v2_pids_dir(memberships, mounts)


def _cgroup_mounts(mounts: list[list[str]], fstype: str) -> list[tuple[str, str, list[str]]]:
    """(mount root, mount point, super options) of every mount of ``fstype``."""
    found = []
    for fields in mounts:
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) > sep + 3 and fields[sep + 1] == fstype:
            found.append((fields[3], fields[4], fields[sep + 3].split(",")))
    return found


def _join_cgroup_path(mount_root: str, mount_point: str, path: str) -> str:
    if mount_root != "/" and path.startswith(mount_root):
        path = path[len(mount_root):]
    return os.path.join(mount_point, path.lstrip("/"))


def _cgroup_v1_pids_dir(memberships: list[list[str]], mounts: list[list[str]]) -> str | None:
    for entry in memberships:
        if len(entry) == 3 and "pids" in entry[1].split(","):
            for mount_root, point, options in _cgroup_mounts(mounts, "cgroup"):
                if "pids" in options:
                    return _join_cgroup_path(mount_root, point, entry[2])
    return None


def _cgroup_v2_pids_dir(memberships: list[list[str]], mounts: list[list[str]]) -> str | None:
    own = [entry[2] for entry in memberships if len(entry) == 3 and entry[0] == "0"]
    v2_mounts = _cgroup_mounts(mounts, "cgroup2")
    if not own or not v2_mounts:
        return None
    mount_root, point, _ = v2_mounts[0]
    directory = _join_cgroup_path(mount_root, point, own[0])
    # A v2 cgroup that holds processes cannot enable controllers for children
    # ("no internal processes"), so walk up to one that already delegates pids.
    while directory.startswith(point):
        try:
            with open(os.path.join(directory, "cgroup.subtree_control")) as fh:
                if "pids" in fh.read().split() and os.access(directory, os.W_OK):
                    return directory
        except OSError:
            pass
        if directory == point:
            break
        directory = os.path.dirname(directory)
    return None


_CGROUP_PREFIX = _TEMP_PREFIX = "mathsolve-sandbox-"
_WARM_TEMP_PREFIX = "mathsolve-warm-"  # a warm zygote's directory: its processes are named after it
_STALE_AGE_S = 3600.0


@lru_cache(maxsize=1)
def _remove_stale_cgroups(parent: str) -> None:
    """Once per process: remove empty cgroups left by callers that were killed."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(_CGROUP_PREFIX):
            continue
        owner = name[len(_CGROUP_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not _pid_alive(int(owner)):
            try:
                os.rmdir(os.path.join(parent, name))  # fails harmlessly if still populated
            except OSError:
                pass


@lru_cache(maxsize=1)
def _remove_stale_tempdirs(parent: str) -> None:
    """Once per process: remove temporary dirs of callers that were killed mid-run.

    Only old ones: a pid that looks dead may belong to another PID namespace
    sharing this /tmp, and an old directory cannot belong to a running call.
    """
    try:
        names = os.listdir(parent)
    except OSError:
        return
    now = time.time()
    for name in names:
        prefix = next((p for p in (_TEMP_PREFIX, _WARM_TEMP_PREFIX) if name.startswith(p)), None)
        owner = name[len(prefix):].split("-", 1)[0] if prefix else ""
        path = os.path.join(parent, name)
        try:
            old = now - os.lstat(path).st_mtime > _STALE_AGE_S
        except OSError:
            continue
        if owner.isdigit() and old and not _pid_alive(int(owner)):
            _remove_tree(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _PidsCgroup:
    """A throw-away cgroup whose pids.max caps the sandbox's task count."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.procs_file = os.path.join(path, "cgroup.procs")

    @classmethod
    def create(cls, max_tasks: int) -> _PidsCgroup | None:
        parent = _pids_cgroup_parent()
        if parent is None:
            return None
        _remove_stale_cgroups(parent)
        path = os.path.join(parent, f"{_CGROUP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.mkdir(path)
        except OSError:
            return None
        try:
            with open(os.path.join(path, "pids.max"), "w") as fh:
                fh.write(str(max_tasks))
        except OSError:
            cls(path).remove()
            return None
        return cls(path)

    def kill_all(self) -> None:
        """SIGKILL every member, including processes that left the session."""
        kill_file = os.path.join(self.path, "cgroup.kill")  # cgroup v2, Linux 5.14+
        if os.path.exists(kill_file):
            try:
                with open(kill_file, "w") as fh:
                    fh.write("1")
            except OSError:
                pass
        for _ in range(200):  # members may fork while we kill; pids.max bounds them
            pids = self._members()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.002)

    def _members(self) -> list[int]:
        try:
            with open(self.procs_file) as fh:
                return [int(line) for line in fh if line.strip()]
        except (OSError, ValueError):
            return []

    def remove(self) -> None:
        # Killed members leave the cgroup asynchronously: retry briefly.
        deadline = time.monotonic() + 2.0
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # leaves an empty, harmless directory behind
                self.kill_all()
                time.sleep(0.005)


# ------------------------------------------------------------------------ the run


class _Run:
    """One sandboxed runner (the supervisor and all it starts) with its private
    directory and cgroup: spawning, reading its pipes, killing, classifying.
    ``run_python`` uses one per call; a session one per worker (``_Worker``)."""

    session = False  # the runner's session mode: a long-lived worker (see _Worker)
    merged = False  # stderr into stdout, unbuffered (a notebook's stream output)
    temp_prefix = _TEMP_PREFIX

    def __init__(self, proc: subprocess.Popen, root: str, cgroup: _PidsCgroup | None, status_fd: int,
                 limits: Limits, pipes: tuple[int, ...] = ()) -> None:
        self.proc = proc
        self.root = root
        self.cgroup = cgroup
        self.limits = limits
        self.started = time.monotonic()
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.status = bytearray()  # the status line being received
        self.skip_line = False  # the rest of an over-long status line is dropped
        self.line_cap = _STATUS_LINE_CAP
        self.ready_at: float | None = None
        self.killed_for: str | None = None  # "timeout" | "output-limit" | "startup"
        self.discard = False  # past the output cap: read and drop (a session's worker must not block)
        self.exited = False
        self.finished = False
        self.status_fd = status_fd
        self.pipes = pipes  # our ends of the session's control and lifeline pipes
        self.buffers = {proc.stdout.fileno(): self.stdout, status_fd: self.status}
        if proc.stderr is not None:  # a session merges stderr into stdout
            self.buffers[proc.stderr.fileno()] = self.stderr
        self.selector = selectors.DefaultSelector()
        for fd in self.buffers:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ)
        self.pidfd = _pidfd_open(proc.pid)
        if self.pidfd is not None:
            self.selector.register(self.pidfd, selectors.EVENT_READ)
        self.info: dict = {}

    @classmethod
    def runner_limits(cls, limits: Limits) -> dict:
        """The limits the runner applies to itself and everything it starts."""
        return {
            "cpu_s": limits.effective_cpu_s(),
            "memory_mb": limits.memory_mb,
            "file_size_mb": limits.file_size_mb,
            "open_files": limits.open_files,
            "processes": limits.processes,
            "output_bytes": limits.output_bytes,
        }

    @classmethod
    def start(cls, interpreter: str, limits: Limits, fields: dict) -> _Run:
        """Make the private directory (and cgroup), write the job, spawn the runner."""
        _remove_stale_tempdirs(tempfile.gettempdir())
        root = os.path.realpath(tempfile.mkdtemp(prefix=f"{cls.temp_prefix}{os.getpid()}-"))
        cgroup: _PidsCgroup | None = None
        ours: list[int] = []  # our ends of the pipes
        theirs: list[int] = []  # the runner's ends: closed here once it has them
        runner_limits = cls.runner_limits(limits)
        try:
            workdir = os.path.join(root, "work")
            os.mkdir(workdir, 0o700)
            cgroup = _PidsCgroup.create(runner_limits["processes"]) if _LINUX and _USE_CGROUP else None
            status_r, status_w = os.pipe()
            ours.append(status_r)
            theirs.append(status_w)
            for _ in range(2 if cls.session else 0):  # control and lifeline: the runner reads
                read_end, write_end = os.pipe()
                ours.append(write_end)
                theirs.append(read_end)
            if cls.session:
                fields = {**fields, "session": True, "control_fd": theirs[1], "lifeline_fd": theirs[2]}
            job = _write_job(root, workdir, runner_limits, limits.network, cgroup, fields)
            # -u: a session's stdout and stderr share one pipe, in the order written.
            flags = ["-I", "-B", "-X", "utf8"] + (["-u"] if cls.merged else [])
            try:
                # No preexec_fn: the runner applies every limit itself (threaded parents).
                proc = subprocess.Popen(
                    [interpreter, *flags, _RUNNER, job, str(theirs[0])],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT if cls.merged else subprocess.PIPE,
                    cwd=workdir,
                    env=_child_env(workdir, interpreter),
                    start_new_session=True,
                    pass_fds=tuple(theirs),
                )
            except OSError as exc:
                raise SandboxError(f"cannot start {interpreter}: {exc}") from exc
        except BaseException:
            for fd in ours:
                os.close(fd)
            if cgroup is not None:
                cgroup.remove()
            _remove_tree(root)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        return cls(proc, root, cgroup, ours[0], limits, tuple(ours[1:]))

    # -- reading

    def _deadline(self) -> float:
        if self.ready_at is None:
            return self.started + _STARTUP_GRACE_S + self.limits.timeout_s
        return self.ready_at + self.limits.timeout_s

    def collect(self) -> None:
        """Read output until the runner exits, the clock runs out or the cap is hit."""
        while True:
            remaining = self._deadline() - time.monotonic()
            if remaining <= 0:
                self.killed_for = "timeout" if self.ready_at is not None else "startup"
                return
            self._wait(remaining)
            if self.killed_for:
                return
            if self.exited:
                self._drain()
                return

    def _wait(self, timeout: float) -> None:
        """Handle what the pipes and the exit descriptor have, waiting up to ``timeout``."""
        wait = timeout if self.pidfd is not None else min(timeout, _POLL_S)
        for key, _ in self.selector.select(wait):
            if key.fd == self.pidfd:
                self.exited = True
            elif key.fd in self.buffers:
                self._read(key.fd)
            else:
                self._writable(key.fd)
        if self.pidfd is None and not self.exited:
            self.exited = _has_exited(self.proc)

    def _writable(self, fd: int) -> None:
        """A descriptor registered for writing is ready (only sessions register one)."""

    def _read(self, fd: int) -> bool:
        """Read one chunk; False when nothing more is available right now."""
        if fd == self.status_fd or self.discard:
            size = _CHUNK
        else:
            room = self.limits.output_bytes - len(self.stdout) - len(self.stderr)
            size = min(_CHUNK, room + 1)  # never hold more than the cap (+1 byte to detect it)
        try:
            chunk = os.read(fd, size)
        except BlockingIOError:
            return False
        if not chunk:
            self.selector.unregister(fd)
            del self.buffers[fd]
            return False
        if fd == self.status_fd:
            self._on_status(chunk)
            return True
        if self.discard:
            return True
        room = self.limits.output_bytes - len(self.stdout) - len(self.stderr)
        if len(chunk) > room:
            self.buffers[fd].extend(chunk[:room])
            self.killed_for = self.killed_for or "output-limit"
            self.discard = True
            return False
        self.buffers[fd].extend(chunk)
        return True

    def _drain(self) -> None:
        """Take what the exited runner left in the pipes, without waiting for EOF:
        a background process may still hold them open."""
        for fd in list(self.buffers):
            while fd in self.buffers and self._read(fd):
                pass
            if self.killed_for:
                return

    def _on_status(self, chunk: bytes) -> None:
        """Status lines are handled as they complete (a session's run for hours)."""
        self.status.extend(chunk)
        if b"\n" in chunk:
            end = self.status.rfind(b"\n")
            lines = bytes(self.status[:end]).split(b"\n")
            del self.status[: end + 1]
            for line in lines:
                if self.skip_line:
                    self.skip_line = False
                else:
                    self._on_status_line(line)
        if len(self.status) > self.line_cap:  # junk written by the code
            self.status.clear()
            self.skip_line = True

    def _on_status_line(self, line: bytes) -> None:
        try:
            obj = json.loads(line)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        for key in ("setup", "ready", "setup_error", "preloaded"):  # written before the code ran: the first is true
            if key in obj and key not in self.info:
                self.info[key] = obj[key]
                if key == "ready":
                    self.ready_at = time.monotonic()
        for key in ("result", "exit", "worker_exit"):  # the sandbox's own report comes last
            if key in obj:
                self._on_report(key, obj[key])

    def _on_report(self, key: str, value: object) -> None:
        self.info[key] = value

    # -- ending

    def finish(self) -> None:
        """Kill everything the run started, reap the runner, close descriptors,
        remove the private directory and cgroup. Idempotent."""
        if self.finished:
            return
        self.finished = True
        pid = self.proc.pid
        setup = self.info.get("setup")
        if not self.exited:  # timeout, output cap, a closed session, or the caller was interrupted
            # Let the supervisor kill what it can reach and we cannot: PID 1 of
            # its namespace, or (as a subreaper) descendants that left the
            # session, before the whole group is SIGKILLed.
            _stop_politely(self.proc)
        try:
            # Before reaping: while the leader is an unreaped zombie its pid, which
            # is also the group id, cannot be recycled for an unrelated process.
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.cgroup is not None:
            self.cgroup.kill_all()
        if _LINUX and not (isinstance(setup, list) and "pidns" in setup):
            _kill_session_leftovers(pid)
        self.proc.wait()
        self.selector.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        for fd in (self.status_fd, self.pidfd, *self.pipes):
            if fd is not None:
                os.close(fd)
        if self.cgroup is not None:
            self.cgroup.remove()
        _remove_tree(self.root)

    def protections(self) -> tuple[str, ...]:
        got = set(_PARENT_PROTECTIONS)
        for key in ("setup", "ready"):
            value = self.info.get(key)
            if isinstance(value, list):
                got.update(name for name in value if isinstance(name, str))
        return tuple(name for name in PROTECTIONS if name in got)

    def result(self, duration_s: float) -> ExecResult:
        status, error, tb = self._classify()
        return ExecResult(
            status=status,
            stdout=self.stdout.decode("utf-8", errors="replace"),
            stderr=self.stderr.decode("utf-8", errors="replace"),
            error=error,
            duration_s=duration_s,
            protections=self.protections(),
            traceback=tb,
        )

    def _classify(self) -> tuple[str, str | None, str | None]:
        if self.killed_for in ("timeout", "output-limit"):
            return self.killed_for, None, None
        if "ready" not in self.info:
            raise SandboxError(self._startup_failure())
        result = self.info.get("result")
        if isinstance(result, dict) and result.get("status") in ("ok", "error", "memory"):
            return result["status"], _text(result.get("error")), _text(result.get("traceback"))
        return (*self._classify_death(), None)

    def _classify_death(self) -> tuple[str, str | None]:
        """The code's process ended without reporting (os._exit, a fatal signal)."""
        for key in ("worker_exit", "exit"):
            report = self.info.get(key)
            if isinstance(report, dict):
                return self._classify_exit(report.get("code"), report.get("signal"), report.get("cpu_s"))
        # The runner itself died: the code signalled its own process group.
        code = self.proc.poll()
        if code is None:
            return "error", "Exited"
        return self._classify_exit(code if code >= 0 else None, -code if code < 0 else None, None)

    def _classify_exit(self, code: object, sig: object, cpu_s: object,
                       one_shot: bool | None = None) -> tuple[str, str | None]:
        """``one_shot``: the process ran one block (default: unless a session's worker)."""
        one_shot = not self.session if one_shot is None else one_shot
        if isinstance(sig, int):
            # A one-shot run's CPU use is one block's; a worker's is the whole session's.
            cpu_out = (one_shot and isinstance(cpu_s, (int, float))
                       and cpu_s >= self.limits.effective_cpu_s())
            if sig == getattr(signal, "SIGXCPU", None) or cpu_out:
                return "timeout", None
            if any(marker in (self.stderr or self.stdout) for marker in _MEMORY_MARKERS):
                return "memory", "MemoryError"
            return "error", f"Killed by signal {_signal_name(sig)}"
        if code == 0 and one_shot:
            return "ok", None
        return "error", f"Exited with code {code}"

    def _startup_failure(self) -> str:
        if self.killed_for == "startup":
            return f"the sandbox did not start within {_STARTUP_GRACE_S:.0f} s"
        detail = self.info.get("setup_error")
        if not isinstance(detail, str):
            lines = (self.stderr or self.stdout).decode("utf-8", errors="replace").strip().splitlines()
            detail = lines[-1] if lines else f"exit status {self.proc.poll()}"
        return f"the sandbox runner failed before running the code: {detail}"


def _text(value: object) -> str | None:
    """A string from the status channel, made safe to print (lone surrogates are
    possible in exception messages); None for anything else."""
    if not isinstance(value, str):
        return None
    return value.encode("utf-8", "replace").decode("utf-8")


# ----------------------------------------------------------------------- sessions


class _Worker(_Run):
    """A session's long-lived runner: one block at a time goes down the control
    pipe; output and the result (matched by a per-block id) come back."""

    session = True
    merged = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.control_fd = self.pipes[0]
        os.set_blocking(self.control_fd, False)
        # A result line carries the display (JSON-escaped: up to 12 bytes a character).
        self.line_cap = _STATUS_LINE_CAP + 12 * (self.limits.output_bytes + 1)
        self.block_id: str | None = None
        self.block_result: dict | None = None
        self.outbox = memoryview(b"")

    @property
    def alive(self) -> bool:
        if not self.finished and not self.exited:
            self.exited = _has_exited(self.proc)
        return not (self.finished or self.exited)

    def run_block(self, code: str, cell: int, started: float) -> ExecResult:
        self._exchange({"cell": cell, "code": code})
        status, error, tb, display = self._outcome()
        return ExecResult(
            status=status,
            stdout=self.stdout.decode("utf-8", errors="replace"),
            stderr="",
            error=error,
            duration_s=time.monotonic() - started,
            protections=self.protections(),
            traceback=tb,
            display=display,
        )

    def _exchange(self, request: dict) -> None:
        """Send one block and wait for its result (``block_result``), for its time or
        output to run out (then ``_interrupt`` it), or for the worker to die.
        ``SandboxError`` if the worker never started; a dead or deaf one is finished."""
        self.discard = True  # output between blocks (background threads) belongs to none
        self._drain_some()
        self.stdout.clear()
        self.stderr.clear()
        self.killed_for, self.discard, self.block_result = None, False, None
        self.block_id = secrets.token_hex(8)  # a block's code cannot end another block early
        line = json.dumps({"id": self.block_id, **request}) + "\n"
        self.outbox = memoryview(line.encode("utf-8"))
        sent_at = time.monotonic()
        self._writable(self.control_fd)
        interrupt_by: float | None = None
        while self.block_result is None and not self.exited:
            now = time.monotonic()
            if self.ready_at is None:
                deadline = self.started + _STARTUP_GRACE_S + self.limits.timeout_s
                if now >= deadline:
                    self.killed_for = "startup"
                    break
            elif interrupt_by is None:
                deadline = max(sent_at, self.ready_at) + self.limits.timeout_s
                if now >= deadline:
                    self.killed_for = "timeout"
                if self.killed_for:  # timeout or output cap: interrupt, keep reading meanwhile
                    interrupt_by = self._interrupt()
                    continue
            else:
                deadline = interrupt_by
                if now >= deadline:
                    break  # the worker did not come back: killed below
            self._wait(deadline - now)
        self._drain_some()
        if self.ready_at is None:
            self.finish()
            raise SandboxError(self._startup_failure())
        if self.block_result is None:  # dead, or deaf to the interrupt: a fresh worker next time
            self.finish()

    def _outcome(self) -> tuple[str, str | None, str | None, str | None]:
        if self.killed_for in ("timeout", "output-limit"):
            return self.killed_for, None, None, None
        result = self.block_result
        if result is None:
            return (*self._classify_death(), None, None)
        status = result.get("status")
        if status == "timeout":  # the block's CPU allowance ran out (SIGXCPU in the worker)
            return "timeout", None, None, None
        if status not in ("ok", "error", "memory"):
            status = "error"
        display = _text(result.get("display")) if status == "ok" else None
        if display is not None:  # the display counts toward the output cap
            data = display.encode("utf-8")
            room = self.limits.output_bytes - len(self.stdout)
            if len(data) > room:
                status, display = "output-limit", data[: max(room, 0)].decode("utf-8", errors="ignore")
        return status, _text(result.get("error")), _text(result.get("traceback")), display

    def _on_report(self, key: str, value: object) -> None:
        if key != "result":
            self.info[key] = value
        elif isinstance(value, dict) and self.block_id is not None and value.get("id") == self.block_id:
            self.block_result = value

    def _writable(self, fd: int) -> None:
        """Send what is left of the request without blocking: a large block does not
        fit the pipe at once, and the worker may be busy or dead."""
        registered = fd in self.selector.get_map()
        try:
            while self.outbox:
                self.outbox = self.outbox[os.write(fd, self.outbox):]
        except BlockingIOError:
            pass
        except OSError:  # the worker is gone; its exit shows on the exit descriptor
            self.outbox = memoryview(b"")
        if self.outbox and not registered:
            self.selector.register(fd, selectors.EVENT_WRITE)
        elif not self.outbox and registered:
            self.selector.unregister(fd)

    def _interrupt(self) -> float:
        """SIGINT to the supervisor, passed down to the worker: KeyboardInterrupt in
        the block, like a notebook's interrupt. Returns how long to wait for it."""
        try:
            os.kill(self.proc.pid, signal.SIGINT)  # unreaped child: the pid is still ours
        except ProcessLookupError:
            pass
        return time.monotonic() + _INTERRUPT_GRACE_S

    def _drain_some(self) -> None:
        """Read what is there now, boundedly: a background writer must not hold us."""
        for fd in list(self.buffers):
            for _ in range(64):
                if fd not in self.buffers or not self._read(fd):
                    break


class _WorkerSlot:
    """A session's current worker (apart from the session, so that the session's
    finalizer does not keep the session alive)."""

    def __init__(self) -> None:
        self.worker: _Worker | None = None

    def clear(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.finish()


class _WorkerOwner:
    """What ``PythonSession`` and ``WarmPython`` share: one long-lived runner at a
    time, started on demand by ``run()`` and replaced when it died; ``run()`` and
    ``close()`` serialize on a lock; the runner goes at ``close()``, garbage
    collection or interpreter exit."""

    def __init__(self, python: str | None, limits: Limits | None = None) -> None:
        if os.name != "posix":
            raise SandboxError("the Python sandbox needs a POSIX system (Linux or macOS)")
        if limits is not None:
            _check_limits(limits)
        self._interpreter = _find_interpreter(python)
        self._lock = threading.Lock()
        self._slot = _WorkerSlot()
        self._finalizer = weakref.finalize(self, self._slot.clear)  # also at interpreter exit

    def _run(self, block: Callable[[_Worker, float], ExecResult], start: Callable[[], _Worker],
             fits: Callable[[_Worker], bool] = lambda worker: True) -> ExecResult:
        """``block(worker, started)`` on the current runner, or on a new one from
        ``start()`` when there is none, it died, or it does not ``fit``."""
        with self._lock:
            if not self._finalizer.alive:
                raise ValueError(f"run() on a closed {type(self).__name__}")
            started = time.monotonic()
            worker = self._slot.worker
            if worker is not None and not (worker.alive and fits(worker)):
                self._slot.clear()  # e.g. died between blocks (a background thread's os._exit)
            if self._slot.worker is None:
                self._slot.worker = start()
            try:
                return block(self._slot.worker, started)
            except BaseException:  # the caller was interrupted, or the runner never started
                self._slot.clear()
                raise

    def close(self) -> None:
        """Kill the runner and everything it started, remove its directory. Idempotent."""
        with self._lock:
            self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PythonSession(_WorkerOwner):
    """ONE confined Python interpreter for many blocks, like a notebook kernel:
    variables, imports and files persist from one ``run()`` to the next.

    Confinement as ``run_python``'s, for the whole life of the session; the
    worker starts at the first ``run()``. Per block: ``limits.timeout_s`` of wall
    clock (from when the block is sent; the first also waits for the worker to
    start, like ``run_python``), ``cpu_s`` of CPU time, ``output_bytes`` of
    output (the display included). ``memory_mb`` is the worker's, for the session.

    Each block runs in the namespace of a fresh ``__main__`` module, so
    ``__name__ == "__main__"`` (a notebook's). If its last statement is a bare
    expression, the rest runs first, then the expression is evaluated and, when
    not None, its repr() is ``display``. Block ``n`` (1-based count of ``run()``
    calls) is compiled as ``cell{n}.py``, so functions from earlier blocks keep
    their source lines; ``traceback`` shows every block's frames as
    ``CODE_FILENAME``. stderr is merged into ``stdout`` in the order written
    (``stderr`` is ""). ``error``/``traceback`` as in ``run_python``;
    ``sys.exit()`` ends the block only (``SystemExit``).

    When a block overruns its time or its output: SIGINT, i.e. KeyboardInterrupt
    inside the block, and the state is kept; if the worker does not answer within
    about a second it is killed. A block that kills the worker (``os._exit``,
    a fatal signal, memory exhaustion outside Python) reports its status. Either
    way the next ``run()`` starts a fresh worker: empty namespace, empty work dir.
    Status "memory" from a Python MemoryError keeps the state.

    Not for concurrent use: ``run()`` and ``close()`` serialize on a lock.
    """

    def __init__(self, *, limits: Limits = Limits(), python: str | None = None) -> None:
        super().__init__(python, limits)
        self.limits = limits
        self._cells = 0

    def run(self, code: str) -> ExecResult:
        """Run one block in the session. Never raises for anything the code does;
        ``SandboxError`` when the worker cannot be started, ``ValueError`` once closed."""

        def block(worker: _Worker, started: float) -> ExecResult:
            self._cells += 1
            return worker.run_block(code, self._cells, started)

        return self._run(block, lambda: _Worker.start(self._interpreter, self.limits, {}))


# -------------------------------------------------------------------- warm backends


class _Zygote(_Worker):
    """A warm backend's runner: the session layout, but the long-lived process
    imports the preload modules once and forks a fresh child per block (see
    ``serve_warm`` in the runner). stdout and stderr stay separate, buffered as in
    ``run_python``; a block that overruns is killed (a kill request naming it)."""

    merged = False
    temp_prefix = _WARM_TEMP_PREFIX
    key: tuple = ()

    @classmethod
    def runner_limits(cls, limits: Limits) -> dict:
        return {
            **super().runner_limits(limits),
            # Each block gets its own (the zygote's size plus memory_mb): none for the zygote.
            "memory_mb": None,
            # The supervisor, init and the zygote are ours: the block and what it starts
            # get as many tasks as run_python's code (which shares with its supervisor).
            "processes": limits.processes + 2,
        }

    def run_code(self, code: str, prelude: str, limits: Limits, started: float) -> ExecResult:
        self.limits = limits  # read by the loop: the block's clock and output cap
        self._exchange({"code": code, "prelude": prelude, "cpu_s": limits.effective_cpu_s(),
                        "memory_mb": limits.memory_mb})
        status, error, tb = self._block_outcome()
        if self.block_result is not None and self.block_result.get("retiring"):
            self.finish()  # it could not clean up after the block: the next one gets a new zygote
        return ExecResult(
            status=status,
            stdout=self.stdout.decode("utf-8", errors="replace"),
            stderr=self.stderr.decode("utf-8", errors="replace"),
            error=error,
            duration_s=time.monotonic() - started,
            protections=self.protections(),
            traceback=tb,
        )

    def _block_outcome(self) -> tuple[str, str | None, str | None]:
        """As ``_Run._classify`` for one run_python call, from the zygote's report."""
        if self.killed_for in ("timeout", "output-limit"):
            return self.killed_for, None, None
        result = self.block_result
        if result is None:  # the zygote itself died (the block killed it)
            return (*self._classify_death(), None)
        if result.get("status") in ("ok", "error", "memory"):
            return result["status"], _text(result.get("error")), _text(result.get("traceback"))
        report = result.get("exit") if isinstance(result.get("exit"), dict) else {}
        return (*self._classify_exit(report.get("code"), report.get("signal"), report.get("cpu_s"),
                                     one_shot=True), None)

    def _interrupt(self) -> float:
        """Ask the zygote to kill the block (by id: a late request cannot hit the next)."""
        request = (json.dumps({"kill": self.block_id}) + "\n").encode("utf-8")
        self.outbox = memoryview(bytes(self.outbox) + request)
        self._writable(self.control_fd)
        return time.monotonic() + _INTERRUPT_GRACE_S


def _zygote_key(limits: Limits) -> tuple:
    """The limits a zygote holds for its whole life; a block asking for others gets a new one."""
    return (limits.network, limits.file_size_mb, limits.open_files, limits.processes)


class WarmPython(_WorkerOwner):
    """``run_python`` with the heavy imports paid once per process, not once per block.

    ``run(code, limits=..., prelude=...)`` has ``run_python``'s contract and result
    semantics: the code runs in a FRESH EMPTY globals dict (``__name__`` is
    ``"builtins"``), stdout and stderr apart, ``error`` = the last traceback line,
    the same statuses, tracebacks and confinement. The difference is where the
    process comes from: a confined ZYGOTE, started at the first ``run()``, imports
    the ``preload`` modules once, and each block runs in a child forked from it,
    which gets

    * a new process group and its own limits: ``timeout_s`` of wall clock (from when
      the block is sent), ``cpu_s`` of its own CPU time, ``output_bytes``;
      ``memory_mb`` of address space ON TOP of the zygote's at fork time (the
      interpreter plus the preloaded modules: RLIMIT_AS = zygote size + memory_mb,
      inherited as that number by the processes it starts); ``file_size_mb``,
      ``open_files``, ``processes`` and ``network`` as ``run_python`` (changing one
      of these four starts a new zygote);
    * an empty working directory at the same path for every block (also HOME and
      TMPDIR), the private ``/tmp`` and ``/dev/shm`` emptied and SysV IPC objects
      removed after each block;
    * fresh seeds for every ``random.Random`` the zygote holds (the random module's,
      sympy's) and numpy's legacy global generator;
    * the interpreter's own signal handlers, none of the zygote's descriptors.

    After each block everything it started is killed (its process group, then
    every other process of the PID namespace but init and the zygote, or, without
    one, everything re-parented to the zygote as a child subreaper). Blocks cannot
    change the zygote's memory (copy-on-write). What a block sees that a fresh
    interpreter would not: the preloaded modules already in ``sys.modules`` (their
    import-time side effects, like warning filters, happened once, in the zygote),
    the zygote's hash seed (set and dict-of-str orders repeat from block to block),
    ``os.getpid()``/``os.getppid()`` of a forked child rather than 1/0.

    If the block kills the zygote, the block gets the status ``run_python`` would
    give its own death (e.g. ``Killed by signal SIGKILL``) and the next ``run()``
    starts a new zygote. Nothing outlives the caller: the zygote's supervisor
    watches a lifeline pipe, as a ``PythonSession``'s does. ``run()`` serializes on
    a lock; ``close()`` (also at garbage collection and interpreter exit) ends the
    zygote, and ``run()`` afterwards raises ``ValueError``.
    """

    def __init__(self, preload: tuple[str, ...] = (), *, python: str | None = None) -> None:
        for name in preload:
            if not (isinstance(name, str) and all(part.isidentifier() for part in name.split("."))):
                raise ValueError(f"not a module name: {name!r}")
        super().__init__(python)
        self.preload = tuple(preload)

    @property
    def preloaded(self) -> tuple[str, ...] | None:
        """The preload modules the current zygote imported; None before it is ready."""
        zygote = self._slot.worker
        names = zygote.info.get("preloaded") if zygote is not None and zygote.alive else None
        return tuple(name for name in names if isinstance(name, str)) if isinstance(names, list) else None

    def run(self, code: str, *, limits: Limits = Limits(), prelude: str = "") -> ExecResult:
        """Run one block in a fresh child of the zygote. Never raises for anything the
        code does; ``SandboxError`` when the zygote cannot be started, ``ValueError``
        for nonsensical limits or once closed."""
        _check_limits(limits)
        key = _zygote_key(limits)

        def start() -> _Zygote:
            zygote = _Zygote.start(self._interpreter, limits, {"warm": {"preload": list(self.preload)}})
            zygote.key = key
            return zygote

        return self._run(lambda zygote, started: zygote.run_code(code, prelude, limits, started), start,
                         fits=lambda zygote: zygote.key == key)


class WarmPool:
    """``WarmPython`` for callers on several threads: one zygote per block in flight.

    A ``WarmPython`` runs one block at a time (its zygote forks and waits for one
    child), so a batch with ``--concurrency`` would queue every block behind the
    slowest. The pool hands each ``run()`` an idle ``WarmPython`` and starts another
    only when all are busy; the most recently used is handed out first, so callers on
    one thread keep a single zygote. Same ``run()`` contract and results as
    ``WarmPython``; ``close()`` ends every zygote (after the blocks in flight).
    """

    def __init__(self, preload: tuple[str, ...] = (), *, python: str | None = None) -> None:
        self._first = WarmPython(preload, python=python)  # checks the names and the interpreter now
        self.preload = self._first.preload
        self._python = python
        self._lock = threading.Lock()
        self._idle: list[WarmPython] = [self._first]
        self._members: list[WarmPython] = [self._first]
        self._closed = False

    @property
    def preloaded(self) -> tuple[str, ...] | None:
        """What a ready zygote imported; None before any is ready."""
        return next((names for member in list(self._members) if (names := member.preloaded) is not None), None)

    @property
    def size(self) -> int:
        """The zygotes started or ready to start: the most blocks that were ever in flight at once."""
        return len(self._members)

    def run(self, code: str, *, limits: Limits = Limits(), prelude: str = "") -> ExecResult:
        with self._lock:
            if self._closed:
                raise ValueError("run() on a closed WarmPool")
            if self._idle:
                member = self._idle.pop()
            else:
                member = WarmPython(self.preload, python=self._python)
                self._members.append(member)
        try:
            return member.run(code, limits=limits, prelude=prelude)
        finally:
            with self._lock:
                closed = self._closed
                if not closed:
                    self._idle.append(member)
            if closed:
                member.close()

    def close(self) -> None:
        """End every zygote. Idempotent."""
        with self._lock:  # not held while closing: a running block's close waits for the block
            self._closed = True
            members, self._idle = list(self._members), []
        for member in members:
            member.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---------------------------------------------------------------------- processes


def _pidfd_open(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def _has_exited(proc: subprocess.Popen) -> bool:
    """Exit check that does NOT reap (WNOWAIT), so the group id stays reserved."""
    if not hasattr(os, "waitid"):  # macOS before Python 3.13: reaping check instead
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True


def _stop_politely(proc: subprocess.Popen, grace_s: float = 1.0) -> None:
    """SIGTERM the supervisor and wait (without reaping) for it to finish."""
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while not _has_exited(proc) and time.monotonic() < deadline:
        time.sleep(0.002)


def _kill_session_leftovers(sid: int) -> None:
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


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _remove_tree(root: str) -> None:
    """Remove the temporary directory even if the code made parts of it unwritable
    (the runner's own function: a warm zygote cleans up after each block with it)."""
    remove_tree(root)

