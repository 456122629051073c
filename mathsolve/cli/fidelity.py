"""The fidelity commands: `grade` (re-score saved solutions) and `replay` (re-run every
recorded code block and compare outputs). See docs/fidelity.md."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from mathsolve.cli import failures
from mathsolve.cli.program import app
from mathsolve.errors import CheckFailed, UsageError


def require_file(path: Path) -> None:
    from mathsolve.core.problems import is_problem_file

    if not is_problem_file(str(path)) or str(path) == "-":
        raise UsageError(f"no such file: {path}")


@app.command()
@failures.reports_errors
def grade(
    file: Path = typer.Argument(..., help="JSONL: mathsolve records, released ToRA outputs, or {reference, prediction} pairs."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    per_record: Optional[Path] = typer.Option(None, "--per-record", help="Write one JSON line per record here."),
    grader: str = typer.Option("auto", "--grader", help="Who judges answers: reference|math-verify|auto "
                               "(auto: the grader each record's run or protocol names; see docs/grading.md)."),
) -> None:
    """Re-score saved solutions: extract each answer from the text and grade it."""
    import json

    from mathsolve.scoring.regrade import grade_file
    from mathsolve.settings import SPECS

    # The flag only: the `grader` setting (environment, config file) is what runs that write
    # records grade with; re-grading follows what each record says it was graded with.
    try:
        choice = SPECS["grader"].parse(grader)
    except ValueError as exc:
        raise UsageError(f"setting grader from flag --grader: {exc}") from None
    require_file(file)
    summary = grade_file(file, per_record=per_record, choice=choice)
    for warning in summary.warnings:
        failures.say(f"warning: {warning}")
    if json_out:
        print(json.dumps({"file": str(file), "total": summary.total, "correct": summary.correct,
                          "accuracy": summary.accuracy, "errors": summary.errors, "grader": choice,
                          "graders": summary.graders}, indent=2))
    else:
        used = ", ".join(f"{name} ({count})" for name, count in sorted(summary.graders.items()))
        print(f"{summary.correct}/{summary.total} correct ({100 * summary.accuracy:.1f}%)"
              + (f", {summary.errors} unreadable record(s)" if summary.errors else "")
              + (f"; graded by {used}" if used else ""))


@app.command()
@failures.reports_errors
def replay(
    file: Path = typer.Argument(..., help="JSONL: released ToRA outputs, ToRA corpus records, or mathsolve records."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    release: str = typer.Option("auto", "--release", help="ToRA result format: first (last stdout line, 50+50 cut), "
                                "current, or auto (the one reproducing more blocks; see docs/fidelity.md)."),
    protocol: str = typer.Option("tora", "--protocol", "-p", help="Protocol of released and corpus files."),
    tool: Optional[str] = typer.Option(None, "--tool", help="Run every block with this tool backend."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, max=64, help="Blocks run at once (default: CPUs, at most 4)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, help="Replay at most N records."),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip the first N records."),
    mismatches: Optional[Path] = typer.Option(None, "--mismatches", help="Write every mismatch here as JSONL."),
    min_rate: Optional[float] = typer.Option(None, "--min-rate", help="Exit 8 below this match rate (0.98 or 98)."),
) -> None:
    """Re-run every recorded code block and compare each output with the recorded one."""
    import json

    from rich.console import Console

    from mathsolve.cli.views.replay import print_summary, progress_callbacks
    from mathsolve.replay.core import replay_file
    from mathsolve.replay.summary import check_mismatches_destination, rate_threshold, write_mismatches

    require_file(file)
    threshold = rate_threshold(min_rate)
    if mismatches is not None:  # refused before minutes of replaying, not after
        check_mismatches_destination(mismatches, file)
    with progress_callbacks(not json_out and sys.stderr.isatty()) as (on_start, on_done):
        summary = replay_file(file, release=release, protocol=protocol, tool=tool, jobs=jobs, offset=offset,
                              limit=limit, on_start=on_start, on_done=on_done)
    for warning in summary.warnings:
        failures.say(f"warning: {warning}")
    if mismatches is not None:
        write_mismatches(summary, mismatches)
    if json_out:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print_summary(summary, Console())
    if threshold is not None and summary.rate < threshold:
        raise CheckFailed(f"{100 * summary.rate:.1f}% of blocks matched, below --min-rate {100 * threshold:.1f}%")
