"""The `sympy` tool backend: the `python` backend's per-block semantics (ToRA's
executor: every block alone, in a fresh empty namespace) without paying
`import sympy` for every block. sympy is imported once per process, in a warm
sandbox zygote (`mathsolve.sandbox.WarmPool`), and each block runs in a fresh,
isolated child of it; the observation text is the one `python` gives.

A plugin like any third-party one: it imports only the plugin API
(`mathsolve.plugin`) and is found through the `mathsolve` entry-point group.
"""

from __future__ import annotations

from functools import cache

from mathsolve.plugin import Limits, ToolResult, hookimpl

# sympy itself, plus the submodules its own functions import on first use (solve,
# simplify, integrate, printing: about 100 ms of a block otherwise) and sympy.stats,
# which programs import by name. Imports only: the zygote computes nothing.
PRELOAD = (
    "sympy",
    "sympy.assumptions.wrapper",
    "sympy.combinatorics",
    "sympy.integrals.heurisch",
    "sympy.integrals.manualintegrate",
    "sympy.integrals.risch",
    "sympy.physics.units",
    "sympy.sets.handlers.functions",
    "sympy.sets.handlers.issubset",
    "sympy.sets.setexpr",
    "sympy.stats",
    "sympy.tensor.tensor",
)
@cache
def _pool():
    """One pool per process, whatever the number of tool objects (the hook may run more
    than once): one zygote, or one per block in flight when problems run concurrently;
    it starts with the first block (so loading the plugin imports no sandbox) and ends
    with the process."""
    from mathsolve.plugin import WarmPool

    return WarmPool(PRELOAD)


class SympyTool:
    name = "sympy"
    # Top-level modules kept warm: the router sends a block where its imports are covered.
    imports: tuple[str, ...] = ("sympy",)
    description = "Python with sympy preloaded: each block in a fresh, isolated fork of a warm interpreter"

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        result = _pool().run(code, limits=limits, prelude=prelude)
        return ToolResult.from_exec(self.name, result)


@hookimpl
def register_tools(register):
    register(SympyTool())
