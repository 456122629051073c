"""The one path from an error to an exit code: every command's failure, usage errors and
signals end as one line `error: ...` on stderr and a code from mathsolve.errors.

- A MathsolveError is its own message and code; an OSError (a permission, a full disk) is an
  I/O failure (exit 7); a broken pipe on stdout ends quietly (exit 141), as Unix tools do.
- SIGTERM and SIGHUP interrupt like Ctrl-C; the exit code says which (128 + the signal).
- Anything else is a bug in mathsolve: exit 1, with the traceback under --verbose.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from typing import Any, Callable

import typer

from mathsolve.errors import EXIT_BROKEN_PIPE, EXIT_INTERNAL, IOFailure, MathsolveError

# The signal that interrupted this run (SIGINT unless a SIGTERM/SIGHUP arrived).
_interrupted_by = signal.SIGINT
# Whether tracebacks of internal errors are shown: the `verbose` setting, once it is known.
verbose = False


def interrupted_code() -> int:
    """The exit code of an interrupted run: 128 + the signal, as shells report it."""
    return 128 + _interrupted_by


def handle_termination() -> None:
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


def say(line: str) -> None:
    """One line on stderr; a stderr that is gone (closed, full) cannot be helped."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def fail(exc: BaseException) -> None:
    """End the command: one line on stderr, and typer.Exit with the documented code."""
    if isinstance(exc, KeyboardInterrupt):
        say("interrupted")
        raise typer.Exit(interrupted_code())
    if is_broken_pipe(exc):
        raise typer.Exit(broken_pipe())
    if isinstance(exc, OSError):
        exc = io_failure(exc)
    if isinstance(exc, MathsolveError):
        say(f"error: {exc.message}")
        raise typer.Exit(exc.exit_code)
    if verbose:
        import traceback

        traceback.print_exception(exc)
    detail = " ".join(str(exc).split()) or type(exc).__name__
    say(f"error: internal error: {type(exc).__name__}: {detail} (rerun with --verbose for details)")
    raise typer.Exit(EXIT_INTERNAL)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so that whatever it raises goes through `fail`."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except BaseException as exc:  # noqa: BLE001 - fail turns everything into one line + code
            fail(exc)

    return run


def is_broken_pipe(exc: BaseException) -> bool:
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE)


def broken_pipe() -> int:
    """The reader of stdout went away (`mathsolve FILE | head -1`): stop quietly. Point
    stdout at /dev/null so the flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE


def io_failure(exc: OSError) -> IOFailure:
    """An OS-level failure outside the places that explain their own (disk full on
    stdout, a permission the user's environment denies): a one-line I/O error."""
    where = f"{exc.filename}: " if exc.filename is not None else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return IOFailure(f"{where}no space left on the device")
    return IOFailure(f"{where}{exc.strerror or exc}")
