"""A test kit for plugin authors (and mathsolve's own tests and benchmarks): real parts,
small enough for a unit test.

- `write_tiny_gguf(path, tokenizer="bpe"|"spm", ...)`: a random-weight llama-architecture
  GGUF of a few hundred kilobytes that the real llama.cpp loads and runs in milliseconds,
  with a Qwen2-like or Llama-2-like tokenizer (token conventions: mathsolve.testkit.gguf).
- `ScriptedEngine(rounds)`: an engine whose "model" writes the given text, round by round,
  honouring stop strings, for testing a protocol or a tool without a model.
- `TinyDims`, `add_llama_hparams`, `bpe_vocab`: the pieces, for writing models of other
  shapes (the benchmarks' synthetic models of real checkpoint shapes use them).

The GGUF writer needs the `gguf` and `numpy` packages: `pip install "mathsolve[test]"`.
They are imported only when a kit function that needs them is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ScriptedEngine", "TinyDims", "add_llama_hparams", "bpe_vocab", "dims_for", "write_tiny_gguf"]

_HOMES = {
    "ScriptedEngine": "mathsolve.engines.scripted",
    "TinyDims": "mathsolve.testkit.gguf",
    "add_llama_hparams": "mathsolve.testkit.gguf",
    "dims_for": "mathsolve.testkit.gguf",
    "write_tiny_gguf": "mathsolve.testkit.gguf",
    "bpe_vocab": "mathsolve.testkit.vocab",
}


def __getattr__(name: str) -> Any:
    # Loaded on first use: importing the kit never pulls in numpy or gguf by itself.
    if name not in _HOMES:
        raise AttributeError(f"module 'mathsolve.testkit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
