"""What the commands show: tables, progress and summaries on the terminal. Views format and
draw; the work they show is done in the core."""

from __future__ import annotations

from typing import Any, Callable


def show_rows(rows: list[dict[str, Any]], *, as_json: bool, table: Callable[[list[dict[str, Any]]], None]) -> None:
    """A listing command's rows: JSON for scripts with --json, else the command's table."""
    if as_json:
        import json

        print(json.dumps(rows, indent=2))
    else:
        table(rows)
