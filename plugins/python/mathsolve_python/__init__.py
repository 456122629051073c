"""The `python` tool backend, in the sandbox: a fresh, isolated process per block
(`run`, ToRA executor semantics), or one persistent interpreter per problem
(`open_session`, a notebook kernel's semantics).

Per-block processes are forked from a warm interpreter that imported nothing
(`mathsolve.sandbox.WarmPool`), not started cold: interpreter start-up was most
of a plain block's cost (62 ms of 62 ms cold against 7 ms forked, see
docs/performance.md), and the block sees what `run_python` would give it.

It is a plugin like any third-party one: it imports only the plugin API
(`mathsolve.plugin`) and is found through the `mathsolve` entry-point group. The
sandbox is imported when a block first runs, not when mathsolve loads the plugin.
"""

from __future__ import annotations

from functools import cache

from mathsolve.plugin import Limits, ToolResult, hookimpl


class PythonToolSession:
    """A `ToolSession` over one sandboxed `PythonSession` (started at the first block)."""

    def __init__(self, tool: str, limits: Limits) -> None:
        from mathsolve.plugin import PythonSession

        self.tool = tool
        self._session = PythonSession(limits=limits)

    def run(self, code: str) -> ToolResult:
        return ToolResult.from_exec(self.tool, self._session.run(code))

    def close(self) -> None:
        self._session.close()


@cache
def _pool():
    """One pool per process (see mathsolve_sympy), made at the first block."""
    from mathsolve.plugin import WarmPool

    return WarmPool()


class PythonTool:
    name = "python"
    description = "Python in the sandbox: a fresh, isolated process per block, or one interpreter kept per problem"

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        return ToolResult.from_exec(self.name, _pool().run(code, limits=limits, prelude=prelude))

    def open_session(self, limits: Limits) -> PythonToolSession:
        return PythonToolSession(self.name, limits)


@hookimpl
def register_tools(register):
    register(PythonTool())
