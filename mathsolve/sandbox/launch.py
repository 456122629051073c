"""Starting one runner: its private directory (and removing those of callers killed
mid-run), its pids cgroup, its pipes, the job file that carries the code, and the
runner process itself, started by path with no ``preexec_fn``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import mathsolve.sandbox.runner as runner_package
from mathsolve.sandbox.cgroups import PidsCgroup
from mathsolve.sandbox.process import LINUX, child_env, pid_alive
from mathsolve.sandbox.result import CODE_FILENAME, SandboxError
from mathsolve.sandbox.runner.trees import remove_tree  # standard library only, like all of the runner

# The runner's entry script, found from the installed package wherever it lives.
RUNNER = os.path.join(os.path.dirname(os.path.abspath(runner_package.__file__)), "start.py")

TEMP_PREFIX = "mathsolve-sandbox-"  # also the cgroups': both are named after the calling process
WARM_TEMP_PREFIX = "mathsolve-warm-"  # a warm zygote's directory: its processes are named after it
_STALE_AGE_S = 3600.0

# Off-switches for tests and debugging, to exercise the fallbacks of machines
# where the kernel refuses namespaces or cgroups.
USE_NAMESPACES = True
USE_CGROUP = True


@dataclass
class Launched:
    """A started runner and what belongs to it, for the parent to read and clean up."""

    proc: subprocess.Popen
    root: str  # the private directory (the work dir is ``root/work``)
    cgroup: PidsCgroup | None
    status_fd: int  # our end of the status channel
    pipes: tuple[int, ...]  # our ends of a session's control and lifeline pipes


def launch(interpreter: str, runner_limits: dict, network: bool, fields: Callable[[str], dict], *,
           temp_prefix: str, session: bool, merged: bool, stdin: bytes = b"") -> Launched:
    """Make the private directory (and cgroup), write the job, spawn the runner.

    ``fields(workdir)``: the job's own fields (the code, or the program and its
    environment). ``session``: a long-lived runner, with control and lifeline pipes.
    ``merged``: stderr into stdout, unbuffered. ``stdin``: what the runner, hence a
    program, reads on standard input; /dev/null when empty.
    """
    _remove_stale_tempdirs(tempfile.gettempdir())
    root = os.path.realpath(tempfile.mkdtemp(prefix=f"{temp_prefix}{os.getpid()}-"))
    cgroup: PidsCgroup | None = None
    ours: list[int] = []  # our ends of the pipes
    theirs: list[int] = []  # the runner's ends: closed here once it has them
    stdin_fd: int | None = None
    try:
        workdir = os.path.join(root, "work")
        os.mkdir(workdir, 0o700)
        cgroup = PidsCgroup.create(runner_limits["processes"]) if LINUX and USE_CGROUP else None
        status_r, status_w = os.pipe()
        ours.append(status_r)
        theirs.append(status_w)
        for _ in range(2 if session else 0):  # control and lifeline: the runner reads
            read_end, write_end = os.pipe()
            ours.append(write_end)
            theirs.append(read_end)
        job_fields = fields(workdir)
        if session:
            job_fields = {**job_fields, "session": True, "control_fd": theirs[1], "lifeline_fd": theirs[2]}
        job = _write_job(root, workdir, runner_limits, network, cgroup, job_fields)
        if stdin:
            stdin_fd = _stdin_file(root, stdin)
        # -u: a session's stdout and stderr share one pipe, in the order written.
        flags = ["-I", "-B", "-X", "utf8"] + (["-u"] if merged else [])
        try:
            # No preexec_fn: the runner applies every limit itself (threaded parents).
            proc = subprocess.Popen(
                [interpreter, *flags, RUNNER, job, str(theirs[0])],
                stdin=subprocess.DEVNULL if stdin_fd is None else stdin_fd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                cwd=workdir,
                env=child_env(workdir, interpreter),
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
        remove_tree(root)
        raise
    finally:
        for fd in theirs if stdin_fd is None else [*theirs, stdin_fd]:
            os.close(fd)
    return Launched(proc, root, cgroup, ours[0], tuple(ours[1:]))


def _write_job(root: str, workdir: str, limits: dict, network: bool, cgroup: PidsCgroup | None,
               fields: dict) -> str:
    """The code goes to the runner in a private file, never on the command line."""
    job = {
        "workdir": workdir,
        "network": network,
        "namespaces": USE_NAMESPACES,
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


def _stdin_file(root: str, data: bytes) -> int:
    """A program's standard input: a private file, unlinked once open, so nothing of
    the call is left on disk and no pipe needs feeding while the program runs."""
    path = os.path.join(root, "stdin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    reader = os.open(path, os.O_RDONLY)
    os.unlink(path)
    return reader


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
        prefix = next((p for p in (TEMP_PREFIX, WARM_TEMP_PREFIX) if name.startswith(p)), None)
        owner = name[len(prefix):].split("-", 1)[0] if prefix else ""
        path = os.path.join(parent, name)
        try:
            old = now - os.lstat(path).st_mtime > _STALE_AGE_S
        except OSError:
            continue
        if owner.isdigit() and old and not pid_alive(int(owner)):
            remove_tree(path)
