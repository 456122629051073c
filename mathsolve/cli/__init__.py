"""The command line: argument parsing and what the user sees; the work is in the core.

    mathsolve/cli/program.py    the Typer app, `mathsolve QUESTION` -> solve, start and end
    mathsolve/cli/failures.py   the one path from an error or a signal to an exit code
    mathsolve/cli/options.py    the options `solve` and `eval` share, declared once
    mathsolve/cli/<topic>.py    the commands: solve, evaluate, catalog, fidelity, tools, system
    mathsolve/cli/render.py     how one solve looks: rich, plain, JSON
    mathsolve/cli/views/        tables, progress bars and reports

Importing this package is cheap (the views import it): the app loads when `main` runs, or
when `mathsolve.cli.program` is asked for.
"""

from __future__ import annotations

from typing import Any


def main(argv: list[str] | None = None) -> None:
    """The `mathsolve` program (the console script and `python -m mathsolve`)."""
    from mathsolve.cli.program import main as run

    run(argv)


def __getattr__(name: str) -> Any:
    if name == "app":  # the Typer app, for tests that drive it with typer.testing.CliRunner
        from mathsolve.cli.program import app

        return app
    raise AttributeError(f"module 'mathsolve.cli' has no attribute {name!r}")
