"""A grading worker: a helper interpreter that judges untrusted answers, one JSON line each way.

Both graders parse model-written text with libraries that ``eval`` strings or can run for
ever (sympy for the reference grader, math-verify for the modern one), so neither runs in
mathsolve's own process. Each worker is a script that imports nothing from mathsolve,
started as ``python -I <script>`` in a scratch directory: it answers one JSON line per
request line on stdout, and its owner kills it when an answer is late.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from mathsolve.errors import MathsolveError

__all__ = ["GradingError", "WorkerGrader", "WorkerProcess"]


class GradingError(MathsolveError):
    """The grader cannot work (worker failed to start, LaTeX parser missing)."""


class WorkerProcess:
    """One running worker script and the thread that reads its answers."""

    def __init__(self, script: Path, workdir: Path) -> None:
        self.script = script
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        # A reader thread rather than select(): it works on every platform and lets the
        # caller wait on a queue with a timeout.
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()
        self.next_id = 0

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)  # end of stream: the worker died

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """Next message, or ``None`` on time-out or when the worker died."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:
                return None
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours; the protocol channel should never carry this
            if isinstance(message, dict):
                return message

    def send(self, request: dict[str, Any]) -> bool:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def ask(self, request: dict[str, Any], deadline: float) -> dict[str, Any] | None:
        """Send ``request`` (numbered here) and wait until ``deadline`` (a time.monotonic()
        value) for its answer; ``None`` when it is late or the worker died."""
        self.next_id += 1
        request_id = self.next_id
        if not self.send({**request, "id": request_id}):
            return None
        while True:
            remaining = deadline - time.monotonic()
            reply = self.receive(remaining) if remaining > 0 else None
            if reply is None or reply.get("id") == request_id:
                return reply
            # A stale reply (to a request whose answer came too late): keep waiting.

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Stop the process now (used after a time-out: it may be stuck)."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def stop(self) -> None:
        """Ask the process to finish (stdin EOF), killing it if it does not."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class WorkerGrader:
    """What both graders share: one worker at a time, started on first use in a scratch
    directory of its own (even a file written by a library bug lands there, never in the
    user's directory), killed when an answer is late, stopped by `close()`. Thread-safe:
    threads grading at once share the worker, one comparison at a time.

    A subclass sets `script`, `scratch_prefix` and `start_timeout`, and checks the
    worker's first message in `_accept(worker, hello)`."""

    script: Path
    scratch_prefix = "mathsolve-grader-"
    start_timeout = 120.0  # importing sympy on a cold disk can be slow

    def __init__(self, *, workdir: Path | None = None) -> None:
        self._workdir_arg = workdir
        self._workdir: Path | None = None
        self._worker: WorkerProcess | None = None
        self._lock = threading.RLock()
        self.restarts = 0  # workers killed after a late answer (for diagnostics and tests)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker process and remove its scratch directory."""
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None
            if self._workdir is not None and self._workdir_arg is None:
                shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    @property
    def worker_pid(self) -> int | None:
        """Process id of the running worker, ``None`` when none runs."""
        worker = self._worker
        return worker.process.pid if worker is not None and worker.alive else None

    def _ensure_worker(self) -> WorkerProcess:
        """The running worker, started if none runs; `_accept` raises if it cannot work."""
        if self._worker is not None and self._worker.alive:
            return self._worker
        if self._worker is not None:
            self._worker.kill()
            self._worker = None
        if self._workdir is None:
            self._workdir = self._workdir_arg or Path(tempfile.mkdtemp(prefix=self.scratch_prefix))
        worker = WorkerProcess(self.script, self._workdir)
        hello = worker.receive(self.start_timeout)
        if hello is None or not hello.get("ready"):
            worker.kill()
            raise GradingError(f"the grading worker did not start ({sys.executable} -I {self.script})")
        self._accept(worker, hello)
        self._worker = worker
        return worker

    def _accept(self, worker: WorkerProcess, hello: dict[str, Any]) -> None:
        """Check the worker's first message; stop it and raise when it cannot grade."""

    def _discard_worker(self) -> None:
        """Kill the current worker; the next comparison starts a fresh one."""
        if self._worker is not None:
            self._worker.kill()
            self._worker = None
            self.restarts += 1
