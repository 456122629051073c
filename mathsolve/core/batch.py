"""Many problems with one loaded model: resumable JSONL out, progress, voting.

Loss-free by construction: each record is written, flushed and fsync'ed the moment
its problem finishes, so Ctrl-C, a crash or a power cut lose at most the problems in
flight. Re-running the same command with the same output file skips every problem
whose id is already there; a half-written last line (the process died mid-write) is
cut off before appending, so the file stays valid JSONL and no problem gets two
records.

Concurrency (`run_batch(..., concurrency=N)`, for engines that serve many sessions at
once: the batched llama.cpp engine, a server): N problems are in flight, each in its own
thread with its own session (or K, voting), so one problem's code runs while the others
generate; when one ends, the next starts at once and takes the slot it freed (continuous
batching). Records are written by the calling thread, one at a time, in completion order
(ids make the order irrelevant).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from mathsolve.files import jsonsafe
from mathsolve.errors import IOFailure, UsageError
from mathsolve.core.problems import Problem


RECORD_PREFIX = b'{"id": '  # how every record line mathsolve writes begins (dump_line of {"id": ...})


def is_record(value: Any) -> bool:
    """A record mathsolve wrote: a solution (`schema: mathsolve.solution/...`) or an input
    error, each with its problem id."""
    return (isinstance(value, dict) and isinstance(value.get("id"), str)
            and (str(value.get("schema", "")).startswith("mathsolve.") or value.get("status") == "input-error"))


def parse_records(data: bytes, *, where: str = "records") -> dict[str, dict[str, Any]]:
    """Records by id from JSONL bytes mathsolve wrote. A line that is not such a record
    means the file is not ours: UsageError, so nothing appends to someone else's file."""
    done: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            record = jsonsafe.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, jsonsafe.JSONInputError):
            record = None
        if not is_record(record):
            raise UsageError(f"{where} line {number} is not a mathsolve record, so the file is not one mathsolve "
                             "wrote; mathsolve will not append to it: choose another output file")
        done[record["id"]] = record
    return done


