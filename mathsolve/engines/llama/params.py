"""Loading settings of the llama.cpp engine: batch size, GPU offload, flash attention, the
weight-repacking switch, and whether a KV cache fits in memory before llama.cpp tries."""

from __future__ import annotations

import contextlib
import os

from mathsolve.errors import UsageError


# Tokens per llama_decode call when evaluating a prompt or an appended observation; the
# tool loop's appends are far shorter, so it only matters for long prompts (measured by
# `python -m bench --only settings`, see docs/performance.md). On the CPU 256 and 512
# evaluate prompts alike; on a GPU 2048 was at most a few percent faster than 512 in the
# one measurement so far, not enough to pay for larger buffers.
N_BATCH = 512


# ggml's log levels as llama.cpp 0.3.36 numbers them (ggml.h: NONE 0, DEBUG 1, INFO 2,
# WARN 3, ERROR 4, CONT 5). llama-cpp-python's own log callback still maps the older
# numbering, one off, so its verbose=False lets every warning through ("n_ctx_seq > n_ctx_train",
# "using full-size SWA cache"): mathsolve's notes say what matters in its own words.
_LOG_ERROR, _LOG_CONT = 4, 5
_last_level = [0]
_log_callback = None  # kept referenced: llama.cpp holds only the C pointer


def quiet_logs() -> None:
    """Route llama.cpp's log through a callback that prints only errors unless the last
    `Llama(verbose=...)` asked for everything (llama-cpp-python's logger at DEBUG): the
    same switch llama-cpp-python has, with the levels read right."""
    global _log_callback
    if _log_callback is not None:
        return
    import ctypes
    import logging
    import sys

    import llama_cpp
    from llama_cpp._logger import logger

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level != _LOG_CONT:
            _last_level[0] = level
        if logger.level <= logging.DEBUG or _last_level[0] >= _LOG_ERROR:
            print(text.decode("utf-8", "replace"), end="", flush=True, file=sys.stderr)

    _log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def gpu_offload_supported() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


@contextlib.contextmanager
def model_params(extra_buffers: bool):
    """Set `use_extra_bufts` for one `Llama(...)` construction.

    `Llama()` exposes no keyword for it; it builds its struct from
    `llama_model_default_params()`, so that factory is wrapped while loading.
    """
    import llama_cpp.llama as llama_module

    original = llama_module.llama_cpp.llama_model_default_params

    def params():
        p = original()
        p.use_extra_bufts = extra_buffers
        return p

    llama_module.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        llama_module.llama_cpp.llama_model_default_params = original


def resolve_flash_attn(setting: str | bool, kv_cache: str, *, on_gpu: bool) -> bool:
    """Flash attention on or off. `auto` turns it on where it pays: on a GPU (faster
    attention, less memory at long contexts) and for a quantized KV cache, which
    llama.cpp only supports with it (a quantized V cache needs it). On the CPU it
    stays off: measured there, it did not speed decoding (docs/performance.md)."""
    if isinstance(setting, bool):
        setting = "on" if setting else "off"
    quantized = kv_cache != "f16"
    if setting == "off" and quantized:
        raise UsageError(f"kv_cache {kv_cache} needs flash attention (llama.cpp quantizes the KV cache "
                         "only with it): set flash_attn to auto or on")
    return setting == "on" or (setting == "auto" and (on_gpu or quantized))


# Bytes per stored number of each KV cache type (ggml blocks of 32: 34 bytes for q8_0, 18 for q4_0).
_KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def available_memory() -> int | None:
    """Bytes of memory a new allocation can still get: MemAvailable on Linux, else the
    physical memory; None when the OS does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_kv_memory(info, n_ctx: int, kv_cache: str) -> None:
    """Refuse a context whose KV cache cannot fit in this machine's memory, before llama.cpp
    tries: on the CPU the allocation may seem to succeed (memory is overcommitted) and the
    process is then killed when the cache fills, losing the run."""
    per_token = info.kv_values_per_token()
    free = available_memory()
    if per_token is None or free is None:
        return
    need = per_token * n_ctx * _KV_BYTES.get(kv_cache, 2.0)
    if need > free:
        raise UsageError(f"a context of {n_ctx:,} tokens needs {need / 2**30:.1f} GiB for the KV cache, more than "
                         f"the {free / 2**30:.1f} GiB of memory available; lower n_ctx (or use --kv-cache q8_0)")
