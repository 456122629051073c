"""Long-lived runners: ``PythonSession`` (ONE confined interpreter for the blocks of a
problem, a notebook kernel's semantics), the session worker it talks to, and what it
shares with the warm backends (``WorkerOwner``: one runner at a time, started on
demand, replaced when it died, gone at ``close()``).
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import signal
import threading
import time
import weakref
from collections.abc import Callable

from mathsolve.sandbox.process import find_interpreter, has_exited
from mathsolve.sandbox.result import ExecResult, SandboxError, status_text
from mathsolve.sandbox.run import STARTUP_GRACE_S, STATUS_LINE_CAP, Run
from mathsolve.tools.base import Limits

INTERRUPT_GRACE_S = 1.0  # a session's timed-out block: SIGINT, then this long before a kill


class Worker(Run):
    """A session's long-lived runner: one block at a time goes down the control
    pipe; output and the result (matched by a per-block id) come back."""

    session = True
    merged = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.control_fd = self.pipes[0]
        os.set_blocking(self.control_fd, False)
        # A result line carries the display (JSON-escaped: up to 12 bytes a character).
        self.line_cap = STATUS_LINE_CAP + 12 * (self.limits.output_bytes + 1)
        self.block_id: str | None = None
        self.block_result: dict | None = None
        self.outbox = memoryview(b"")

    @property
    def alive(self) -> bool:
        if not self.finished and not self.exited:
            self.exited = has_exited(self.proc)
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
                deadline = self.started + STARTUP_GRACE_S + self.limits.timeout_s
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
        display = status_text(result.get("display")) if status == "ok" else None
        if display is not None:  # the display counts toward the output cap
            data = display.encode("utf-8")
            room = self.limits.output_bytes - len(self.stdout)
            if len(data) > room:
                status, display = "output-limit", data[: max(room, 0)].decode("utf-8", errors="ignore")
        return status, status_text(result.get("error")), status_text(result.get("traceback")), display

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
        return time.monotonic() + INTERRUPT_GRACE_S

    def _drain_some(self) -> None:
        """Read what is there now, boundedly: a background writer must not hold us."""
        for fd in list(self.buffers):
            for _ in range(64):
                if fd not in self.buffers or not self._read(fd):
                    break


class WorkerSlot:
    """A session's current worker (apart from the session, so that the session's
    finalizer does not keep the session alive)."""

    def __init__(self) -> None:
        self.worker: Worker | None = None

    def clear(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.finish()


class WorkerOwner:
    """What ``PythonSession`` and ``WarmPython`` share: one long-lived runner at a
    time, started on demand by ``run()`` and replaced when it died; ``run()`` and
    ``close()`` serialize on a lock; the runner goes at ``close()``, garbage
    collection or interpreter exit."""

    def __init__(self, python: str | None) -> None:
        if os.name != "posix":
            raise SandboxError("the Python sandbox needs a POSIX system (Linux or macOS)")
        self._interpreter = find_interpreter(python)
        self._lock = threading.Lock()
        self._slot = WorkerSlot()
        self._finalizer = weakref.finalize(self, self._slot.clear)  # also at interpreter exit

    def _run(self, block: Callable[[Worker, float], ExecResult], start: Callable[[], Worker],
             fits: Callable[[Worker], bool] = lambda worker: True) -> ExecResult:
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


class PythonSession(WorkerOwner):
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
        super().__init__(python)
        self.limits = limits
        self._cells = 0

    def run(self, code: str) -> ExecResult:
        """Run one block in the session. Never raises for anything the code does;
        ``SandboxError`` when the worker cannot be started, ``ValueError`` once closed."""

        def block(worker: Worker, started: float) -> ExecResult:
            self._cells += 1
            return worker.run_block(code, self._cells, started)

        return self._run(block, lambda: Worker.start(self._interpreter, self.limits, {}))
