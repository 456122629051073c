"""The terminal side of batches and evaluations: notes and a progress bar on stderr, each
record on stdout as a line or JSON, the summary, and the evaluation table. The work is in
mathsolve.core.runs, which reports to a `BatchView`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathsolve.core.batch import BatchStats


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def say(console, message: str, style: str = "dim") -> None:
    """A note on stderr. Messages hold user text (paths, field names), never rich markup."""
    from rich.text import Text

    console.print(Text(message, style=style), soft_wrap=True)  # one message, one line


class BatchView:
    """A mathsolve.core.runs.RunObserver for the terminal. `mode`: "lines" (id TAB answer),
    "jsonl" (each record), or "quiet" (evals: only the bar and the report)."""

    def __init__(self, mode: str, label: str = "solving") -> None:
        from mathsolve.cli.views.progress import RichDownloadProgress

        self.mode, self.label = mode, label
        self.console = stderr_console()
        self.download_progress = RichDownloadProgress(self.console)
        self._progress: Any = None
        self._task: Any = None

    def note(self, message: str, *, warning: bool = False) -> None:
        say(self.console, message, "yellow" if warning else "dim")

    def begin(self, total: int) -> None:
        if not self.console.is_terminal:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), TextColumn("{task.fields[acc]}"),
        )
        self._progress = Progress(*columns, console=self.console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=total, rate="", acc="")

    def record(self, record: dict[str, Any], stats: BatchStats) -> None:
        if self.mode == "jsonl":
            print(json.dumps(record, ensure_ascii=False), flush=True)
        elif self.mode == "lines" and record.get("status") != "input-error":
            mark = "" if "correct" not in record else ("  ✓" if record["correct"] else "  ✗")
            print(f"{record['id']}\t{record.get('answer') or '(no answer)'}{mark}", flush=True)
        self._advance(stats)

    def skipped(self, problem: Any, stats: BatchStats) -> None:
        self._advance(stats)

    def end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _advance(self, stats: BatchStats) -> None:
        if self._progress is None:
            return
        acc = f"acc {stats.correct}/{stats.graded} ({100 * stats.accuracy:.1f}%)" if stats.accuracy is not None else ""
        self._progress.update(self._task, advance=1, rate=f"{stats.per_minute:.1f}/min" if stats.done else "", acc=acc)


def print_summary(stats: BatchStats, output: Path | None) -> None:
    err = stderr_console()
    parts = [f"{stats.done} solved", f"{stats.skipped} already done"]
    if stats.input_errors:
        parts.append(f"{stats.input_errors} input error(s)")
    if stats.accuracy is not None:
        parts.append(f"accuracy {stats.correct}/{stats.graded} ({100 * stats.accuracy:.1f}%)")
    if stats.done:
        parts.append(f"{stats.per_minute:.1f} problems/min")
    say(err, " · ".join(parts) + (f" · records in {output}" if output else ""), "")


def print_report(report: dict[str, Any], stats: BatchStats) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="evaluation")
    for column in ("data set", "model", "protocol", "grader", "problems", "correct", "accuracy", "published",
                   "problems/min"):
        table.add_column(column)
    acc = report["accuracy"]
    run = report.get("run") or {}
    cells = (
        report["dataset"], str(report["model"]), str(run.get("protocol") or "-"), str(run.get("grader") or "-"),
        str(report["problems"]),
        f"{report['correct']}/{report['graded']}",
        "-" if acc is None else f"{100 * acc:.1f}%",
        "-" if report["published"] is None else f"{report['published']:.1f}%",
        f"{stats.per_minute:.1f}" if stats.done else "-",
    )
    table.add_row(*(Text(cell) for cell in cells))  # names come from the user: never markup
    Console().print(table)
    if report["samples"] > 1:
        print(f"maj@{report['samples']}: {100 * (report['maj@k'] or 0):.1f}%   pass@{report['samples']}: {100 * (report['pass@k'] or 0):.1f}%")
        if report.get("cancelled_samples"):
            print(f"{report['cancelled_samples']} sample(s) were cancelled by an early stop or the time budget: "
                  f"pass@{report['samples']} counts the samples that ended (--early-stop off runs them all)")
    print(f"records: {report['output']} (re-score with `mathsolve grade {report['output']}`)")
