"""Protocols: the exact prompt, stop strings and tool-loop rules each model was trained on.

One module per family; each registers through the same `register_protocols` hook a
plugin would use (see mathsolve/default_plugins.py).
"""

from mathsolve.formats.base import Continue, Execute, Finish, Generation, ModelInfo, Protocol, Step

__all__ = ["Continue", "Execute", "Finish", "Generation", "ModelInfo", "Protocol", "Step", "builtin_protocols"]


def builtin_protocols() -> tuple[type[Protocol], ...]:
    """The protocol classes mathsolve ships, in the order they are registered.

    Importable without loading any plugin: grading reads each class's `answer_style` for
    records whose protocol no loaded plugin registers.
    """
    # Imported here: the family modules import this package's base module.
    from mathsolve.formats.chat_tir import ChatTirProtocol
    from mathsolve.formats.cot import AlpacaCotProtocol, DeepSeekCotProtocol
    from mathsolve.formats.mathcoder import MathCoderProtocol
    from mathsolve.formats.numina import NuminaProtocol
    from mathsolve.formats.tora import QwenCotProtocol, QwenTirProtocol, ToraProtocol
    from mathsolve.formats.harmony import HarmonyProtocol
    from mathsolve.formats.qwen3 import Qwen3TirProtocol
    from mathsolve.formats.openmath import OpenMathCotProtocol, OpenMathTirProtocol

    return (ToraProtocol, MathCoderProtocol, AlpacaCotProtocol, NuminaProtocol, QwenTirProtocol, QwenCotProtocol,
            DeepSeekCotProtocol, ChatTirProtocol, HarmonyProtocol, Qwen3TirProtocol, OpenMathTirProtocol,
            OpenMathCotProtocol)
