"""Session mode (``PythonSession``, job key ``"session"``): in the child, an init that
stays PID 1 of the namespace, and under it one long-lived worker that runs block after
block, notebook-style, in one ``__main__`` namespace. Warm mode (job key ``"warm"``)
has the same layout with a zygote in the worker's place (see ``zygote``).

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import ast
import io
import json
import os
import resource
import signal
import sys
import types

from .child import prepare_child
from .execute import format_traceback, last_traceback_line, register_source
from .kernel import EXIT_ERROR, LIBC, PR_SET_PDEATHSIG, Reporter, ceil_s, exit_report, flush_stdio, prctl
from .supervise import WATCH, forward_sigint
from .zygote import serve_warm


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
    soft = ceil_s(usage.ru_utime + usage.ru_stime + cpu_s)
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
        error = last_traceback_line()
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
        flush_stdio()
        if os.getpid() != me:  # a copy made by os.fork() in the block
            os._exit(0)
        result["id"] = request.get("id")
        reporter.send({"result": result}, fresh_line=True)


def run_session(job: dict, reporter: Reporter, namespaces: list[str]) -> None:
    """Session mode's child: finish the confinement, fork the worker, then stay as
    its init (PID 1 of the namespace, when there is one): reap orphans so that a
    long session does not fill the process cap with zombies, pass interrupts on,
    and report how the worker ended. Never returns."""
    got = prepare_child(job, reporter, namespaces)
    WATCH.live_child = None  # the supervisor's value, copied by fork
    signal.signal(signal.SIGINT, forward_sigint)  # before fork: no window without it
    worker = os.fork()
    if worker == 0:
        if LIBC is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if job.get("warm"):
            serve_warm(job, reporter, got, namespaces)
        serve(job, reporter, got)
        os._exit(EXIT_ERROR)  # pragma: no cover - neither ever returns
    WATCH.live_child = worker
    os.close(job["control_fd"])
    while True:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == worker:
            WATCH.live_child = None
            reporter.send({"worker_exit": exit_report(status, usage)})
            os._exit(0)
