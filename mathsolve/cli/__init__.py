"""The command line: argument parsing and rendering only; the work is in mathsolve.api & co.

`mathsolve "question"` is `mathsolve solve "question"`: a first argument that is not a
command name is taken as the question (see DefaultToSolve), unless it is so close to a
command name that it is surely a typo. How an argument is told apart from a problem file
is `mathsolve.inputs.is_problem_file`; `-q TEXT` always means the text.

Every way out is an exit code from mathsolve.errors (the README lists them): errors are
one line `error: ...` on stderr, usage errors included; a closed pipe on stdout ends
quietly; SIGTERM and SIGHUP are handled like Ctrl-C.
"""

from __future__ import annotations

import difflib
import errno
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from mathsolve.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_IO,
    EXIT_USAGE,
    CheckFailed,
    IOFailure,
    MathsolveError,
    UsageError,
)
from mathsolve.settings import MAX_SAMPLES

EXIT_INTERRUPTED_BY_TYPER = 130

# Typer's usage errors, whether it uses click or its own copy of it (typer 0.29+).
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_CLICK_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

# The signal that interrupted this run (SIGINT unless a SIGTERM/SIGHUP arrived): its
# exit code is 128 + its number, as shells report it.
_interrupted_by = signal.SIGINT


class DefaultToSolve(TyperGroup):
    """Route `mathsolve [OPTIONS] QUESTION` to the `solve` command."""

    def parse_args(self, ctx, args):
        if not args:
            args = ["solve"]  # piped input is solved; in a terminal, solve says how to give a question
        elif args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            _refuse_command_typo(args[0], list(self.commands))
            args = ["solve", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx):
        return list(self.commands)  # keep definition order in --help


def _stdin_is_terminal() -> bool:
    # A closed stdin (`<&-`) leaves sys.stdin None: nothing is piped in.
    return sys.stdin is None or sys.stdin.isatty()


def _refuse_command_typo(word: str, commands: list[str]) -> None:
    """`mathsolve doctr` is a typo of `doctor`, not a question to download a model for.
    Only a lone word close to a command name counts; anything else is a question."""
    from mathsolve.inputs import is_problem_file

    if word.startswith("-") or any(c.isspace() for c in word) or len(word) > 24 or is_problem_file(word):
        return
    close = difflib.get_close_matches(word.lower(), commands, n=1, cutoff=0.75)
    if close:
        raise _CLICK_USAGE_ERROR(f"unknown command {word!r}: did you mean {close[0]!r}? "
                               f"(to solve the text itself: mathsolve -q {word!r})")


app = typer.Typer(
    cls=DefaultToSolve,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Solve math problems locally with tool-integrated open models (ToRA, MuMath-Code, Qwen2.5-Math, ...).",
    no_args_is_help=False,
)
models_app = typer.Typer(help="The model catalog.", invoke_without_command=True)
app.add_typer(models_app, name="models")
tools_app = typer.Typer(help="Tool backends: list them, or run one block through one.", invoke_without_command=True)
app.add_typer(tools_app, name="tools")


ENGINE_HELP = "Inference engine: llama (local GGUF, the default) or openai (an OpenAI-compatible server)."
BASE_URL_HELP = "Engine openai: the server's API root, e.g. http://HOST:8000/v1."
API_KEY_HELP = "Engine openai: name of the environment variable holding the server's API key."
TIMEOUT_HELP = "Engine openai: seconds without progress from the server before a request fails (default 600)."
CONCURRENCY_HELP = "Problems in flight at once in batches (server engines; the local engine runs 1)."
FLASH_HELP = "Flash attention: auto (on for GPU layers or a quantized KV cache) | on | off."
TOOL_TIMEOUT_HELP = "Seconds each code block may run (default: the protocol's)."
KV_HELP = "KV cache type: f16 (default) | q8_0 (half the memory) | q4_0 (a quarter)."


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


def _fail(exc: BaseException, verbose: bool = False) -> None:
    """Every error ends as one line on stderr and a documented exit code."""
    if isinstance(exc, KeyboardInterrupt):
        _say("interrupted")
        raise typer.Exit(128 + _interrupted_by)
    if _is_broken_pipe(exc):
        raise typer.Exit(_broken_pipe())
    if isinstance(exc, OSError):
        exc = _io_failure(exc)
    if isinstance(exc, MathsolveError):
        _say(f"error: {exc.message}")
        raise typer.Exit(exc.exit_code)
    if verbose:
        import traceback

        traceback.print_exc()
    detail = " ".join(str(exc).split()) or type(exc).__name__
    _say(f"error: internal error: {type(exc).__name__}: {detail} (rerun with --verbose for details)")
    raise typer.Exit(EXIT_INTERNAL)


