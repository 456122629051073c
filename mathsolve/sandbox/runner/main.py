"""The runner's main: read the job, confine the supervisor, fork the child, and run
the job's mode in it (one-shot code, a program, a session or a warm zygote) while
the supervisor waits.

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import json
import os
import signal

from .block import WarmBlock
from .child import exec_program, run_child
from .confine import become_subreaper, enter_namespaces, follow_parent, join_cgroup, set_rlimits
from .kernel import LIBC, PR_SET_DUMPABLE, Reporter, prctl
from .session import run_session
from .supervise import forward_sigint, supervise


def main(argv: list[str]) -> None:
    """``argv``: the entry script's, ``[script, JOB_FILE, STATUS_FD]``. Never returns."""
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
            prctl(PR_SET_DUMPABLE, 0)
        except OSError:
            pass
    if session:
        signal.signal(signal.SIGINT, forward_sigint)  # before fork: no window without it
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
        if job.get("program"):
            exec_program(job, reporter, namespaces)
        run_child(job, reporter, namespaces)
    if session:
        os.close(job["control_fd"])
    supervise(child, reporter, "subreaper" in got, job["lifeline_fd"] if session else None)
