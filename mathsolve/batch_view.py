"""The terminal side of batches and evaluations: progress on stderr, records on stdout
or in a file, and the summary. The work itself is in mathsolve.batch."""

from __future__ import annotations

import json
import random
import threading
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from mathsolve.batch import BatchStats, ResultsFile, read_records, run_batch
from mathsolve.errors import UsageError
from mathsolve.inputs import Problem, is_problem_file, read_problems

BUNDLED = {"gsm8k": "gsm8k.jsonl", "math500": "math500.jsonl"}
_ALIASES = {"math-500": "math500", "math_500": "math500", "gsm-8k": "gsm8k"}


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


def say(console, message: str, style: str = "dim") -> None:
    """A note on stderr. Messages hold user text (paths, field names), never rich markup."""
    from rich.text import Text

    console.print(Text(message, style=style), soft_wrap=True)  # one message, one line


@contextmanager
def progress_bar(total: int, enabled: bool, label: str) -> Iterator[Any]:
    """A rich progress bar on stderr: done/total, problems per minute, ETA, accuracy."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), TextColumn("{task.fields[acc]}"),
    )
    with Progress(*columns, console=_stderr(), transient=False) as progress:
        task = progress.add_task(label, total=total, rate="", acc="")
        yield progress, task


def _advance(bar: Any, stats: BatchStats) -> None:
    if bar is None:
        return
    progress, task = bar
    acc = f"acc {stats.correct}/{stats.graded} ({100 * stats.accuracy:.1f}%)" if stats.accuracy is not None else ""
    progress.update(task, advance=1, rate=f"{stats.per_minute:.1f}/min" if stats.done else "", acc=acc)


def _printer(mode: str):
    """What each finished record shows on stdout."""
    def emit(record: dict[str, Any], stats: BatchStats) -> None:
        if mode == "jsonl":
            print(json.dumps(record, ensure_ascii=False), flush=True)
        elif mode == "lines":
            if record.get("status") == "input-error":
                return
            mark = "" if "correct" not in record else ("  ✓" if record["correct"] else "  ✗")
            print(f"{record['id']}\t{record.get('answer') or '(no answer)'}{mark}", flush=True)
    return emit


def run_problems(
    settings,
    problems: list[Problem],
    *,
    output: Path | None,
    mode: str,
    samples: int,
    label: str = "solving",
    concurrency: int | None = None,
    protect: tuple[tuple[str, str], ...] = (),
    wait: bool = False,
) -> BatchStats:
    """Load the model once, solve what is not yet in `output`, report as we go.

    `concurrency` (default: the setting) problems run at once when the engine allows it
    (a server); the local llama engine has one model context, so it stays at 1. The
    output file is checked (mathsolve.outfile) and locked before the model loads, and
    must hold records of these settings only (mathsolve.provenance). `protect` names the
    files the output must not be (inputs, the model); `wait` waits for another run
    holding the output instead of refusing."""
    from mathsolve.api import Solver
    from mathsolve.scoring.grader import Grader
    from mathsolve.provenance import run_settings

    err = _stderr()
    for problem in problems:
        if problem.error:
            say(err, f"skipped: {problem.error}", "yellow")
        elif problem.warning:
            say(err, f"note: {problem.warning}", "yellow")
    run = run_settings(settings, samples)
    protect = protect + _model_protection(settings)
    out = (ResultsFile(output, protect=protect, wait=wait, notify=lambda m: say(err, m))
           if output is not None else None)
    if out is not None and out.repaired_bytes:
        say(err, f"{output}: removed a half-written last line ({out.repaired_bytes} bytes)", "yellow")
    stats = BatchStats(total=len({p.id for p in problems}))
    emit = _printer(mode)
    try:
        if out is not None:
            _check_resumable(out, problems, run)
        todo = [p for p in problems if out is None or p.id not in out.done]
        if out is not None and len(todo) < len(problems):
            say(err, f"{output}: {len(problems) - len(todo)} problem(s) already done, resuming")
        solver = None
        concurrency = concurrency or settings.concurrency
        if any(p.error is None for p in todo):
            solver = Solver(settings=settings, console=err, notify=lambda m: say(err, m))
            concurrency = _concurrency(solver, concurrency, err)
        # Equivalence as `mathsolve grade` judges it, so a re-grade gives the same figure.
        with Grader(percent=True) as grader, progress_bar(stats.total, err.is_terminal and mode != "stream", label) as bar:
            def on_record(record: dict[str, Any], st: BatchStats) -> None:
                emit(record, st)
                _advance(bar, st)

            try:
                run_batch(problems, solver, out=out, grader=grader, samples=samples, stats=stats, run=run,
                          on_record=on_record, on_skip=lambda p, st: _advance(bar, st), concurrency=concurrency)
            finally:
                if solver is not None:
                    solver.close()
    finally:
        if out is not None:
            out.close()
    return stats


def _model_protection(settings) -> tuple[tuple[str, str], ...]:
    from mathsolve import registry
    from mathsolve.api import looks_like_path

    local = registry.is_local_engine(settings.engine)
    return ((settings.model, "the model file"),) if local and looks_like_path(settings.model) else ()


def _check_resumable(out: ResultsFile, problems: list[Problem], run: dict[str, Any]) -> None:
    """Refuse to mix: records of other settings, or an id whose record is for another problem."""
    from mathsolve.provenance import first_conflict

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


def _concurrency(solver, wanted: int, err) -> int:
    """Problems in flight: 1 unless the engine serves parallel sessions. Streaming is off in
    batches (one answer per round), and code blocks get `tool_slots()` slots."""
    engine = solver.engine
    if hasattr(engine, "stream"):
        engine.stream = False
    if wanted > 1 and not getattr(engine, "concurrent", False):
        say(err, f"concurrency {wanted} -> 1: the {engine.info.name} engine runs one model context in this "
            "process; for problems in parallel serve the model (vLLM, llama-server) and use --engine openai "
            "(see docs/remote.md)", "yellow")
        return 1
    if wanted > 1:
        solver.tool_slots = threading.BoundedSemaphore(tool_slots(wanted))
    return wanted


def tool_slots(concurrency: int) -> int:
    """Code blocks running at once in a concurrent batch: min(concurrency, usable CPUs)."""
    from mathsolve.settings import available_cores

    return max(1, min(concurrency, available_cores()))


def print_summary(stats: BatchStats, output: Path | None) -> None:
    err = _stderr()
    parts = [f"{stats.done} solved", f"{stats.skipped} already done"]
    if stats.input_errors:
        parts.append(f"{stats.input_errors} input error(s)")
    if stats.accuracy is not None:
        parts.append(f"accuracy {stats.correct}/{stats.graded} ({100 * stats.accuracy:.1f}%)")
    if stats.done:
        parts.append(f"{stats.per_minute:.1f} problems/min")
    say(err, " · ".join(parts) + (f" · records in {output}" if output else ""), "")


# -- evaluation ---------------------------------------------------------------------

def dataset_source(name: str) -> tuple[str, str | None]:
    """(file to read, data set name for ground-truth parsing) for a bundled NAME or a PATH."""
    from mathsolve.scoring.ground_truth import DATASETS

    key = _ALIASES.get(name.lower(), name.lower())
    if key in BUNDLED and not is_problem_file(name):
        return str(resources.files("mathsolve.datasets").joinpath(BUNDLED[key])), key
    path = Path(name)
    if not is_problem_file(name):
        raise UsageError(f"unknown data set {name!r}: bundled ones are {', '.join(BUNDLED)}; or give a file path")
    stem = path.stem.lower().replace("_", "-")
    return str(path), stem if stem in DATASETS else None


def select(problems: list[Problem], *, offset: int, limit: int | None, sample: int | None, seed: int) -> list[Problem]:
    """--offset/--limit slice the set in its order; --sample N then draws N of those
    with the seed (sorted back into file order, so runs are comparable)."""
    chosen = problems[offset:]
    if limit is not None:
        chosen = chosen[:limit]
    if sample is not None and sample < len(chosen):
        picked = sorted(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [chosen[i] for i in picked]
    return chosen


def eval_problems(dataset: str, *, field: str | None, offset: int, limit: int | None, sample: int | None,
                  seed: int, warn=None) -> tuple[list[Problem], str | None]:
    path, name = dataset_source(dataset)
    shown = Path(path).name if path != dataset else dataset  # a bundled set by its file name, not its install path
    problems = list(read_problems([path], field=field, dataset=name, shown_as=[shown], warn=warn))
    return select(problems, offset=offset, limit=limit, sample=sample, seed=seed), name


def default_output(dataset: str, model: str, run: dict[str, Any] | None = None, notify=None) -> Path:
    """`DATASET.MODEL.jsonl`, or, when that file holds records of other settings,
    `DATASET.MODEL.<settings digest>.jsonl` (said through `notify`): an eval with other
    settings never mixes its records into another's."""
    from mathsolve.provenance import digest, first_conflict

    base = Path(dataset).stem if is_problem_file(dataset) else dataset
    # A server's model id may hold slashes (llm-agents/tora-code-34b-v1.0): one file name.
    name = Path(model).stem if model.endswith(".gguf") else model.strip("/").replace(":", "-").replace("/", "-")
    stem = _safe_name(f"{base}.{name}")
    path = Path(f"{stem}.jsonl")
    if run is None:
        return path
    try:
        conflict = first_conflict(read_records(path).values(), run)
    except (UsageError, OSError):
        return path  # not a records file: ResultsFile refuses it with the reason
    if conflict is None:
        return path
    other = Path(f"{stem}.{digest(run)}.jsonl")
    if notify is not None:
        notify(f"{path} holds records of other settings ({conflict[1][0]}); this run writes {other}")
    return other


