"""Protocols: the exact prompt, stop strings and tool-loop rules each model was trained on.

One module per family; each registers through the same `register_protocols` hook a
plugin would use (see mathsolve/default_plugins.py).
"""

from mathsolve.formats.base import Continue, Execute, Finish, Generation, ModelInfo, Protocol, Step

__all__ = ["Continue", "Execute", "Finish", "Generation", "ModelInfo", "Protocol", "Step"]