def _say(line: str) -> None:
    """One line on stderr; a stderr that is gone (closed, full) cannot be helped."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def _is_broken_pipe(exc: BaseException) -> bool:
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE)


def _broken_pipe() -> int:
    """The reader of stdout went away (`mathsolve FILE | head -1`): stop quietly, as Unix
    tools do. Point stdout at /dev/null so the flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE


def _io_failure(exc: OSError) -> IOFailure:
    """An OS-level failure outside the places that explain their own (disk full on
    stdout, a permission the user's environment denies): a one-line I/O error."""
    where = f"{exc.filename}: " if exc.filename is not None else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return IOFailure(f"{where}no space left on the device")
    return IOFailure(f"{where}{exc.strerror or exc}")


def _version_callback(value: bool) -> None:
    if value:
        from mathsolve import __version__

        print(f"mathsolve {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Show the version."),
) -> None:
    pass


@app.command()
def solve(
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
    samples: int = typer.Option(1, "--samples", "-n", min=1, max=MAX_SAMPLES, help="Sample K solutions per problem and majority-vote."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Catalog NAME[:QUANT] or a path to a .gguf file."),
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="Prompt/tool protocol (tora, qwen-tir, ...)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object with the whole record."),
    plain: bool = typer.Option(False, "--plain", help="Plain text (the default when stdout is not a terminal)."),
    tool: Optional[str] = typer.Option(None, "--tool", help="Run every code block with this tool backend."),
    tool_timeout: Optional[float] = typer.Option(None, "--tool-timeout", help=TOOL_TIMEOUT_HELP),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-t", help="0 = greedy (default)."),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    max_rounds: Optional[int] = typer.Option(None, "--max-rounds", help="Tool rounds (default: the protocol's)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="New tokens per round."),
    n_ctx: Optional[int] = typer.Option(None, "--n-ctx", help="Context size in tokens."),
    threads: Optional[int] = typer.Option(None, "--threads"),
    n_gpu_layers: Optional[int] = typer.Option(None, "--n-gpu-layers", help="-1 = all (default when the build can offload)."),
    extra_buffers: Optional[str] = typer.Option(None, "--extra-buffers", help="llama.cpp weight repacking: auto|on|off."),
    flash_attn: Optional[str] = typer.Option(None, "--flash-attn", help=FLASH_HELP),
    kv_cache: Optional[str] = typer.Option(None, "--kv-cache", help=KV_HELP),
    offline: Optional[bool] = typer.Option(None, "--offline/--online", help="Never use the network."),
    verbose: Optional[bool] = typer.Option(None, "--verbose", "-v", help="llama.cpp logs and tracebacks."),
    engine: Optional[str] = typer.Option(None, "--engine", help=ENGINE_HELP),
    base_url: Optional[str] = typer.Option(None, "--base-url", help=BASE_URL_HELP),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help=API_KEY_HELP),
    request_timeout: Optional[float] = typer.Option(None, "--request-timeout", help=TIMEOUT_HELP),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help=CONCURRENCY_HELP),
) -> None:
    """Solve a problem, or every problem of files or stdin (the default command)."""
    from mathsolve.render import make_renderer
    from mathsolve.settings import Settings

    is_verbose = bool(verbose)
    try:
        settings = Settings(
            dict(
                model=model, protocol=protocol, tool=tool, tool_timeout=tool_timeout, temperature=temperature,
                top_p=top_p, seed=seed,
                max_rounds=max_rounds, max_tokens=max_tokens, n_ctx=n_ctx, threads=threads,
                n_gpu_layers=n_gpu_layers, extra_buffers=extra_buffers, flash_attn=flash_attn, kv_cache=kv_cache,
                offline=offline, verbose=verbose,
                engine=engine, base_url=base_url, api_key_env=api_key_env, request_timeout=request_timeout,
                concurrency=concurrency,
            )
        )
        is_verbose = settings.verbose
        question, sources = _question_or_files(inputs or [], question_text)
        if question is None or output is not None or jsonl or samples > 1:
            _solve_many(settings, sources, question, output=output, jsonl=jsonl or json_out,
                        blocks=blocks, field=field, samples=samples, wait=wait)
            return
        mode = "json" if json_out else "plain" if plain or not sys.stdout.isatty() else "rich"
        renderer = make_renderer(mode)
        err = _stderr()
        from mathsolve.api import Solver

        with Solver(settings=settings, console=err, notify=lambda m: _note(err, m)) as solver:
            record = solver.solve(question, events=renderer)
        renderer.on_finish(record)
        if record["status"] == "interrupted":
            _say("interrupted")
            raise typer.Exit(128 + _interrupted_by)
    except typer.Exit:
        raise
    except BaseException as exc:  # noqa: BLE001 - _fail turns everything into one line + code
        _fail(exc, is_verbose)


