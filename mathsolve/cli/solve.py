"""`mathsolve "question"` (the `solve` command): one question streamed to the terminal, one
question's `-n K` samples with their vote (cli/views/samples.py), or every problem of files
or stdin as a batch.

How an argument is told apart from a problem file is `mathsolve.core.problems.is_problem_file`;
`-q TEXT` always means the text (README, "Questions and files").
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from mathsolve.cli import failures
from mathsolve.cli.program import app, stdin_is_terminal
from mathsolve.cli.options import settings_options
from mathsolve.errors import EXIT_USAGE, UsageError
from mathsolve.settings import MAX_SAMPLES


@app.command()
@failures.reports_errors
@settings_options
def solve(
    flags: dict,
    inputs: Optional[List[str]] = typer.Argument(
        None, help="The problem, or problem FILEs (text, JSONL, JSON); '-' or nothing with piped input reads stdin."
    ),
    question_text: Optional[str] = typer.Option(
        None, "--question", "-q", help="Solve this text, even when it names a file or a command."
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write one JSON record per problem here; rerun to resume."),
    wait: bool = typer.Option(False, "--wait", help="When another run is writing the -o file, wait for it instead of refusing."),
    jsonl: bool = typer.Option(False, "--jsonl", help="One JSON record per problem on stdout."),
    blocks: bool = typer.Option(False, "--blocks", help="Plain text: problems are blank-line separated blocks, not lines."),
    field: Optional[str] = typer.Option(None, "--field", help="JSON field holding the problem (A+B joins two)."),
    samples: int = typer.Option(1, "--samples", "-n", min=1, max=MAX_SAMPLES, help="Sample K solutions per problem and majority-vote (decoded together: see --parallel, --early-stop)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object with the whole record."),
    plain: bool = typer.Option(False, "--plain", help="Plain text (the default when stdout is not a terminal)."),
    show_thinking: bool = typer.Option(
        False, "--show-thinking",
        help="Show a reasoning model's thinking in full (dimmed); by default one line sums it up. --json always has it.",
    ),
) -> None:
    """Solve a problem, or every problem of files or stdin (the default command)."""
    from mathsolve.settings import Settings

    failures.verbose = bool(flags.get("verbose"))
    settings = Settings(flags)
    failures.verbose = settings.verbose
    question, sources = question_or_files(inputs or [], question_text)
    mode = "json" if json_out else "plain" if plain or not sys.stdout.isatty() else "rich"
    if question is not None and samples > 1 and output is None and not jsonl and not json_out:
        _solve_votes(settings, question, samples, mode, show_thinking=show_thinking)
        return
    if question is None or output is not None or jsonl or samples > 1:
        _solve_many(settings, sources, question, output=output, jsonl=jsonl or json_out,
                    blocks=blocks, field=field, samples=samples, wait=wait)
        return
    _solve_one(settings, question, mode, show_thinking=show_thinking)


def _solve_one(settings, question: str, mode: str, *, show_thinking: bool = False) -> None:
    from mathsolve.api import Solver
    from mathsolve.cli.render import make_renderer
    from mathsolve.cli.views.batch import say, stderr_console

    renderer = make_renderer(mode, show_thinking=show_thinking, max_tokens=settings.max_tokens, question=question)
    err = stderr_console()
    try:
        with Solver(settings=settings, console=err, notify=lambda message: say(err, message)) as solver:
            record = solver.solve(question, events=renderer)
        renderer.on_finish(record)
    finally:
        renderer.close()
    if record["status"] == "interrupted":
        failures.say("interrupted")
        raise typer.Exit(failures.interrupted_code())
    if record["status"] == "cancelled":  # only the time budget cancels a single solve
        failures.say(f"note: the time budget of {settings.time_budget:g} s ran out before the solution ended "
                     "(status cancelled, no answer): raise --time-budget")


def _solve_votes(settings, question: str, samples: int, mode: str, *, show_thinking: bool = False) -> None:
    """One question, K samples: their progress, the vote and the winning solution
    (mathsolve.cli.views.samples)."""
    from rich.console import Console

    from mathsolve.api import Solver
    from mathsolve.cli.views.batch import say, stderr_console
    from mathsolve.cli.views.samples import SamplesView
    from mathsolve.core.batch import solve_problem
    from mathsolve.core.problems import Problem, content_id
    from mathsolve.core.voting import rules
    from mathsolve.scoring.graders import effective_grader, open_grader

    err = stderr_console()
    view = SamplesView(samples, plain=mode != "rich", console=Console() if mode == "rich" else None,
                       time_budget=settings.time_budget, agree=rules(settings)[0])
    try:
        with Solver(settings=settings, console=err, notify=lambda message: say(err, message),
                    sessions=samples) as solver:
            # The grader groups equivalent answers, as a batch's vote does (percent forms on).
            with open_grader(effective_grader(settings.grader, solver.protocol), percent=True) as grader:
                view.begin()
                try:
                    record = solve_problem(solver, Problem(content_id(question), question, "argument"),
                                           samples=samples, grader=grader, observer=view)
                finally:
                    view.end()
            protocol = solver.protocol
    except KeyboardInterrupt:
        record = {"status": "interrupted"}
    if record["status"] == "interrupted":
        failures.say("interrupted")
        raise typer.Exit(failures.interrupted_code())
    view.show(record, protocol, show_thinking=show_thinking, max_tokens=settings.max_tokens)


def question_or_files(inputs: list[str], forced: str | None) -> tuple[str | None, list[str]]:
    """(the question, []) when the arguments are one problem text, else (None, sources).

    The rule: `-q TEXT` is always the question; `-` is stdin; an argument naming anything
    that exists and is not a directory is a problem file (pipes and /dev/stdin included);
    one argument that names nothing is the question, whatever its length, slashes or bytes;
    several arguments must all be files."""
    from mathsolve.core.problems import is_directory, is_problem_file

    if forced is not None:
        if inputs:
            raise UsageError("give either -q QUESTION or problem FILEs, not both")
        return _question_text(forced), []
    if not inputs:
        if stdin_is_terminal():
            raise UsageError('no question given: mathsolve "QUESTION" (or give FILEs, or pipe problems on stdin)')
        return None, ["-"]
    files = [arg for arg in inputs if is_problem_file(arg)]
    if len(inputs) == 1 and not files:
        if is_directory(inputs[0]):
            raise UsageError(f"{inputs[0]} is a directory: give problem files, or solve the text with -q")
        return _question_text(inputs[0]), []
    missing = [arg for arg in inputs if arg not in files]
    if missing:
        raise UsageError(f"no such file: {missing[0]} (several arguments are read as problem files; "
                         "quote a question, or give it with -q)")
    return None, inputs


def _question_text(argument: str) -> str:
    """The question as text: bytes that are not UTF-8 become U+FFFD, with a warning."""
    from mathsolve.files.decode import decode_argument

    text, warning = decode_argument(argument)
    if warning:
        failures.say(f"warning: {warning}")
    if not text.strip():
        raise UsageError("the question is empty")
    return text


def _solve_many(settings, sources: list[str], question: str | None, *, output, jsonl: bool, blocks: bool,
                field: str | None, samples: int, wait: bool) -> None:
    from mathsolve.cli.views.batch import BatchView, print_summary
    from mathsolve.core.problems import Problem, content_id, read_problems
    from mathsolve.core.runs import run_problems

    if question is not None:
        problems = [Problem(content_id(question), question, "argument")]
    else:
        problems = list(read_problems(sources, blocks=blocks, field=field, warn=lambda m: failures.say(f"warning: {m}")))
    if not problems:
        raise UsageError("no problems in the input")
    protect = tuple((source, "an input") for source in sources)
    try:
        stats = run_problems(settings, problems, output=output, samples=samples, protect=protect, wait=wait,
                             observer=BatchView("jsonl" if jsonl else "lines"))
    except KeyboardInterrupt:
        failures.say("interrupted: finished problems are saved; rerun the same command to resume")
        raise typer.Exit(failures.interrupted_code()) from None
    print_summary(stats, output)
    if stats.input_errors:
        # As grep does with an unreadable file: the rest was done, but say the input was bad.
        raise typer.Exit(EXIT_USAGE)
