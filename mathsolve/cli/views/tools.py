"""`mathsolve tools`: the registered backends, the plugin of each and what they are warm for;
and reading the code `mathsolve tools run` is given."""

from __future__ import annotations

import sys
from typing import Any

from mathsolve.errors import UsageError
from mathsolve.files.decode import decode


def tool_rows() -> list[dict[str, Any]]:
    """One row per registered backend, with the plugin that registered it."""
    from mathsolve.plugins import get_plugin_manager

    rows = []
    for plugin, tool in get_plugin_manager().collect("register_tools"):
        rows.append(
            {
                "name": tool.name,
                "plugin": plugin,
                "description": tool.description,
                "warm_imports": list(getattr(tool, "imports", ()) or ()),
                "sessions": hasattr(tool, "open_session"),
                "claims": hasattr(tool, "claims"),
            }
        )
    return rows


def print_tools(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("tool", "plugin", "warm for", "sessions", "claims", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            row["plugin"],
            ", ".join(row["warm_imports"]) or "-",
            "yes" if row["sessions"] else "-",
            "yes" if row["claims"] else "-",
            row["description"],
        )
    Console().print(table)
    print("Routing: --tool NAME, then a ```NAME fence, then claims, then imports, then the protocol's default.")


def read_code(source: str | None) -> str:
    """The block from FILE, or from stdin for `-` or no argument."""
    if source is None or source == "-":
        if sys.stdin is None or (sys.stdin.isatty() and source is None):
            raise UsageError("give a FILE with the code, or `-` and the code on stdin")
        data, name = sys.stdin.buffer.read(), "stdin"
    else:
        from mathsolve.core.problems import read_file

        data, name = read_file(source, "a file of code"), source
    decoded = decode(data, name=name)
    for warning in decoded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return decoded.text
