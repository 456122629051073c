"""The parent's side of one sandboxed runner (the supervisor and all it starts):
starting it, reading its pipes without ever holding more than the output cap, the
wall clock, killing its process group and everything else it started, and turning
what it reported into an ``ExecResult``. One-shot calls use one per call; sessions
and warm backends subclass it for their long-lived runners.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time

from mathsolve.sandbox.cgroups import PidsCgroup
from mathsolve.sandbox.launch import TEMP_PREFIX, launch
from mathsolve.sandbox.process import (
    LINUX,
    has_exited,
    kill_session_leftovers,
    pidfd_open,
    signal_name,
    stop_politely,
)
from mathsolve.sandbox.protections import PARENT_PROTECTIONS, PROTECTIONS
from mathsolve.sandbox.result import ExecResult, SandboxError, status_text
from mathsolve.sandbox.runner.trees import remove_tree
from mathsolve.tools.base import Limits

# Interpreter start plus namespace set-up must finish within this (plus the
# code's own timeout); beyond it the sandbox itself is considered broken.
STARTUP_GRACE_S = 30.0
_CHUNK = 64 * 1024
# Longest status line taken in (a result: error line, traceback, a session's display,
# JSON-escaped); a longer one is junk the code wrote and is skipped.
STATUS_LINE_CAP = 1024 * 1024
_POLL_S = 0.02  # exit polling where pidfd is unavailable (macOS)
MEMORY_MARKERS = (b"MemoryError", b"std::bad_alloc", b"Cannot allocate memory", b"out of memory")


class Run:
    """One sandboxed runner (the supervisor and all it starts) with its private
    directory and cgroup: spawning, reading its pipes, killing, classifying.
    ``run_python`` uses one per call; a session one per worker (``Worker``)."""

    session = False  # the runner's session mode: a long-lived worker (see Worker)
    merged = False  # stderr into stdout, unbuffered (a notebook's stream output)
    temp_prefix = TEMP_PREFIX

    def __init__(self, proc: subprocess.Popen, root: str, cgroup: PidsCgroup | None, status_fd: int,
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
        self.line_cap = STATUS_LINE_CAP
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
        self.pidfd = pidfd_open(proc.pid)
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
    def job_fields(cls, fields: dict, workdir: str) -> dict:
        """The job's own fields, once the work dir is known."""
        return fields

    @classmethod
    def start(cls, interpreter: str, limits: Limits, fields: dict, stdin: bytes = b"") -> Run:
        """Make the private directory (and cgroup), write the job, spawn the runner."""
        started = launch(interpreter, cls.runner_limits(limits), limits.network,
                         lambda workdir: cls.job_fields(fields, workdir),
                         temp_prefix=cls.temp_prefix, session=cls.session, merged=cls.merged, stdin=stdin)
        return cls(started.proc, started.root, started.cgroup, started.status_fd, limits, started.pipes)

    # -- reading

    def _deadline(self) -> float:
        if self.ready_at is None:
            return self.started + STARTUP_GRACE_S + self.limits.timeout_s
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
            self.exited = has_exited(self.proc)

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
            stop_politely(self.proc)
        try:
            # Before reaping: while the leader is an unreaped zombie its pid, which
            # is also the group id, cannot be recycled for an unrelated process.
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.cgroup is not None:
            self.cgroup.kill_all()
        if LINUX and not (isinstance(setup, list) and "pidns" in setup):
            kill_session_leftovers(pid)
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
        remove_tree(self.root)

    def protections(self) -> tuple[str, ...]:
        got = set(PARENT_PROTECTIONS)
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
            return result["status"], status_text(result.get("error")), status_text(result.get("traceback"))
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
            if any(marker in (self.stderr or self.stdout) for marker in MEMORY_MARKERS):
                return "memory", "MemoryError"
            return "error", f"Killed by signal {signal_name(sig)}"
        if code == 0 and one_shot:
            return "ok", None
        return "error", f"Exited with code {code}"

    def _startup_failure(self) -> str:
        if self.killed_for == "startup":
            return f"the sandbox did not start within {STARTUP_GRACE_S:.0f} s"
        detail = self.info.get("setup_error")
        if not isinstance(detail, str):
            lines = (self.stderr or self.stdout).decode("utf-8", errors="replace").strip().splitlines()
            detail = lines[-1] if lines else f"exit status {self.proc.poll()}"
        return f"the sandbox runner failed before running the code: {detail}"