def _note(console, message: str) -> None:
    from mathsolve.batch_view import say

    say(console, message)


def _question_or_files(inputs: list[str], forced: str | None) -> tuple[str | None, list[str]]:
    """(the question, []) when the arguments are one problem text, else (None, sources).

    The rule (README, "Questions and files"): `-q TEXT` is always the question; `-` is
    stdin; an argument naming anything that exists and is not a directory is a problem
    file (pipes and /dev/stdin included); one argument that names nothing is the question,
    whatever its length, slashes or bytes; several arguments must all be files."""
    from mathsolve.inputs import is_directory, is_problem_file

    if forced is not None:
        if inputs:
            raise UsageError("give either -q QUESTION or problem FILEs, not both")
        return _question_text(forced), []
    if not inputs:
        if _stdin_is_terminal():
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
    from mathsolve.textdecode import decode_argument

    text, warning = decode_argument(argument)
    if warning:
        _say(f"warning: {warning}")
    if not text.strip():
        raise UsageError("the question is empty")
    return text


def _solve_many(settings, sources: list[str], question: str | None, *, output, jsonl: bool, blocks: bool,
                field: str | None, samples: int, wait: bool) -> None:
    from mathsolve.batch_view import print_summary, run_problems
    from mathsolve.inputs import Problem, content_id, read_problems

    if question is not None:
        problems = [Problem(content_id(question), question, "argument")]
    else:
        problems = list(read_problems(sources, blocks=blocks, field=field, warn=lambda m: _say(f"warning: {m}")))
    if not problems:
        raise UsageError("no problems in the input")
    mode = "jsonl" if jsonl else "lines"
    protect = tuple((source, "an input") for source in sources)
    try:
        stats = run_problems(settings, problems, output=output, mode=mode, samples=samples, protect=protect, wait=wait)
    except KeyboardInterrupt:
        _say("interrupted: finished problems are saved; rerun the same command to resume")
        raise typer.Exit(128 + _interrupted_by) from None
    print_summary(stats, output)
    if stats.input_errors:
        # As grep does with an unreadable file: the rest was done, but say the input was bad.
        raise typer.Exit(EXIT_USAGE)


