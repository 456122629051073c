"""How many sessions run at once (`--parallel`), and the engine that runs them together.

A Solver is told how many sessions its caller will open at once: the K samples of `-n K`
times the problems in flight (`--concurrency`). When that is more than one:
- the local llama.cpp engine becomes a BatchedEngine (engines/llama/batched.py): one
  context whose `parallel` slots are decoded together, one token each per llama_decode;
  sessions beyond the slots wait for one (first come, first served), so N problems x K
  samples share the slots and a finished session's slot is taken by a waiting one at once;
- an engine that serves parallel sessions itself (`concurrent = True`: a server) gets the
  same bound through a semaphore;
- any other engine runs one session at a time.

The default (`parallel` auto) is 8 sequences on the CPU, where 8 decoded together gave
about twice the tokens per second of one (docs/performance.md, section 8) and more mostly
lengthen each sample; 32 with layers on a GPU, where decoding is bound by memory bandwidth
and a batch costs little more than one sequence; 8 for a server, which batches on its own.
It is at least `concurrency` (the problems asked to be in flight), at most the sessions the
run opens, and never more than the KV cache memory holds: each sequence has its own cells
for the whole context, so K sequences need K times one context's cache. On the CPU that
is checked before anything is allocated (an auto value is lowered, with a note; a value the
user set is refused); on a GPU, whose free memory llama.cpp does not report, a context that
cannot be made is retried with half the sequences (auto) or refused (set by the user).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

from mathsolve.errors import EngineError, UsageError

CPU_DEFAULT = 8
GPU_DEFAULT = 32
SERVER_DEFAULT = 8
# The LlamaEngine a BatchedEngine is built on keeps a context of its own, unused on the
# batched path: the smallest that loads, so its cache costs next to nothing.
BASE_CONTEXT = 256


def wanted(settings, sessions: int, *, default: int) -> tuple[int, bool]:
    """(sessions at once, whether the user set it): `parallel`, else `default` but at least
    `concurrency`; never more than the `sessions` the run opens."""
    if settings.parallel is not None:
        return max(1, min(settings.parallel, sessions)), True
    return max(1, min(max(default, settings.concurrency), sessions)), False


def local_sequences(settings, *, sessions: int, model_path: str, n_ctx: int,
                    notify: Callable[[str], None] | None) -> tuple[int, bool]:
    """(sequences the local engine decodes together, set by the user) for a run opening
    `sessions` at once: 1 means the plain LlamaEngine. On the CPU, capped by the KV memory."""
    from mathsolve.engines.llama import check_kv_memory, gpu_offload_supported
    from mathsolve.ggufinfo import read_gguf

    gpu = gpu_offload_supported() and settings.n_gpu_layers != 0
    slots, explicit = wanted(settings, sessions, default=GPU_DEFAULT if gpu else CPU_DEFAULT)
    if gpu or slots == 1:
        return slots, explicit
    info = read_gguf(model_path)
    fit = slots
    while fit > 1:
        try:
            check_kv_memory(info, n_ctx * fit, settings.kv_cache)
            break
        except UsageError:
            fit -= 1
    if fit < slots:
        what = f"{slots} sequences of {n_ctx:,} tokens do not fit in the memory available for the KV cache"
        if explicit:
            raise UsageError(f"--parallel {slots}: {what}; at most {fit} fit: lower --parallel or --n-ctx "
                             "(or use --kv-cache q8_0)")
        _say(notify, f"parallel {slots} -> {fit}: {what} (set --parallel, --n-ctx or --kv-cache q8_0 to choose)")
    return fit, explicit


def open_batched(base, *, slots: int, n_ctx: int, explicit: bool, notify: Callable[[str], None] | None):
    """A BatchedEngine of `slots` sequences of `n_ctx` tokens on the loaded `base` (which it
    then owns). A context llama.cpp cannot make (GPU memory) is retried with half the
    sequences unless the user set them."""
    from mathsolve.engines.llama.batched import BatchedEngine

    while True:
        try:
            return BatchedEngine(base, slots=slots, n_ctx=n_ctx, own_engine=True)
        except EngineError as exc:
            if explicit or slots == 1:
                base.close()
                if explicit:
                    raise UsageError(f"--parallel {slots}: {exc}; lower --parallel or --n-ctx") from None
                raise
            _say(notify, f"parallel {slots} -> {slots // 2}: {exc}")
            slots //= 2
        except BaseException:
            base.close()
            raise


def tool_slots(sessions: int) -> int:
    """Code blocks running at once when sessions run in parallel: min(sessions, usable CPUs)."""
    from mathsolve.settings import available_cores

    return max(1, min(sessions, available_cores()))


@contextlib.contextmanager
def held(gate: threading.Semaphore | None, cancel: threading.Event | None) -> Iterator[bool]:
    """Hold one of `gate`'s slots while the block runs; yields False (and holds nothing) when
    `cancel` is set before a slot is free."""
    if gate is None:
        yield True
        return
    while not gate.acquire(timeout=0.1):
        if cancel is not None and cancel.is_set():
            yield False
            return
    try:
        yield True
    finally:
        gate.release()


def _say(notify: Callable[[str], None] | None, message: str) -> None:
    if notify is not None:
        notify(message)
