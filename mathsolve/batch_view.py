"""The terminal side of batches and evaluations: progress on stderr, records on stdout
or in a file, and the summary. The work itself is in mathsolve.batch."""

from __future__ import annotations

import json
import random
import sys
import threading
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from mathsolve.batch import BatchStats, ResultsFile, read_records, run_batch
from mathsolve.errors import UsageError
from mathsolve.inputs import Problem, read_problems

BUNDLED = {"gsm8k": "gsm8k.jsonl", "math500": "math500.jsonl"}
_ALIASES = {"math-500": "math500", "math_500": "math500", "gsm-8k": "gsm8k"}


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


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
) -> BatchStats:
    """Load the model once, solve what is not yet in `output`, report as we go.

    `concurrency` (default: the setting) problems run at once when the engine allows it
    (a server); the local llama engine has one model context, so it stays at 1."""
    from mathsolve.api import Solver
    from mathsolve.grading import Grader

    err = _stderr()
    for problem in problems:
        if problem.error:
            err.print(f"[yellow]skipped: {problem.error}[/yellow]", highlight=False)
    out = ResultsFile(output) if output is not None else None
    if out is not None and out.repaired_bytes:
        err.print(f"[yellow]{output}: removed a half-written last line ({out.repaired_bytes} bytes)[/yellow]")
    stats = BatchStats(total=len({p.id for p in problems}))
    emit = _printer(mode)
    try:
        todo = [p for p in problems if out is None or p.id not in out.done]
        if out is not None and len(todo) < len(problems):
            err.print(f"[dim]{output}: {len(problems) - len(todo)} problem(s) already done, resuming[/dim]")
        solver = None
        concurrency = concurrency or settings.concurrency
        if any(p.error is None for p in todo):
            solver = Solver(settings=settings, console=err, notify=lambda m: err.print(f"[dim]{m}[/dim]"))
            concurrency = _concurrency(solver, concurrency, err)
        # Equivalence as `mathsolve grade` judges it, so a re-grade gives the same figure.
        with Grader(percent=True) as grader, progress_bar(stats.total, err.is_terminal and mode != "stream", label) as bar:
            def on_record(record: dict[str, Any], st: BatchStats) -> None:
                emit(record, st)
                _advance(bar, st)

            try:
                run_batch(problems, solver, out=out, grader=grader, samples=samples, stats=stats,
                          on_record=on_record, on_skip=lambda p, st: _advance(bar, st), concurrency=concurrency)
            finally:
                if solver is not None:
                    solver.close()
    finally:
        if out is not None:
            out.close()
    return stats


def _concurrency(solver, wanted: int, err) -> int:
    """Problems in flight: 1 unless the engine serves parallel sessions. Streaming is off in
    batches (one answer per round), and code blocks get `tool_slots()` slots."""
    engine = solver.engine
    if hasattr(engine, "stream"):
        engine.stream = False
    if wanted > 1 and not getattr(engine, "concurrent", False):
        err.print(f"[yellow]concurrency {wanted} -> 1: the {engine.info.name} engine runs one model context in this "
                  "process; for problems in parallel serve the model (vLLM, llama-server) and use --engine openai "
                  "(see docs/remote.md)[/yellow]", highlight=False)
        return 1
    if wanted > 1:
        solver.tool_slots = threading.BoundedSemaphore(tool_slots(wanted))
    return wanted


def tool_slots(concurrency: int) -> int:
    """Code blocks running at once in a concurrent batch: min(concurrency, usable CPUs)."""
    from mathsolve.engines.llama import available_cores

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
    err.print(" · ".join(parts) + (f" · records in {output}" if output else ""), highlight=False)


# -- evaluation ---------------------------------------------------------------------

def dataset_source(name: str) -> tuple[str, str | None]:
    """(file to read, data set name for ground-truth parsing) for a bundled NAME or a PATH."""
    from mathsolve.grading import DATASETS

    key = _ALIASES.get(name.lower(), name.lower())
    if key in BUNDLED and not Path(name).exists():
        return str(resources.files("mathsolve.datasets").joinpath(BUNDLED[key])), key
    path = Path(name)
    if not path.exists():
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
                  seed: int) -> tuple[list[Problem], str | None]:
    path, name = dataset_source(dataset)
    problems = list(read_problems([path], field=field, dataset=name))
    return select(problems, offset=offset, limit=limit, sample=sample, seed=seed), name


def default_output(dataset: str, model: str) -> Path:
    base = Path(dataset).stem if Path(dataset).exists() else dataset
    # A server's model id may hold slashes (llm-agents/tora-code-34b-v1.0): one file name.
    name = Path(model).stem if model.endswith(".gguf") else model.strip("/").replace(":", "-").replace("/", "-")
    return Path(f"{base}.{name}.jsonl")


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

    table = Table(title="evaluation")
    for column in ("data set", "model", "problems", "correct", "accuracy", "published", "problems/min"):
        table.add_column(column)
    acc = report["accuracy"]
    table.add_row(
        report["dataset"], str(report["model"]), str(report["problems"]), f"{report['correct']}/{report['graded']}",
        "-" if acc is None else f"{100 * acc:.1f}%",
        "-" if report["published"] is None else f"{report['published']:.1f}%",
        f"{stats.per_minute:.1f}" if stats.done else "-",
    )
    Console().print(table)
    if report["samples"] > 1:
        print(f"maj@{report['samples']}: {100 * (report['maj@k'] or 0):.1f}%   pass@{report['samples']}: {100 * (report['pass@k'] or 0):.1f}%")
    print(f"records: {report['output']} (re-score with `mathsolve grade {report['output']}`)")
