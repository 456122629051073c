"""`mathsolve tools` (the backends) and `mathsolve tools run` (one block through one backend,
printed exactly as the model would see it)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from mathsolve.cli import failures
from mathsolve.cli.program import tools_app


@tools_app.callback()
@failures.reports_errors
def tools(ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="Machine-readable list.")) -> None:
    """List the tool backends, the plugin of each, and what they are warm for."""
    if ctx.invoked_subcommand is not None:
        return
    from mathsolve.cli.views import show_rows
    from mathsolve.cli.views.tools import print_tools, tool_rows

    show_rows(tool_rows(), as_json=json_out, table=print_tools)


@tools_app.command("run")
@failures.reports_errors
def tools_run(
    name: str = typer.Argument(..., help="Backend NAME (see `mathsolve tools`)."),
    source: Optional[str] = typer.Argument(None, help="FILE with the code, or - for stdin (the default when piped)."),
    protocol: str = typer.Option("tora", "--protocol", help="Format the observation with this protocol's rules."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds (default: the protocol's)."),
    json_out: bool = typer.Option(False, "--json", help="The raw result and the observation as JSON."),
) -> None:
    """Run one code block through one backend; print the observation exactly as the model sees it."""
    from mathsolve.cli.views.tools import read_code
    from mathsolve.tools.single import run_block

    outcome = run_block(name, read_code(source), protocol_name=protocol, timeout_s=timeout)
    if json_out:
        import json

        print(json.dumps(outcome, indent=2))
    else:
        sys.stdout.write(outcome["observation"])
