"""The K samples of one problem, run together and voted on as they finish (`-n K`).

Sample k is `Solver.solve` with the sampling of sample k (seed + k). Up to `solver.parallel`
samples run at once, each in a worker thread of its own (the batched llama.cpp engine
decodes them together; a sample waiting on its code block leaves the others decoding);
with one at a time they run in order in the calling thread, as before. Samples start in
index order.

After each finished sample the vote is counted again (mathsolve.scoring.vote) and may end
early (`early_stop` setting): once N agree (`--early-stop N`), or, by default, once the
leader can no longer be overtaken by the samples not yet finished. A per-problem
`time_budget` ends it too. Ending cancels every sample still running or waiting: their
rounds stop at the next token (a code block already running finishes first), they are
recorded with status "cancelled", no answer and the tokens they used, and the vote is over
the samples that finished. Which rule ended it, and when, is in the record's
`vote.early_stop`.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from mathsolve.core.loop import Events
from mathsolve.scoring.vote import VoteGroup, eligible, majority, stop_reason

# How long a vote ended by Ctrl-C waits for its samples to wind down (they end at their
# next token) before the caller closes the engine under them.
_WIND_DOWN_S = 2.0


class SampleObserver(Protocol):
    """What a front end learns of a vote as it runs (the K-sample view)."""

    def sample_events(self, index: int) -> Events | None:
        """The loop events of sample `index`; called in the thread that runs it, as it starts."""
        ...

    def sample_done(self, index: int, record: dict[str, Any], groups: list[VoteGroup]) -> None:
        """Sample `index` ended (finished or cancelled); `groups`: the vote so far. Called
        from the thread that runs the vote, one sample at a time."""
        ...


@dataclass
class EarlyStop:
    reason: str  # "agreed" | "unbeatable" | "time_budget"
    after_s: float  # seconds from the problem's start

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "after_s": self.after_s}


@dataclass
class Votes:
    runs: list[dict[str, Any]]  # each sample's record, by index
    groups: list[VoteGroup]
    eligible: int  # samples whose answer voted
    early_stop: EarlyStop | None
    interrupted: bool = False


def vote(solver, question: str, *, samples: int, equal: Callable[[str, str], bool],
         observer: SampleObserver | None = None) -> Votes:
    """Run the `samples` samples of `question` and vote; see the module doc. An engine error
    in any sample cancels the others, waits for them, and is raised."""
    run = _Vote(solver, question, samples, equal, observer)
    if solver.parallel > 1:
        run.in_threads(min(samples, solver.parallel))
    else:
        run.in_order()
    early = run.early
    if early is not None and not any(r["status"] == "cancelled" for r in run.runs):
        early = None  # every sample had ended by the time the rest were cancelled: nothing stopped early
    return Votes(run.runs, run.groups, sum(a is not None for a in run.answers), early, run.interrupted)


def vote_record(votes: Votes, samples: int) -> dict[str, Any]:
    """The record of a vote: it reads like its winning sample (so `mathsolve grade` re-scores
    the vote from the transcript), with the vote and every sample's summary."""
    runs, groups = votes.runs, votes.groups
    if groups:
        winner = runs[groups[0].samples[0]]
    else:  # nothing voted: the first sample that ran to its end speaks for the problem
        winner = next((r for r in runs if r["status"] not in ("cancelled", "interrupted")), runs[0])
    record = dict(winner)
    record["answer"] = groups[0].answer if groups else None
    if votes.interrupted:
        record["status"] = "interrupted"
    record["vote"] = {
        "samples": samples,
        "groups": [{"answer": g.answer, "count": g.count, "samples": g.samples} for g in groups],
        "eligible": votes.eligible,
        "early_stop": votes.early_stop.to_dict() if votes.early_stop else None,
    }
    record["samples"] = [sample_summary(r) for r in runs]
    return record


def sample_summary(run: dict[str, Any]) -> dict[str, Any]:
    keep = ("answer", "status", "transcript", "tool_calls", "rounds", "tokens", "timings", "sampling")
    return {key: run[key] for key in keep if key in run}


