"""One warm block, in the child the zygote forked for it: undo what is the zygote's,
apply the block's own limits and fresh random state, then run the code exactly as a
one-shot child does, at the same stack depth.

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import os
import resource
import signal
import sys

from .execute import execute, report_and_exit
from .kernel import (
    EXIT_SETUP,
    LIBC,
    PR_SET_DUMPABLE,
    PR_SET_PDEATHSIG,
    STARTUP_HANDLERS,
    Reporter,
    ceil_s,
    prctl,
    set_handler,
    setrlimit,
)


class WarmBlock(BaseException):
    """Raised in a block's freshly forked child once it is set up: it unwinds the
    zygote's stack up to ``main``, which calls ``run`` where ``run_child`` would be
    called, so that the code runs at the same stack depth as in run_python."""

    def __init__(self, request: dict, filename: str, result_fd: int) -> None:
        super().__init__()
        self.request, self.filename, self.result_fd = request, filename, result_fd

    def run(self) -> None:
        me = os.getpid()
        outcome = execute(self.request.get("prelude") or "", self.request["code"], self.filename)
        report_and_exit(outcome, me, Reporter(self.result_fd).send)


def block_child(request: dict, context: dict, result_fd: int) -> None:
    """In the forked child: undo what is the zygote's, apply the block's limits,
    then raise WarmBlock to run the code like run_child does."""
    try:
        os.setpgid(0, 0)
        if LIBC is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the zygote
            prctl(PR_SET_DUMPABLE, 1)  # as any fresh process: its own /proc entries are its own
        if os.getppid() != context["zygote"]:
            os._exit(EXIT_SETUP)  # the zygote died before the prctl took effect
        signal.set_wakeup_fd(-1)
        for signum, handler in STARTUP_HANDLERS.items():
            if handler is not None:
                set_handler(signum, handler)
        # Nothing of the zygote's stays open: its control and status pipes above all.
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, max(resource.getrlimit(resource.RLIMIT_NOFILE)[0], result_fd + 1))
        block_limits(request)
        reseed(context["rngs"])
        os.chdir(context["job"]["workdir"])
    except BaseException:
        os._exit(EXIT_SETUP)
    raise WarmBlock(request, context["job"]["code_filename"], result_fd)


def block_limits(request: dict) -> None:
    """CPU: ``cpu_s`` of this child's own time (a fork starts at zero), SIGXCPU then
    SIGKILL as in run_python. Memory: ``memory_mb`` on top of the address space the
    child has at birth (the zygote's: interpreter plus preloaded modules)."""
    cpu = ceil_s(request["cpu_s"])
    setrlimit(resource.RLIMIT_CPU, cpu, cpu + 1)
    memory_mb = request.get("memory_mb")
    if memory_mb is not None and sys.platform != "darwin":
        setrlimit(resource.RLIMIT_AS, _address_space() + memory_mb * 1024 * 1024, None)


def _address_space() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def reseed(rngs: list) -> None:
    """Fresh random state, as a new interpreter would have: every random.Random
    the zygote holds (the random module's, sympy's ...) and numpy's legacy global
    generator. Warnings shown once by the zygote's imports may show again."""
    for rng in rngs:
        rng.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            numpy_random.seed()
        except BaseException:
            pass
    warnings = sys.modules.get("warnings")
    if warnings is not None and isinstance(getattr(warnings, "onceregistry", None), dict):
        warnings.onceregistry.clear()
        mutated = getattr(warnings, "_filters_mutated", None)  # invalidates per-module registries
        if mutated is not None:
            mutated()