@app.command("eval")
def eval_command(
    dataset: str = typer.Argument(..., help="A bundled set (gsm8k, math500) or a data file (JSONL/JSON)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Catalog NAME[:QUANT] or a path to a .gguf file."),
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="Prompt/tool protocol."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Records file (default DATASET.MODEL.jsonl); rerun to resume."),
    wait: bool = typer.Option(False, "--wait", help="When another run is writing the records file, wait for it instead of refusing."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, help="Only the first N problems (after --offset)."),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip the first N problems."),
    sample: Optional[int] = typer.Option(None, "--sample", min=1, help="A random subset of N problems (drawn with --seed)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of --sample and of sampling."),
    samples: int = typer.Option(1, "--samples", "-n", min=1, max=MAX_SAMPLES, help="K samples per problem, majority-voted (maj@K, pass@K)."),
    field: Optional[str] = typer.Option(None, "--field", help="JSON field holding the problem."),
    tool: Optional[str] = typer.Option(None, "--tool", help="Run every code block with this tool backend."),
    tool_timeout: Optional[float] = typer.Option(None, "--tool-timeout", help=TOOL_TIMEOUT_HELP),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-t"),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="New tokens per round."),
    n_ctx: Optional[int] = typer.Option(None, "--n-ctx"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    n_gpu_layers: Optional[int] = typer.Option(None, "--n-gpu-layers"),
    flash_attn: Optional[str] = typer.Option(None, "--flash-attn", help=FLASH_HELP),
    kv_cache: Optional[str] = typer.Option(None, "--kv-cache", help=KV_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    engine: Optional[str] = typer.Option(None, "--engine", help=ENGINE_HELP),
    base_url: Optional[str] = typer.Option(None, "--base-url", help=BASE_URL_HELP),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help=API_KEY_HELP),
    request_timeout: Optional[float] = typer.Option(None, "--request-timeout", help=TIMEOUT_HELP),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help=CONCURRENCY_HELP),
) -> None:
    """Evaluate a model on a data set: accuracy beside the published score, records for `grade`."""
    from mathsolve.settings import Settings

    try:
        settings = Settings(dict(model=model, protocol=protocol, seed=seed, tool=tool, tool_timeout=tool_timeout,
                                 temperature=temperature,
                                 top_p=top_p, max_tokens=max_tokens, n_ctx=n_ctx, threads=threads,
                                 n_gpu_layers=n_gpu_layers, flash_attn=flash_attn, kv_cache=kv_cache,
                                 engine=engine, base_url=base_url,
                                 api_key_env=api_key_env, request_timeout=request_timeout, concurrency=concurrency))
        from mathsolve.batch_view import (default_output, dataset_source, eval_problems, eval_report, print_report,
                                          run_problems)
        from mathsolve.provenance import run_settings

        problems, name = eval_problems(dataset, field=field, offset=offset, limit=limit, sample=sample, seed=settings.seed,
                                       warn=lambda m: _say(f"warning: {m}"))
        if not problems:
            raise UsageError("no problems selected")
        run = run_settings(settings, samples)
        output = output or default_output(dataset, settings.model, run, notify=lambda m: _note(_stderr(), m))
        protect = ((dataset_source(dataset)[0], "the data set"),)
        try:
            stats = run_problems(settings, problems, output=output, mode="quiet", samples=samples,
                                 label=f"eval {dataset}", protect=protect, wait=wait)
        except KeyboardInterrupt:
            _say(f"interrupted: records so far are in {output}; rerun the same command to resume")
            raise typer.Exit(128 + _interrupted_by) from None
        report = eval_report(output, dataset, name, problems, settings, samples)
        report["problems_per_minute"] = round(stats.per_minute, 2)
        report["run"] = run
        if json_out:
            import json

            print(json.dumps(report, indent=2))
        else:
            print_report(report, stats)
        if stats.input_errors:
            raise typer.Exit(EXIT_USAGE)
    except typer.Exit:
        raise
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def pull(ref: str = typer.Argument(..., help="Catalog NAME[:QUANT].")) -> None:
    """Download a catalog model into the Hugging Face cache (resumes interrupted downloads)."""
    try:
        from mathsolve.api import resolve_model
        from mathsolve.cli.views.progress import RichDownloadProgress

        resolved = resolve_model(ref, progress=RichDownloadProgress(_stderr()))
        print(resolved.path)
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def rm(ref: str = typer.Argument(..., help="Catalog NAME[:QUANT].")) -> None:
    """Delete a downloaded model file from the cache and say how much space it freed."""
    try:
        from mathsolve import hub, registry
        from mathsolve.sizes import format_size

        card, gguf = registry.catalog().resolve(ref)
        freed = hub.remove_cached(card.repo, gguf.file)
        if freed:
            print(f"removed {card.name}:{gguf.quant} ({gguf.file}), freed {format_size(freed)}")
        else:
            print(f"{card.name}:{gguf.quant} is not downloaded; nothing to remove")
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@models_app.callback()
def models(
    ctx: typer.Context,
    family: Optional[str] = typer.Option(None, "--family", help="Only this family (tora, mumath-code, ...)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="Only models of this protocol."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable list."),
) -> None:
    """List the catalog: sizes, published scores, what is downloaded."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        from mathsolve.catalog_view import catalog_rows, print_catalog

        rows = catalog_rows(family=family, protocol=protocol)
        if json_out:
            import json

            print(json.dumps(rows, indent=2))
        else:
            print_catalog(rows)
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@models_app.command("show")
def models_show(name: str = typer.Argument(..., help="Catalog NAME.")) -> None:
    """Everything about one catalog entry, including how to convert it when no GGUF exists."""
    try:
        from mathsolve.catalog_view import show_card

        show_card(name)
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def config() -> None:
    """Show every effective setting and where it came from (flag, env, config file, default)."""
    try:
        from rich.console import Console
        from rich.table import Table

        from mathsolve.settings import SPECS, Settings, config_path

        settings = Settings()
        table = Table(title=f"config file: {config_path()}", title_justify="left")
        for column in ("setting", "value", "source", "meaning"):
            table.add_column(column)
        for name, value in settings.values.items():
            shown = "auto" if value.value is None else str(value.value)
            table.add_row(name, shown, value.source, SPECS[name].help)
        Console().print(table)
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def doctor() -> None:
    """What this installation can do: llama.cpp build, GPU, CPU, cache, plugins, sandbox."""
    try:
        from mathsolve.doctor import print_report

        print_report()
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def grade(
    file: Path = typer.Argument(..., help="JSONL: mathsolve records, released ToRA outputs, or {reference, prediction} pairs."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    per_record: Optional[Path] = typer.Option(None, "--per-record", help="Write one JSON line per record here."),
) -> None:
    """Re-score saved solutions: extract each answer from the text and grade it."""
    try:
        import json

        from mathsolve.scoring.regrade import grade_file

        _require_file(file)
        summary = grade_file(file, per_record=per_record)
        for warning in summary.warnings:
            _say(f"warning: {warning}")
        if json_out:
            print(json.dumps({"file": str(file), "total": summary.total, "correct": summary.correct,
                              "accuracy": summary.accuracy, "errors": summary.errors}, indent=2))
        else:
            print(f"{summary.correct}/{summary.total} correct ({100 * summary.accuracy:.1f}%)"
                  + (f", {summary.errors} unreadable record(s)" if summary.errors else ""))
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
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
    try:
        import json

        from rich.console import Console

        from mathsolve.cli.views.replay import print_summary, progress_callbacks
        from mathsolve.replay.core import replay_file
        from mathsolve.replay.summary import check_mismatches_destination, rate_threshold, write_mismatches

        _require_file(file)
        threshold = rate_threshold(min_rate)
        if mismatches is not None:  # refused before minutes of replaying, not after
            check_mismatches_destination(mismatches, file)
        with progress_callbacks(not json_out and sys.stderr.isatty()) as (on_start, on_done):
            summary = replay_file(file, release=release, protocol=protocol, tool=tool, jobs=jobs, offset=offset,
                                  limit=limit, on_start=on_start, on_done=on_done)
        for warning in summary.warnings:
            _say(f"warning: {warning}")
        if mismatches is not None:
            write_mismatches(summary, mismatches)
        if json_out:
            print(json.dumps(summary.to_dict(), indent=2))
        else:
            print_summary(summary, Console())
        if threshold is not None and summary.rate < threshold:
            raise CheckFailed(f"{100 * summary.rate:.1f}% of blocks matched, below --min-rate {100 * threshold:.1f}%")
    except typer.Exit:
        raise
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@tools_app.callback()
def tools(ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="Machine-readable list.")) -> None:
    """List the tool backends, the plugin of each, and what they are warm for."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        from mathsolve.tools_view import print_tools, tool_rows

        rows = tool_rows()
        if json_out:
            import json

            print(json.dumps(rows, indent=2))
        else:
            print_tools(rows)
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@tools_app.command("run")
def tools_run(
    name: str = typer.Argument(..., help="Backend NAME (see `mathsolve tools`)."),
    source: Optional[str] = typer.Argument(None, help="FILE with the code, or - for stdin (the default when piped)."),
    protocol: str = typer.Option("tora", "--protocol", help="Format the observation with this protocol's rules."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds (default: the protocol's)."),
    json_out: bool = typer.Option(False, "--json", help="The raw result and the observation as JSON."),
) -> None:
    """Run one code block through one backend; print the observation exactly as the model sees it."""
    try:
        from mathsolve.tools_view import run_block

        outcome = run_block(name, source, protocol_name=protocol, timeout_s=timeout)
        if json_out:
            import json

            print(json.dumps(outcome, indent=2))
        else:
            sys.stdout.write(outcome["observation"])
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def plugins() -> None:
    """Installed plugins and what each registers; broken ones with their error."""
    try:
        from rich.console import Console
        from rich.table import Table

        from mathsolve import registry
        from mathsolve.plugins import get_plugin_manager

        registry.load_all()
        table = Table()
        for column in ("plugin", "from", "registers", "status"):
            table.add_column(column)
        for info in get_plugin_manager().infos.values():
            what = "; ".join(f"{k}: {', '.join(v)}" for k, v in info.registers.items())
            table.add_row(info.name, info.source, what, f"[red]{info.error}[/red]" if info.error else "ok")
        Console().print(table)
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


def _require_file(path: Path) -> None:
    from mathsolve.inputs import is_problem_file

    if not is_problem_file(str(path)) or str(path) == "-":
        raise UsageError(f"no such file: {path}")


def _plugin_commands() -> None:
    """Let plugins add commands; a broken one is reported by `mathsolve plugins`, not fatal."""
    from mathsolve.plugins import get_plugin_manager

    pm = get_plugin_manager()
    for impl in pm.hook.register_commands.get_hookimpls():
        info = pm.infos.get(impl.plugin_name)
        before = {id(c) for c in app.registered_commands} | {id(g) for g in app.registered_groups}
        try:
            impl.function(cli=app)
        except Exception as exc:  # noqa: BLE001
            if info is not None:
                info.error = f"register_commands: {type(exc).__name__}: {exc}"
            continue
        added = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands if id(c) not in before]
        added += [g.name or "?" for g in app.registered_groups if id(g) not in before]
        if info is not None and added:  # so `mathsolve plugins` lists the commands too
            info.registers.setdefault("commands", []).extend(added)


def main(argv: list[str] | None = None) -> None:
    """The `mathsolve` program: one exit code from mathsolve.errors for every way out."""
    code = _run(argv)
    code = _flush_stdout(code)
    sys.exit(code)


def _run(argv: list[str] | None) -> int:
    if sys.stdout is None:  # started with stdout closed (`>&-`): results would vanish
        _say("error: standard output is closed; redirect it (e.g. >/dev/null) instead")
        return EXIT_IO
    _reconfigure_streams()
    _handle_termination()
    _plugin_commands()
    command = typer.main.get_command(app)
    try:
        # The same name whether started as `mathsolve` or `python -m mathsolve`.
        result = command.main(args=argv, prog_name="mathsolve", standalone_mode=False)
    except _CLICK_ERROR as exc:  # usage errors: one line, as every other error
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        _say(f"error: {' '.join(exc.format_message().split())}{hint}")
        return EXIT_USAGE
    except (typer.Abort, KeyboardInterrupt):  # outside a command's own handling (EOF at a prompt, Ctrl-C early)
        _say("interrupted")
        return 128 + _interrupted_by
    except BaseException as exc:  # noqa: BLE001 - a broken pipe while help is printed, and the like
        if isinstance(exc, SystemExit):
            if exc.__context__ is not None and _is_broken_pipe(exc.__context__):
                return _broken_pipe()  # typer's own exit(1) after a broken pipe
            return exc.code if isinstance(exc.code, int) else EXIT_INTERNAL
        if _is_broken_pipe(exc):
            return _broken_pipe()
        try:
            _fail(exc)
        except typer.Exit as done:
            return done.exit_code
        return EXIT_INTERNAL
    if result == EXIT_INTERRUPTED_BY_TYPER and _interrupted_by != signal.SIGINT:
        return 128 + _interrupted_by  # typer turns an early KeyboardInterrupt into 130 itself
    return result if isinstance(result, int) else 0


def _reconfigure_streams() -> None:
    """Text that cannot be encoded (a lone surrogate from a file name or a JSON escape)
    is written as a backslash escape rather than failing the whole run; in JSON output
    that escape is itself valid JSON."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass


def _handle_termination() -> None:
    """SIGTERM (a kill, a service manager) and SIGHUP (the terminal closed) stop a run the
    way Ctrl-C does: the partial record, finished records kept, sandboxes cleaned up."""
    def interrupt(signum, _frame):
        global _interrupted_by
        _interrupted_by = signal.Signals(signum)
        raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            try:
                signal.signal(number, interrupt)
            except (OSError, ValueError):  # not the main thread (an embedding program)
                pass


def _flush_stdout(code: int) -> int:
    """Results still buffered are written now, where a failure can be reported: a full
    disk is an I/O error, a reader that went away ends quietly."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as exc:
        if _is_broken_pipe(exc):
            return _broken_pipe()
        _say(f"error: cannot write to standard output: {_io_failure(exc).message}")
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_IO
    return code


if __name__ == "__main__":
    main()
