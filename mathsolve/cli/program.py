"""The Typer application: the command groups, `mathsolve QUESTION` routed to `solve`, plugin
commands, and the program's start and end (streams, signals, usage errors, exit code).

The commands live in one module per topic (solve, evaluate, catalog, fidelity, tools,
system); they parse arguments and show results, and the work is in the core.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, List

import typer
from typer.core import TyperGroup

from mathsolve.cli import failures
from mathsolve.errors import EXIT_INTERNAL, EXIT_IO, EXIT_USAGE

# Typer's usage errors, whether it uses click or its own copy of it (typer 0.29+).
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_CLICK_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
EXIT_INTERRUPTED_BY_TYPER = 130  # typer turns a KeyboardInterrupt outside a command into this


class DefaultToSolve(TyperGroup):
    """Route `mathsolve [OPTIONS] QUESTION` to the `solve` command."""

    def parse_args(self, ctx, args):
        if not args:
            args = ["solve"]  # piped input is solved; in a terminal, solve says how to give a question
        elif args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            _refuse_command_typo(args[0], list(self.commands))
            args = ["solve", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx):
        return list(self.commands)  # keep definition order in --help


def stdin_is_terminal() -> bool:
    # A closed stdin (`<&-`) leaves sys.stdin None: nothing is piped in.
    return sys.stdin is None or sys.stdin.isatty()


def _refuse_command_typo(word: str, commands: list[str]) -> None:
    """`mathsolve doctr` is a typo of `doctor`, not a question to download a model for.
    Only a lone word close to a command name counts; anything else is a question."""
    import difflib

    from mathsolve.core.problems import is_problem_file

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
tools_app = typer.Typer(help="Tool backends: list them, or run one block through one.", invoke_without_command=True)


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


def _register_commands() -> None:
    """Import the command modules (each registers its commands on `app` or a group), in the
    order --help lists them."""
    import importlib

    for topic in ("solve", "evaluate", "catalog", "system", "fidelity", "tools"):
        importlib.import_module(f"mathsolve.cli.{topic}")
    app.add_typer(models_app, name="models")
    app.add_typer(tools_app, name="tools")


_register_commands()


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
        failures.say("error: standard output is closed; redirect it (e.g. >/dev/null) instead")
        return EXIT_IO
    _reconfigure_streams()
    failures.handle_termination()
    _plugin_commands()
    _coerce_lazily()
    command = typer.main.get_command(app)
    try:
        # The same name whether started as `mathsolve` or `python -m mathsolve`.
        result = command.main(args=argv, prog_name="mathsolve", standalone_mode=False)
    except _CLICK_ERROR as exc:  # usage errors: one line, as every other error
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        failures.say(f"error: {' '.join(exc.format_message().split())}{hint}")
        return EXIT_USAGE
    except (typer.Abort, KeyboardInterrupt):  # outside a command's own handling (EOF at a prompt, Ctrl-C early)
        failures.say("interrupted")
        return failures.interrupted_code()
    except BaseException as exc:  # noqa: BLE001 - a broken pipe while help is printed, and the like
        if isinstance(exc, SystemExit):
            if exc.__context__ is not None and failures.is_broken_pipe(exc.__context__):
                return failures.broken_pipe()  # typer's own exit(1) after a broken pipe
            return exc.code if isinstance(exc.code, int) else EXIT_INTERNAL
        if failures.is_broken_pipe(exc):
            return failures.broken_pipe()
        try:
            failures.fail(exc)
        except typer.Exit as done:
            return done.exit_code
        return EXIT_INTERNAL
    if result == EXIT_INTERRUPTED_BY_TYPER and failures.interrupted_code() != EXIT_INTERRUPTED_BY_TYPER:
        return failures.interrupted_code()
    return result if isinstance(result, int) else 0


class _LazyCoercion:
    """typer (0.29 and later) builds a pydantic TypeAdapter for each parameter of a command
    before it looks at the value, and importing pydantic costs ~50 ms, a third of a light
    command's start-up. A value not given needs no coercion and text arrives as text; only
    the rest goes to typer's own coercion, built the first time it is needed."""

    def __init__(self, descriptor: Any, build: Callable[[Any], Any]) -> None:
        self.descriptor, self.build, self.real = descriptor, build, None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return () if param.multiple or param.nargs == -1 else None
        annotation = self.descriptor.annotation
        if annotation in (str, bool) and isinstance(value, annotation):
            return value
        if annotation == List[str] and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        if self.real is None:
            self.real = self.build(self.descriptor)
        return self.real.coerce(value, param=param, ctx=ctx)


def _coerce_lazily() -> None:
    """Give every typer parameter (the --help options typer adds included) a _LazyCoercion."""
    try:  # private hooks of typer 0.29+; older versions never import pydantic here
        from typer._coercion import build_runtime_param
        from typer.core import _TyperParameter
    except ImportError:
        return
    if getattr(_TyperParameter, "_mathsolve_lazy", False):
        return

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            self._runtime_param = _LazyCoercion(self.type_descriptor, build_runtime_param)
        return self._runtime_param

    _TyperParameter.get_runtime_param = get_runtime_param
    _TyperParameter._mathsolve_lazy = True


def _reconfigure_streams() -> None:
    """Text that cannot be encoded (a lone surrogate from a file name or a JSON escape)
    is written as a backslash escape rather than failing the whole run; in JSON output
    that escape is itself valid JSON."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass


def _flush_stdout(code: int) -> int:
    """Results still buffered are written now, where a failure can be reported: a full
    disk is an I/O error, a reader that went away ends quietly."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as exc:
        if failures.is_broken_pipe(exc):
            return failures.broken_pipe()
        failures.say(f"error: cannot write to standard output: {failures.io_failure(exc).message}")
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_IO
    return code
