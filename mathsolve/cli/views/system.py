"""The tables of `mathsolve config` and `mathsolve plugins`. Values come from the user and
from plugins, so every cell is plain text, never rich markup."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def print_settings(settings, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from mathsolve.settings import SPECS

    table = Table(title=f"config file: {path}", title_justify="left")
    for column in ("setting", "value", "source", "meaning"):
        table.add_column(column)
    for name, value in settings.values.items():
        shown = "auto" if value.value is None else str(value.value)
        table.add_row(name, Text(shown), Text(value.source), SPECS[name].help)
    Console().print(table)


def print_plugins(infos: Iterable) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for column in ("plugin", "from", "registers", "status"):
        table.add_column(column)
    for info in infos:
        what = "; ".join(f"{k}: {', '.join(v)}" for k, v in info.registers.items())
        status = Text(info.error, style="red") if info.error else Text("ok")
        table.add_row(Text(info.name), Text(info.source), Text(what), status)
    Console().print(table)
