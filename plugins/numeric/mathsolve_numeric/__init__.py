"""The `numeric` tool backend: like `sympy`, with numpy and mpmath preloaded in the
warm sandbox zygote instead (`mathsolve.sandbox.WarmPool`): each block runs in a
fresh, isolated child of it, with the `python` backend's semantics and output.

numpy is optional: without it only mpmath is kept warm, and a block importing numpy
fails exactly as it would with `python` (the description says so).

A plugin like any third-party one: it uses only the public API and is found through
the `mathsolve` entry-point group.
"""

from __future__ import annotations

import importlib.util
from functools import cache

from mathsolve.plugin import Limits, ToolResult, hookimpl

_WANTED = ("numpy", "mpmath")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_WARM = tuple(name for name in _WANTED if _importable(name))
_MISSING = tuple(name for name in _WANTED if name not in _WARM)
# numpy 2 imports these on first use (np.random.rand, np.roots, np.fft.fft).
_LAZY = {"numpy": ("numpy.random", "numpy.polynomial", "numpy.fft")}
PRELOAD = tuple(module for name in _WARM for module in (name, *_LAZY.get(name, ())))
@cache
def _pool():
    """One pool per process (see mathsolve_sympy), made at the first block."""
    from mathsolve.plugin import WarmPool

    return WarmPool(PRELOAD)


class NumericTool:
    name = "numeric"
    # Top-level modules kept warm (those installed of numpy and mpmath).
    imports: tuple[str, ...] = _WARM
    description = (
        f"Python with {' and '.join(_WARM) or 'nothing'} preloaded: each block in a fresh, isolated fork "
        "of a warm interpreter"
        + (f" ({', '.join(_MISSING)} not installed: imported cold, like `python`)" if _MISSING else "")
    )

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        result = _pool().run(code, limits=limits, prelude=prelude)
        return ToolResult.from_exec(self.name, result)


@hookimpl
def register_tools(register):
    register(NumericTool())