def read_records(path: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(path)
    return parse_records(path.read_bytes(), where=str(path)) if path.exists() else {}


class ResultsFile:
    """An append-only JSONL file of records keyed by problem id, written by one run at a
    time (mathsolve.files.outputs.RunLock), and only ever a file mathsolve created: an existing
    file must hold nothing but mathsolve records (a half-written last record, left by a
    crash mid-write, is cut off; any other content is refused, untouched)."""

    def __init__(self, path: str | Path, *, protect: tuple[tuple[str, str], ...] = (), wait: bool = False,
                 notify: Callable[[str], None] | None = None) -> None:
        from mathsolve.files.outputs import RunLock, check_target

        self.path = Path(path)
        self.done: dict[str, dict[str, Any]] = {}
        self.repaired_bytes = 0
        check_target(self.path, protect=protect)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IOFailure(f"cannot create the folder of {self.path}: {exc.strerror or exc}") from None
        self._lock = threading.Lock()  # one record at a time, whole lines only
        self._run_lock = RunLock(self.path, wait=wait, notify=notify).acquire()
        try:
            self._repair_and_load()
            self._fh = open(self.path, "ab")  # whole lines of jsonsafe.dump_line, one write each
        except OSError as exc:
            self._run_lock.release()
            raise IOFailure(f"cannot write {self.path}: {exc.strerror or exc}") from None
        except BaseException:
            self._run_lock.release()
            raise

    def _repair_and_load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        self.done = parse_records(data[:end], where=str(self.path))
        if end < len(data):  # a last line without its newline: the writer died mid-line
            if not data[end:].startswith(RECORD_PREFIX):
                raise UsageError(f"{self.path} ends with a line that is not a mathsolve record; mathsolve "
                                 "will not change it: choose another output file")
            self.repaired_bytes = len(data) - end
            with open(self.path, "r+b") as fh:
                fh.truncate(end)

    def write(self, record: dict[str, Any]) -> None:
        line = jsonsafe.dump_line(record)  # the one JSONL writer: any text in it stays encodable
        with self._lock:
            try:
                self._fh.write(line)
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError as exc:
                raise IOFailure(f"cannot write {self.path}: {exc.strerror or exc} (the records before this one "
                                "are kept; rerun to resume)") from None
            self.done[str(record["id"])] = record

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass  # a full disk at the last flush: write() already reported it
        finally:
            self._run_lock.release()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class BatchStats:
    total: int = 0
    done: int = 0  # problems finished in this run
    skipped: int = 0  # already in the output file
    input_errors: int = 0
    graded: int = 0
    correct: int = 0
    pass_any: int = 0  # pass@K: some sample correct
    started: float = field(default_factory=time.perf_counter)

    @property
    def per_minute(self) -> float:
        elapsed = time.perf_counter() - self.started
        return 60.0 * self.done / elapsed if elapsed > 0 and self.done else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None


def error_record(problem: Problem) -> dict[str, Any]:
    from mathsolve.api import SCHEMA

    return {"id": problem.id, "source": problem.source, "schema": SCHEMA, "status": "input-error",
            "error": problem.error}


def solve_problem(solver, problem: Problem, *, samples: int, grader, events=None,
                  observer=None) -> dict[str, Any]:
    """One record for one problem: a single solve, or K samples and their vote
    (mathsolve.core.voting; `observer` follows its samples)."""
    from mathsolve.core.voting import vote, vote_record

    if samples <= 1:
        record = solver.solve(problem.question, events=events)
    else:
        votes = vote(solver, problem.question, samples=samples, equal=grader.equal, observer=observer)
        record = vote_record(votes, samples)
    record = {"id": problem.id, "source": problem.source, **record}
    if problem.reference is not None:
        record["reference"] = problem.reference
        record["correct"] = bool(record["answer"]) and grader.equal(record["answer"], problem.reference)
        if samples > 1:
            for sample in record["samples"]:
                sample["correct"] = bool(sample["answer"]) and grader.equal(sample["answer"], problem.reference)
            record["vote"]["pass"] = any(s["correct"] for s in record["samples"])
    return record


def run_batch(
    problems: Iterable[Problem],
    solver,
    *,
    out: ResultsFile | None,
    grader,
    samples: int = 1,
    on_record: Callable[[dict[str, Any], BatchStats], None] | None = None,
    on_skip: Callable[[Problem, BatchStats], None] | None = None,
    stats: BatchStats | None = None,
    concurrency: int = 1,
    run: dict[str, Any] | None = None,
) -> BatchStats:
    """Solve every problem not yet in `out`; write each record as soon as it exists.

    KeyboardInterrupt propagates after the finished records are safe on disk; the
    problems in flight are simply not written, and the next run starts with them.
    With `concurrency` > 1, that many problems are solved at once, each in a thread (the
    solver's engine must allow it); when one fails, no new problem starts, the ones in
    flight finish and are written, then the first error propagates. `on_record` and
    `on_skip` are always called from the calling thread. `run` (mathsolve.core.provenance) is
    stored in every record: the settings that produced it.
    """
    stats = stats or BatchStats()
    pool = _InFlight(concurrency) if concurrency > 1 else None

    def finish(record: dict[str, Any] | None) -> None:
        if record is None:  # a failed problem in flight: nothing to write
            return
        if run is not None:
            record["run"] = run
        if out is not None:
            out.write(record)
        if record.get("status") != "input-error":
            stats.done += 1
        _count(record, stats)
        if on_record is not None:
            on_record(record, stats)

    seen: set[str] = set()
    try:
        for problem in problems:
            if problem.id in seen:  # the same problem twice in the input: one record
                continue
            seen.add(problem.id)
            if out is not None and problem.id in out.done:
                stats.skipped += 1
                stats.input_errors += problem.error is not None  # still wrong in the input
                _count(out.done[problem.id], stats)
                if on_skip is not None:
                    on_skip(problem, stats)
                continue
            if problem.error is not None:
                stats.input_errors += 1
                finish(error_record(problem))
                continue
            if pool is None:
                record = solve_problem(solver, problem, samples=samples, grader=grader)
                if record.get("status") == "interrupted":
                    raise KeyboardInterrupt
                finish(record)
                continue
            while pool.running >= pool.size and pool.error is None:
                finish(pool.next())
            if pool.error is not None:
                break
            pool.submit(lambda p=problem: solve_problem(solver, p, samples=samples, grader=grader))
        if pool is not None:
            while pool.running:
                finish(pool.next())
            if pool.error is not None:
                raise pool.error
    finally:
        if pool is not None:
            pool.abandon()
    return stats


class _InFlight:
    """At most `size` problems solving at once, each in a daemon thread (so Ctrl-C never
    waits for them); results come back through a queue to the calling thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.running = 0
        self.error: BaseException | None = None  # the first failure
        self._results: queue.Queue = queue.Queue()
        self._abandoned = threading.Event()

    def submit(self, work: Callable[[], dict[str, Any]]) -> None:
        def run() -> None:
            try:
                result: tuple[dict[str, Any] | None, BaseException | None] = (work(), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                result = (None, exc)
            if not self._abandoned.is_set():
                self._results.put(result)

        threading.Thread(target=run, name="mathsolve-problem", daemon=True).start()
        self.running += 1

    def next(self) -> dict[str, Any] | None:
        """Wait for one problem in flight: its record, or None when it failed (the first
        failure is kept in `error`)."""
        record, error = self._results.get()
        self.running -= 1
        if error is None and record is not None and record.get("status") == "interrupted":
            error = KeyboardInterrupt()
        if error is not None:
            self.error = self.error or error
            return None
        return record

    def abandon(self) -> None:
        """Stop listening: threads still running (after Ctrl-C or an error) are dropped."""
        self._abandoned.set()


def _count(record: dict[str, Any], stats: BatchStats) -> None:
    if "correct" in record:
        stats.graded += 1
        stats.correct += bool(record["correct"])
        vote = record.get("vote") or {}
        stats.pass_any += bool(vote.get("pass", record["correct"]))
