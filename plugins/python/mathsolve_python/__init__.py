"""The `python` tool backend: each code block runs in a fresh sandboxed subprocess.

It is a plugin like any third-party one: it uses only the public API
(`mathsolve.plugins.hookimpl`, `mathsolve.tools`, `mathsolve.sandbox`) and is
found through the `mathsolve` entry-point group.
"""

from __future__ import annotations

from mathsolve.plugins import hookimpl
from mathsolve.sandbox import Limits, run_python
from mathsolve.tools import ToolResult


class PythonTool:
    name = "python"
    description = "fresh Python interpreter per block, in the sandbox (ToRA executor semantics)"

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        result = run_python(code, limits=limits, prelude=prelude)
        return ToolResult(
            tool=self.name,
            status=result.status,
            stdout=result.stdout,
            stderr=result.stderr,
            error=result.error,
            duration_s=result.duration_s,
        )


@hookimpl
def register_tools(register):
    register(PythonTool())
