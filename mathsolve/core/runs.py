"""A batch from start to end: check and lock the output, refuse to mix settings, load the
model once, solve what is not done yet, and tell an observer what happens (the terminal
view in mathsolve.cli.views.batch draws it; tests and other callers pass their own).
The per-problem work is mathsolve.core.batch; this is its orchestration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from mathsolve.core.batch import BatchStats, ResultsFile, run_batch
from mathsolve.core.problems import Problem
from mathsolve.errors import UsageError


class RunObserver(Protocol):
    """What a batch reports as it goes; every call comes from the calling thread."""

    download_progress: Any  # a mathsolve.hub.DownloadProgress for a model not yet cached, or None

    def note(self, message: str, *, warning: bool = False) -> None: ...
    def begin(self, total: int) -> None: ...
    def record(self, record: dict[str, Any], stats: BatchStats) -> None: ...
    def skipped(self, problem: Problem, stats: BatchStats) -> None: ...
    def end(self) -> None: ...


def run_problems(
    settings,
    problems: list[Problem],
    *,
    output: Path | None,
    samples: int,
    observer: RunObserver,
    concurrency: int | None = None,
    protect: tuple[tuple[str, str], ...] = (),
    wait: bool = False,
    run: dict[str, Any] | None = None,
) -> BatchStats:
    """Load the model once, solve what is not yet in `output`, report to `observer`.

    `concurrency` (default: the setting) problems run at once when the engine allows it:
    the local llama.cpp engine then decodes them together in one context (with `samples`,
    concurrency x samples sessions share its `parallel` slots; mathsolve.core.parallel),
    a server gets them as parallel requests. The
    output file is checked (mathsolve.files.outputs) and locked before the model loads, and
    must hold records of these settings only (mathsolve.core.provenance). `protect` names the
    files the output must not be (inputs, the model); `wait` waits for another run
    holding the output instead of refusing. `run` is the settings block of the records
    (mathsolve.core.provenance.run_settings), when the caller computed it already."""
    from mathsolve.api import Solver
    from mathsolve.scoring.graders import open_grader
    from mathsolve.core.provenance import run_settings

    note = observer.note
    for problem in problems:
        if problem.error:
            note(f"skipped: {problem.error}", warning=True)
        elif problem.warning:
            note(f"note: {problem.warning}", warning=True)
    run = run if run is not None else run_settings(settings, samples)
    protect = protect + _model_protection(settings)
    out = ResultsFile(output, protect=protect, wait=wait, notify=note) if output is not None else None
    if out is not None and out.repaired_bytes:
        note(f"{output}: removed a half-written last line ({out.repaired_bytes} bytes)", warning=True)
    stats = BatchStats(total=len({p.id for p in problems}))
    try:
        if out is not None:
            _check_resumable(out, problems, run)
        todo = [p for p in problems if out is None or p.id not in out.done]
        if out is not None and len(todo) < len(problems):
            note(f"{output}: {len(problems) - len(todo)} problem(s) already done, resuming")
        solver = None
        concurrency = concurrency or settings.concurrency
        if any(p.error is None for p in todo):
            in_flight = min(concurrency, sum(p.error is None for p in todo))  # no slots for problems not there
            solver = Solver(settings=settings, notify=note, progress=observer.download_progress,
                            sessions=samples * in_flight)
            concurrency = _concurrency(solver, concurrency if in_flight > 1 else 1, note)
        # The grader the records' `run` names (provenance resolved --grader), with the
        # percent forms on as `mathsolve grade` judges them, so a re-grade gives the same figure.
        with open_grader(run.get("grader", "reference"), percent=True) as grader:
            observer.begin(stats.total)
            try:
                run_batch(problems, solver, out=out, grader=grader, samples=samples, stats=stats, run=run,
                          on_record=observer.record, on_skip=observer.skipped, concurrency=concurrency)
            finally:
                observer.end()
                if solver is not None:
                    solver.close()
    finally:
        if out is not None:
            out.close()
    return stats


def _model_protection(settings) -> tuple[tuple[str, str], ...]:
    from mathsolve import registry
    from mathsolve.core.models import looks_like_path

    local = registry.is_local_engine(settings.engine)
    return ((settings.model, "the model file"),) if local and looks_like_path(settings.model) else ()


def _check_resumable(out: ResultsFile, problems: list[Problem], run: dict[str, Any]) -> None:
    """Refuse to mix: records of other settings, or an id whose record is for another problem."""
    from mathsolve.core.provenance import first_conflict

    conflict = first_conflict(out.done.values(), run)
    if conflict is not None:
        ident, diff = conflict
        raise UsageError(f"{out.path} holds records made with other settings ({'; '.join(diff[:3])}, e.g. record "
                         f"{ident}); resuming would mix them: use another output file (-o) or the same settings")
    for problem in problems:
        record = out.done.get(problem.id)
        recorded = record.get("question") if record else None
        if problem.question is not None and isinstance(recorded, str) and recorded.strip() != problem.question.strip():
            raise UsageError(f"{out.path} has a record {problem.id} for a different problem than {problem.source}; "
                             "the input changed or another input uses the same ids: use another output file (-o)")


def _concurrency(solver, wanted: int, note) -> int:
    """Problems in flight: 1 unless the engine runs sessions in parallel (the batched llama.cpp
    engine, a server). Streaming is off in batches (one answer per round); the Solver bounds
    the code blocks running at once (`tool_slots`)."""
    engine = solver.engine
    if hasattr(engine, "stream"):
        engine.stream = False
    if wanted > 1 and solver.parallel == 1:
        why = ("--parallel is 1" if solver.settings.parallel == 1 else
               f"the {engine.info.name} engine runs one session at a time")
        note(f"concurrency {wanted} -> 1: {why}", warning=True)
        return 1
    return wanted


def tool_slots(concurrency: int) -> int:
    """Code blocks running at once in a concurrent batch: min(concurrency, usable CPUs)."""
    from mathsolve.core.parallel import tool_slots as slots

    return slots(concurrency)