def rules(settings) -> tuple[int | None, bool]:
    """(agreeing samples that end the vote or None, whether an unbeatable leader ends it)
    from the `early_stop` setting: auto (None), off (0) or N."""
    value = settings.early_stop
    if value == 0:
        return None, False
    return value, True


class _Vote:
    def __init__(self, solver, question: str, samples: int, equal, observer: SampleObserver | None) -> None:
        self.solver, self.question, self.equal, self.observer = solver, question, equal, observer
        self.agree, self.unbeatable = rules(solver.settings)
        self.budget: float | None = solver.settings.time_budget
        self.protocol_name = solver.protocol.name
        self.runs: list[Any] = [None] * samples
        self.answers: list[str | None] = [None] * samples
        self.groups: list[VoteGroup] = []
        self.early: EarlyStop | None = None
        self.interrupted = False
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self.started = time.perf_counter()

    # -- one sample -------------------------------------------------------------------
    def sample(self, index: int) -> dict[str, Any]:
        sampling = self.solver.sampling(sample=index)
        if self.cancel.is_set():  # ended before this sample started: it never touches the engine
            return self.solver.cancelled(self.question, sampling=sampling)
        events = self.observer.sample_events(index) if self.observer is not None else None
        return self.solver.solve(self.question, sampling=sampling, cancel=self.cancel, events=events)

    def take(self, index: int, record: dict[str, Any]) -> None:
        """A sample ended: count the vote again and see whether it can end."""
        self.runs[index] = record
        if record["status"] == "interrupted":
            self.interrupted = True
            self.cancel.set()
        if eligible(record, self.protocol_name):
            self.answers[index] = record["answer"]
            self.groups = majority(self.answers, self.equal)
        if self.observer is not None:
            self.observer.sample_done(index, record, self.groups)
        remaining = [i for i, r in enumerate(self.runs) if r is None]
        reason = stop_reason(self.groups, remaining, agree=self.agree, stop_unbeatable=self.unbeatable)
        if reason is not None:
            self.stop(reason)

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.early is None and not self.cancel.is_set() and any(r is None for r in self.runs):
                self.early = EarlyStop(reason, round(time.perf_counter() - self.started, 3))
                self.cancel.set()

    # -- one at a time -----------------------------------------------------------------
    def in_order(self) -> None:
        timer = None
        if self.budget:
            timer = threading.Timer(self.budget, self.stop, args=("time_budget",))
            timer.daemon = True
            timer.start()
        try:
            for index in range(len(self.runs)):
                self.take(index, self.sample(index))
        finally:
            if timer is not None:
                timer.cancel()

    # -- several at once -----------------------------------------------------------------
    def in_threads(self, workers: int) -> None:
        results: queue.Queue = queue.Queue()
        order = iter(range(len(self.runs)))
        order_lock = threading.Lock()

        def work() -> None:
            while True:
                with order_lock:
                    index = next(order, None)
                if index is None:
                    return
                try:
                    results.put((index, self.sample(index), None))
                except BaseException as exc:  # noqa: BLE001 - handed to the voting thread
                    results.put((index, None, exc))

        threads = [threading.Thread(target=work, name=f"mathsolve-sample-{i}", daemon=True) for i in range(workers)]
        for thread in threads:
            thread.start()
        deadline = None if not self.budget else self.started + self.budget
        error: BaseException | None = None
        pending = len(self.runs)
        try:
            while pending:
                wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.perf_counter()))
                try:
                    index, record, exc = results.get(timeout=wait)
                except queue.Empty:
                    if deadline is not None and time.perf_counter() >= deadline:
                        self.stop("time_budget")
                        deadline = None
                    continue
                pending -= 1
                if exc is not None:
                    error = error or exc
                    self.cancel.set()
                    self.runs[index] = self.runs[index] or {}
                    continue
                self.take(index, record)
        except BaseException:  # Ctrl-C, or a failure here: end the samples, give them a moment to let go of the engine
            self.interrupted = True
            self.cancel.set()
            ends = time.monotonic() + _WIND_DOWN_S
            for thread in threads:
                thread.join(max(0.0, ends - time.monotonic()))
            raise
        if error is not None:
            raise error
