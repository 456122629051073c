"""The plugin hooks. Each receives a `register` callback instead of returning a list,
so a hook can grow new keyword arguments without breaking existing plugins."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("mathsolve")
hookimpl = pluggy.HookimplMarker("mathsolve")


@hookspec
def register_tools(register):
    """Register tool backends: register(tool), tool following mathsolve.tools.Tool."""


@hookspec
def register_protocols(register):
    """Register prompt/tool protocols: register(protocol), a mathsolve.formats.Protocol."""


@hookspec
def register_models(register):
    """Register catalog entries: register(card), a mathsolve.catalog.ModelCard."""


@hookspec
def register_engines(register):
    """Register inference engines: register(name, factory, local=True), factory(EngineRequest) -> Engine."""


@hookspec
def register_commands(cli):
    """Add commands to the Typer app `cli`."""
