"""The warm backends: ``WarmPython`` (``run_python``'s contract, with the heavy imports
paid once, in a confined zygote that forks a fresh child per block), ``WarmPool``
(one zygote per block in flight, for callers on several threads), and the parent's
side of the zygote's runner.
"""

from __future__ import annotations

import json
import threading
import time

from mathsolve.sandbox.launch import WARM_TEMP_PREFIX
from mathsolve.sandbox.result import ExecResult, status_text
from mathsolve.sandbox.session import INTERRUPT_GRACE_S, Worker, WorkerOwner
from mathsolve.tools.base import Limits


class Zygote(Worker):
    """A warm backend's runner: the session layout, but the long-lived process
    imports the preload modules once and forks a fresh child per block (see
    ``serve_warm`` in the runner). stdout and stderr stay separate, buffered as in
    ``run_python``; a block that overruns is killed (a kill request naming it)."""

    merged = False
    temp_prefix = WARM_TEMP_PREFIX
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
        """As ``Run._classify`` for one run_python call, from the zygote's report."""
        if self.killed_for in ("timeout", "output-limit"):
            return self.killed_for, None, None
        result = self.block_result
        if result is None:  # the zygote itself died (the block killed it)
            return (*self._classify_death(), None)
        if result.get("status") in ("ok", "error", "memory"):
            return result["status"], status_text(result.get("error")), status_text(result.get("traceback"))
        report = result.get("exit") if isinstance(result.get("exit"), dict) else {}
        return (*self._classify_exit(report.get("code"), report.get("signal"), report.get("cpu_s"),
                                     one_shot=True), None)

    def _interrupt(self) -> float:
        """Ask the zygote to kill the block (by id: a late request cannot hit the next)."""
        request = (json.dumps({"kill": self.block_id}) + "\n").encode("utf-8")
        self.outbox = memoryview(bytes(self.outbox) + request)
        self._writable(self.control_fd)
        return time.monotonic() + INTERRUPT_GRACE_S


def _zygote_key(limits: Limits) -> tuple:
    """The limits a zygote holds for its whole life; a block asking for others gets a new one."""
    return (limits.network, limits.file_size_mb, limits.open_files, limits.processes)


class WarmPython(WorkerOwner):
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
        once closed (``Limits`` refuses nonsensical values when it is made)."""
        key = _zygote_key(limits)

        def start() -> Zygote:
            zygote = Zygote.start(self._interpreter, limits, {"warm": {"preload": list(self.preload)}})
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