def _safe_name(name: str) -> str:
    """A file name from a data set and model name: no separators or odd characters."""
    cleaned = "".join(c if c.isalnum() or c in "._-+" else "-" for c in name).strip(".")
    return cleaned[:200] or "eval"


def eval_report(output: Path, dataset: str, name: str | None, problems: list[Problem], settings, samples: int) -> dict[str, Any]:
    """Accuracy over the selected problems, read back from the records file (so a
    resumed run reports the whole selection), beside the published score."""
    ids = {p.id for p in problems}
    records = [r for r in read_records(output).values() if r.get("id") in ids]
    graded = [r for r in records if "correct" in r]
    correct = sum(bool(r["correct"]) for r in graded)
    report: dict[str, Any] = {
        "dataset": dataset,
        "model": settings.model,
        "problems": len(ids),
        "records": len(records),
        "graded": len(graded),
        "correct": correct,
        "accuracy": round(correct / len(graded), 4) if graded else None,
        "samples": samples,
        "output": str(output),
    }
    if samples > 1:
        report["maj@k"] = report["accuracy"]
        report["pass@k"] = round(sum(bool((r.get("vote") or {}).get("pass")) for r in graded) / len(graded), 4) if graded else None
    report["published"] = _published(settings.model, name)
    return report


def _published(model: str, name: str | None) -> float | None:
    """The catalog's published score for this model on this set, when it has one."""
    if name not in ("gsm8k", "math"):
        return None
    try:
        from mathsolve import registry

        card, _ = registry.catalog().resolve(model)
    except Exception:  # noqa: BLE001 - a path or an unknown name has no published score
        from mathsolve.api import card_for_served_model

        card = card_for_served_model(model) if "/" in model else None  # a server's model id
        if card is None:
            return None
    return card.scores.get(name)


def print_report(report: dict[str, Any], stats: BatchStats) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="evaluation")
    for column in ("data set", "model", "protocol", "problems", "correct", "accuracy", "published", "problems/min"):
        table.add_column(column)
    acc = report["accuracy"]
    run = report.get("run") or {}
    cells = (
        report["dataset"], str(report["model"]), str(run.get("protocol") or "-"), str(report["problems"]),
        f"{report['correct']}/{report['graded']}",
        "-" if acc is None else f"{100 * acc:.1f}%",
        "-" if report["published"] is None else f"{report['published']:.1f}%",
        f"{stats.per_minute:.1f}" if stats.done else "-",
    )
    table.add_row(*(Text(cell) for cell in cells))  # names come from the user: never markup
    Console().print(table)
    if report["samples"] > 1:
        print(f"maj@{report['samples']}: {100 * (report['maj@k'] or 0):.1f}%   pass@{report['samples']}: {100 * (report['pass@k'] or 0):.1f}%")
    print(f"records: {report['output']} (re-score with `mathsolve grade {report['output']}`)")
