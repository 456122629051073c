"""`mathsolve tools` and `mathsolve tools run`: what backends exist, and one block
through one backend, printed exactly as the model would see it.

For plugin authors and for debugging: `tools run` formats the result with a
protocol's own observation rules, so `Done`, `<empty_execution>` or a filtered
traceback appear byte for byte as they would in a transcript.
"""

from __future__ import annotations

import sys
from typing import Any

from mathsolve.errors import UsageError
from mathsolve.textdecode import decode


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
        from mathsolve.inputs import read_file

        data, name = read_file(source, "a file of code"), source
    decoded = decode(data, name=name)
    for warning in decoded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return decoded.text


def run_block(name: str, source: str | None, *, protocol_name: str = "tora", timeout_s: float | None = None) -> dict[str, Any]:
    """Run the code in `source` (FILE or stdin) through backend `name`; the result and
    the protocol's observation text."""
    from mathsolve import registry
    from mathsolve.sandbox import Limits

    tools = registry.tools()
    if name not in tools:
        raise UsageError(f"unknown tool {name!r}; installed: {', '.join(sorted(tools)) or 'none'}")
    protocol = registry.protocol(protocol_name)
    tool = tools[name]
    code = read_code(source)
    if timeout_s is not None:
        from mathsolve.settings import SPECS

        try:
            timeout_s = SPECS["tool_timeout"].parse(timeout_s)
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
    limits = Limits(timeout_s=timeout_s or protocol.tool_timeout_s)
    if protocol.stateful_tool:
        opener = getattr(tool, "open_session", None)
        if opener is None:
            raise UsageError(f"the {protocol.name} protocol needs a backend with sessions; {name!r} has none")
        session = opener(limits)
        try:
            result = session.run(code)
        finally:
            session.close()
    else:
        result = tool.run(code, limits=limits)
    return {"tool": name, "protocol": protocol.name, "result": result.to_dict(), "observation": protocol.observation(result)}
