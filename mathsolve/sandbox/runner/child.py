"""The child of a one-shot run: finish the confinement (mounts, working directory,
capabilities), then run the Python code, or become the program (``run_program``):
nothing of Python runs between the limits and the program.

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

from .execute import execute, last_traceback_line, report_and_exit
from .kernel import EXIT_NOT_EXECUTED, EXIT_SETUP, LIBC, LINUX, PR_SET_PDEATHSIG, Reporter, flush_stdio, prctl
from .mounts import drop_privileges, setup_mounts


def prepare_child(job: dict, reporter: Reporter, namespaces: list[str]) -> list[str]:
    """Finish the confinement in the child; returns the protections obtained."""
    try:
        if LIBC is not None:
            # If the supervisor is killed, take the child down too (setsid'd or not).
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
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
        reporter.send({"setup_error": last_traceback_line()})
        flush_stdio()
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


def exec_program(job: dict, reporter: Reporter, namespaces: list[str]) -> None:
    """Finish the confinement, then replace this process with the program: it runs
    under every limit set so far, in the work directory, with the job's environment.
    Never returns; a program that cannot be executed is reported as a result."""
    got = prepare_child(job, reporter, namespaces)
    program = job["program"]
    try:
        os.set_inheritable(reporter.fd, False)  # the status channel stays ours: closed at exec
    except OSError:
        pass
    reporter.send({"ready": got})
    # Python ignores these two, and an ignored signal stays ignored across exec: the
    # program (and a pipeline it starts) gets the defaults, as from a shell.
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execve(program["path"], program["argv"], program["env"])
    except OSError as exc:  # gone from the sandbox's view of the filesystem, not executable, ...
        if exc.errno == errno.ENOENT and not os.path.exists(program["path"]):
            error = "program not found: %s" % program["argv"][0]
        else:
            error = "cannot execute %s: %s" % (program["argv"][0], exc.strerror or exc)
        reporter.send({"result": {"status": "error", "error": error, "traceback": None}})
    os._exit(EXIT_NOT_EXECUTED)
