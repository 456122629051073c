"""The llama.cpp engine (llama-cpp-python): load a GGUF once, stream, re-use the KV cache.

    engine.py    LlamaEngine: loading, tokens and pieces, special-token checks
    session.py   LlamaSession: one problem's generation rounds and prefix reuse
    params.py    loading settings: GPU offload, flash attention, KV cache memory
    repack.py    whether llama.cpp's weight repacking is safe on this CPU (probed once)
    batched.py   BatchedEngine: several sequences decoded together in one context
    scheduler.py its decode thread's step; sequence.py: BatchedSession, one sequence
    grouping.py  which sequences decode in one call when they stand at different depths

llama_cpp itself is imported only when a model loads.
"""

from mathsolve.engines.llama.engine import LlamaEngine
from mathsolve.engines.llama.params import (
    N_BATCH,
    available_memory,
    check_kv_memory,
    gpu_offload_supported,
    model_params,
    resolve_flash_attn,
)
from mathsolve.engines.llama.session import LlamaSession

__all__ = ["N_BATCH", "LlamaEngine", "LlamaSession", "available_memory", "check_kv_memory",
           "gpu_offload_supported", "model_params", "resolve_flash_attn"]
