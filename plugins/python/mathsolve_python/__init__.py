"""The `python` tool backend, in the sandbox: a fresh, isolated process per block
(`run`, ToRA executor semantics), or one persistent interpreter per problem
(`open_session`, a notebook kernel's semantics).

Per-block processes are forked from a warm interpreter that imported nothing
(`mathsolve.sandbox.WarmPool`), not started cold: interpreter start-up was most
of a plain block's cost (62 ms of 62 ms cold against 7 ms forked, see
docs/performance.md), and the block sees what `run_python` would give it.

It is a plugin like any third-party one: it uses only the public API
(`mathsolve.plugins.hookimpl`, `mathsolve.tools`, `mathsolve.sandbox`) and is
found through the `mathsolve` entry-point group.
"""

from __future__ import annotations

from mathsolve.plugins import hookimpl
from mathsolve.sandbox import Limits, PythonSession, WarmPool
from mathsolve.tools import ToolResult


class PythonToolSession:
    """A `ToolSession` over one sandboxed `PythonSession` (started at the first block)."""

    def __init__(self, tool: str, limits: Limits) -> None:
        self.tool = tool
        self._session = PythonSession(limits=limits)

    def run(self, code: str) -> ToolResult:
        return ToolResult.from_exec(self.tool, self._session.run(code))

    def close(self) -> None:
        self._session.close()


# One pool per process (see mathsolve_sympy); nothing starts before the first block.
_BACKEND = WarmPool()


class PythonTool:
    name = "python"
    description = "Python in the sandbox: a fresh, isolated process per block, or one interpreter kept per problem"

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        return ToolResult.from_exec(self.name, _BACKEND.run(code, limits=limits, prelude=prelude))

    def open_session(self, limits: Limits) -> PythonToolSession:
        return PythonToolSession(self.name, limits)


@hookimpl
def register_tools(register):
    register(PythonTool())
