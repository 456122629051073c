"""`mathsolve eval DATASET`: accuracy on a bundled set or a data file, beside the published
score, with records that `mathsolve grade` re-scores to the same figure."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mathsolve.cli import failures
from mathsolve.cli.program import app
from mathsolve.cli.options import settings_options
from mathsolve.errors import EXIT_USAGE, UsageError
from mathsolve.settings import MAX_SAMPLES


@app.command("eval")
@failures.reports_errors
@settings_options
def eval_command(
    flags: dict,
    dataset: str = typer.Argument(..., help="A bundled set (gsm8k, math500) or a data file (JSONL/JSON)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Records file (default DATASET.MODEL.jsonl); rerun to resume."),
    wait: bool = typer.Option(False, "--wait", help="When another run is writing the records file, wait for it instead of refusing."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, help="Only the first N problems (after --offset)."),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip the first N problems."),
    sample: Optional[int] = typer.Option(None, "--sample", min=1, help="A random subset of N problems (drawn with --seed)."),
    samples: int = typer.Option(1, "--samples", "-n", min=1, max=MAX_SAMPLES, help="K samples per problem, majority-voted (maj@K, pass@K)."),
    field: Optional[str] = typer.Option(None, "--field", help="JSON field holding the problem."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Evaluate a model on a data set: accuracy beside the published score, records for `grade`."""
    import json

    from mathsolve.cli.views.batch import BatchView, print_report, say, stderr_console
    from mathsolve.core.evaluate import dataset_source, default_output, eval_problems, eval_report
    from mathsolve.core.provenance import run_settings
    from mathsolve.core.runs import run_problems
    from mathsolve.settings import Settings

    settings = Settings(flags)
    failures.verbose = settings.verbose
    problems, name = eval_problems(dataset, field=field, offset=offset, limit=limit, sample=sample, seed=settings.seed,
                                   warn=lambda m: failures.say(f"warning: {m}"))
    if not problems:
        raise UsageError("no problems selected")
    run = run_settings(settings, samples)
    output = output or default_output(dataset, settings.model, run, notify=lambda m: say(stderr_console(), m))
    protect = ((dataset_source(dataset)[0], "the data set"),)
    try:
        stats = run_problems(settings, problems, output=output, samples=samples, protect=protect, wait=wait,
                             observer=BatchView("quiet", label=f"eval {dataset}"), run=run)
    except KeyboardInterrupt:
        failures.say(f"interrupted: records so far are in {output}; rerun the same command to resume")
        raise typer.Exit(failures.interrupted_code()) from None
    report = eval_report(output, dataset, name, problems, settings, samples)
    report["problems_per_minute"] = round(stats.per_minute, 2)
    report["grader"] = run["grader"]  # the one that judged every record (auto resolved for the protocol)
    report["run"] = run
    if json_out:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, stats)
    if stats.input_errors:
        raise typer.Exit(EXIT_USAGE)
