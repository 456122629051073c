"""The plugin API: everything a mathsolve plugin may use, from this one module.

    from mathsolve.plugin import hookimpl, ToolResult, Limits

A plugin registers through the hooks (`mathsolve.hookspecs`, entry-point group
`mathsolve`) and imports nothing else from mathsolve: what is here is stable, everything
else may move. docs/plugins.md is the guide; plugins/extpython/ is a complete example.

- Hooks: `hookimpl` marks the functions `register_tools`, `register_protocols`,
  `register_models`, `register_engines`, `register_commands`.
- Tools: `Tool`, `ToolSession` (the contracts), `ToolResult`, `Limits`.
- The sandbox, to run untrusted code and programs: `run_python`, `run_program`,
  `PythonSession`, `WarmPython`, `WarmPool`, `ExecResult`, `SandboxError`, `CODE_FILENAME`.
- Protocols: `Protocol` (the base class), the step types `Finish`, `Execute`, `Continue`
  (`Step`), and the helpers `last_fenced_block`, `middle_truncate`.
- Catalog entries: `ModelCard`, `GGUFFile`.
- Engines: `Engine`, `Session` (the contracts), `EngineRequest`, `EngineInfo`, `ModelInfo`,
  `Generation`, `Sampling`, `TokenStats`, and `find_stop` / `held_back` for stop strings.
- The test kit: `write_tiny_gguf` (a tiny real model llama.cpp runs in milliseconds),
  `ScriptedEngine` (an engine that writes given text), `TinyDims`; see mathsolve.testkit.

Every name but `hookimpl` and the tool contract loads when first used, so importing this
module (which every plugin does when mathsolve starts) stays cheap. Import the sandbox and
the test kit where you use them, inside functions, to keep your plugin's load cheap too.
"""

from __future__ import annotations

from typing import Any

from mathsolve.hookspecs import hookimpl
from mathsolve.tools.base import Limits, Tool, ToolResult, ToolSession

# Where every other name lives; each module loads when one of its names is first used, so
# importing this module (every plugin does, at every start) costs almost nothing.
_LAZY = {
    **dict.fromkeys(("GGUFFile", "ModelCard"), "mathsolve.catalog"),
    **dict.fromkeys(("Engine", "EngineInfo", "EngineRequest", "Generation", "ModelInfo", "Sampling", "Session",
                     "TokenStats", "find_stop", "held_back"), "mathsolve.engines.base"),
    **dict.fromkeys(("Continue", "Execute", "Finish", "Protocol", "Step", "last_fenced_block", "middle_truncate"),
                    "mathsolve.formats.base"),
    **dict.fromkeys(("run_python", "run_program", "PythonSession", "WarmPython", "WarmPool", "ExecResult",
                     "SandboxError", "CODE_FILENAME"), "mathsolve.sandbox"),
    **dict.fromkeys(("write_tiny_gguf", "ScriptedEngine", "TinyDims"), "mathsolve.testkit"),
}

__all__ = [
    "CODE_FILENAME", "Continue", "Engine", "EngineInfo", "EngineRequest", "ExecResult", "Execute", "Finish",
    "GGUFFile", "Generation", "Limits", "ModelCard", "ModelInfo", "Protocol", "PythonSession", "Sampling",
    "SandboxError", "ScriptedEngine", "Session", "Step", "TinyDims", "TokenStats", "Tool", "ToolResult",
    "ToolSession", "WarmPool", "WarmPython", "find_stop", "held_back", "hookimpl", "last_fenced_block",
    "middle_truncate", "run_program", "run_python", "write_tiny_gguf",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mathsolve.plugin' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
