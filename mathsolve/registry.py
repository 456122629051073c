"""What the loaded plugins provide: tools, protocols, catalog entries, engines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mathsolve.errors import UsageError
from mathsolve.plugins import get_plugin_manager

if TYPE_CHECKING:  # the value types are imported where they are built, not on every start
    from mathsolve.catalog import Catalog
    from mathsolve.engines.base import EngineEntry
    from mathsolve.formats.base import Protocol
    from mathsolve.tools import Tool


def tools() -> dict[str, Tool]:
    return {tool.name: tool for _, tool in get_plugin_manager().collect("register_tools")}


def protocols() -> dict[str, Protocol]:
    return {p.name: p for _, p in get_plugin_manager().collect("register_protocols")}


def protocol(name: str) -> Protocol:
    known = protocols()
    if name in known:
        return known[name]
    import difflib

    close = difflib.get_close_matches(name, list(known), n=2)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UsageError(f"unknown protocol {name!r}{hint} (known: {', '.join(sorted(known))})")


def catalog() -> Catalog:
    from mathsolve.catalog import Catalog

    return Catalog([card for _, card in get_plugin_manager().collect("register_models")])


def engines() -> dict[str, EngineEntry]:
    from mathsolve.engines.base import EngineEntry

    entries: dict[str, EngineEntry] = {}
    for _, (name, factory, *rest) in get_plugin_manager().collect("register_engines"):
        options = rest[0] if rest else {}
        entries[name] = EngineEntry(name, factory, local=bool(options.get("local", True)))
    return entries


def is_local_engine(name: str) -> bool:
    """Whether engine `name` loads a model file here (unknown names count as local: the
    Solver reports them)."""
    entry = engines().get(name)
    return entry is None or entry.local


def load_all() -> None:
    """Call every register_* hook once, so each plugin's PluginInfo lists all it registers."""
    tools()
    protocols()
    catalog()
    engines()
