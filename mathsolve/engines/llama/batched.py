"""Several sequences decoded together in one llama.cpp context (many samples at once).

    engine = LlamaEngine(path, n_ctx=4096)          # loads the model (mathsolve's rules)
    batched = BatchedEngine(engine, slots=8)         # its own context: 8 x 4096 cells
    session = batched.session(prompt)                # one per sample or problem, each
    session.generate(...); session.push(...)         #   used from its own worker thread

One decode thread owns the context. A session's `generate` hands a request to it and
blocks until its round ends; meanwhile every sequence with a request gets one token per
`llama_decode` (a sequence whose text was just pushed gets its new tokens evaluated in
chunks in the same calls), so a sequence whose thread is running a tool does not hold the
others up, and rejoins when it asks to generate again.

Decisions (llama.cpp 0.3.36's llama.h and sources were the guide; the rest is ours):
- KV layout: by default a stream per sequence (`kv_unified` off), each of `n_ctx` cells:
  a sequence's attention reads its own cells only, as llama.h advises for sequences that
  do not share a large prefix (samples share the prompt, then write thousands of tokens
  each). `unified=True` gives one cache of `slots x n_ctx` cells that every sequence may
  use: a shared prefix is held once and copying it only tags its cells, but every
  sequence's attention then reads every sequence's cells. Either way each sequence is
  held to `n_ctx` tokens, as a LlamaSession is (its round ends with "length" there), so
  the cells never run out. The other context settings are the LlamaEngine's own (threads,
  n_batch, flash attention, KV type, and `swa_full` on, llama.cpp's default: a sliding-
  window model keeps every cell, so the prefix reuse and copies below stay valid).
- Calls by depth: with a stream per sequence, llama.cpp computes every stream of a call
  over as many cells as the deepest one holds, so a long solution beside short ones makes
  all of them pay for its depth. Each step's batch is split into calls by depth when the
  costs fitted from this engine's own calls say that is cheaper (grouping.py; measured on
  2 CPU cores: 7 sequences at ~100 tokens beside one at 3,000 went from 48-57 to 71-76
  tokens/s in all). A GPU, where a call's cost is mostly reading the weights, rarely splits.
- Prefix sharing: a sequence about to evaluate tokens first copies the longest prefix that
  any live sequence already holds (`llama_memory_seq_cp`; between streams llama.cpp copies
  a whole stream, then the copy's tail is dropped: a partial copy between streams would
  abort the process), and waits a step while an earlier sequence is still evaluating a
  prefix it could copy. So sessions opened with the same prompt evaluate it once. The
  last token of a round's context is always evaluated by the sequence itself: its logits
  are what it samples from.
- Numerics: on the tests' tiny F32 models every sequence writes exactly LlamaSession's
  greedy text, alone or together. On a quantized model, a batch of several sequences goes
  through other matrix kernels and sums in another order, so logits differ in their last
  bits and greedy text can part at a near tie (Qwen2.5-Coder-0.5B Q4_K_M on a CPU: some
  of K = 2, 4, 8 sequences parted from LlamaSession's text after 31 to 63 tokens, with
  either KV layout, with weight repacking on or off; llama.cpp's own server does the same).
- More sessions than slots: `session()` waits for a free slot, first come first served
  (`timeout` bounds the wait: EngineError; a `cancel` event set while waiting gives a
  session that is cancelled already). A slot is held from `session()` to `close()`,
  across tool calls, since its cells are its context: close sessions when done.
- A failed `llama_decode` fails the rounds of the sequences in that call (their cells are
  put back as before the call; the sessions stay usable); anything else going wrong in
  the decode thread fails the engine: every waiting and later call raises EngineError.
- The LlamaEngine keeps its own context (used by its own sessions); to spend little memory
  on it, load it with a small n_ctx and give this engine `n_ctx` per sequence. Close the
  BatchedEngine first (`own_engine=True` closes both, in that order).
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import Callable

from mathsolve.engines.base import EngineInfo, Generation
from mathsolve.engines.llama.engine import LlamaEngine
from mathsolve.engines.llama.grouping import DecodeCost
from mathsolve.engines.llama.params import check_kv_memory
from mathsolve.engines.llama.scheduler import Scheduler, _Sequence
from mathsolve.engines.llama.sequence import BatchedSession, Request
from mathsolve.errors import EngineError, UsageError
from mathsolve.ggufinfo import read_gguf

_IDLE_POLL_S = 0.1  # how often an idle decode thread looks at the sessions' cancel events


class BatchedEngine(Scheduler):
    """Sequences of one loaded model decoded together. It is an Engine (info, session,
    close, marker_problems), so the tool loop can run on its sessions unchanged."""

    def __init__(self, engine: LlamaEngine, *, slots: int, n_ctx: int | None = None,
                 unified: bool = False, own_engine: bool = False) -> None:
        import llama_cpp
        from llama_cpp import _internals
        from llama_cpp._utils import suppress_stdout_stderr

        limit = int(llama_cpp.llama_max_parallel_sequences())
        if not 1 <= slots <= limit:
            raise UsageError(f"the batched engine needs 1 to {limit} sequences (llama.cpp's limit), not {slots}")
        self.base, self.slots, self.unified, self.own_engine = engine, slots, unified, own_engine
        self.n_ctx = n_ctx or engine.n_ctx  # per sequence
        if self.n_ctx < 8:
            raise UsageError(f"a context of {self.n_ctx} tokens per sequence is too small")
        details = engine.info.details
        if not (details.get("gpu_offload_supported") and details.get("n_gpu_layers")):
            check_kv_memory(read_gguf(engine.info.model_path), self.n_ctx * slots, str(details.get("kv_cache", "f16")))
        llm = engine.llm
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_seq_max, params.n_ctx, params.kv_unified = slots, self.n_ctx * slots, unified
        try:
            # Quiet as the Llama that loaded the model: with a unified cache llama.cpp warns
            # that n_ctx_seq (all the cells) exceeds the training context, which no sequence does.
            with suppress_stdout_stderr(disable=llm.verbose):
                self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        except ValueError as exc:
            raise EngineError(f"llama.cpp could not make a context for {slots} sequences of "
                              f"{self.n_ctx} tokens: {exc}") from None
        self.n_batch = int(llama_cpp.llama_n_batch(self._ctx.ctx))
        self._batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=False)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(engine._vocab))
        self._penalty_last_n = llm.last_n_tokens_size
        self.info = EngineInfo(
            name="llama.cpp (batched)", model_path=engine.info.model_path, model=engine.info.model,
            # n_ctx: what each sequence may hold (records read it to explain a "length" stop);
            # the LlamaEngine's own context, often a small one, is not what the sessions get.
            details={**details, "n_ctx": self.n_ctx, "slots": slots, "n_ctx_per_sequence": self.n_ctx,
                     "n_ctx_total": int(llama_cpp.llama_n_ctx(self._ctx.ctx)), "kv_unified": unified},
        )
        # What the decode thread did, for benchmarks and reports.
        self.counters = {"decode_calls": 0, "tokens_decoded": 0, "tokens_shared": 0,
                         "sequences_per_call_max": 0, "decode_s": 0.0, "split_steps": 0}
        self.cost = DecodeCost()  # what a call costs, fitted as it runs: how to group by depth
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._free = list(range(slots))
        self._live: list[_Sequence] = []  # slots taken, by order
        self._waiters: list[object] = []  # session() calls waiting for a slot, first come first
        self._calls: list[tuple[Callable[[], object], list]] = []
        self._taken = 0
        self._closing = False
        self._failure: EngineError | None = None
        self._thread = threading.Thread(target=self._run, name="mathsolve-batched-decode", daemon=True)
        self._thread.start()
        # A program that exits without closing must not free the model (and with it this
        # context) under a decode in progress: stop the thread first.
        atexit.register(self.close)

    # -- the Engine contract ----------------------------------------------------------
    def session(self, prompt: str, *, special: bool = False, render_special: bool = False,
                literal: str | None = None, markers: tuple[str, ...] = (),
                cancel: threading.Event | None = None, timeout: float | None = None) -> BatchedSession:
        """A session holding a slot; waits while all slots are held (see the module doc)."""
        self._check_alive()
        session = BatchedSession(self, prompt, special=special, render_special=render_special,
                                 literal=literal, markers=markers, cancel=cancel)
        deadline = None if timeout is None else time.monotonic() + timeout
        ticket = object()
        with self._cond:
            self._waiters.append(ticket)
            try:
                while True:
                    self._check_alive()
                    if self._waiters[0] is ticket and self._free:
                        seq_id = min(self._free)
                        self._free.remove(seq_id)
                        self._taken += 1
                        session.slot = _Sequence(seq_id, self._taken, session)
                        self._live.append(session.slot)
                        return session
                    if cancel is not None and cancel.is_set():
                        session.cancelled = True
                        return session
                    wait = _IDLE_POLL_S
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            raise EngineError(f"no free sequence slot within {timeout:g} s: all {self.slots} "
                                              "are held by open sessions (close one, or use more slots)")
                    self._cond.wait(wait)
            finally:
                self._waiters.remove(ticket)
                self._cond.notify_all()

    def marker_problems(self, markers: tuple[str, ...]) -> list[str]:
        return self.base.marker_problems(markers)

    def cells(self) -> dict[int, tuple[int, int]]:
        """Each sequence id holding KV cells: (first, last) position, as llama.cpp reports it
        (asked on the decode thread, after the closes and cancels already requested)."""
        import llama_cpp

        def ask():
            memory = self._ctx.memory
            found = {}
            for seq_id in range(self.slots):
                last = int(llama_cpp.llama_memory_seq_pos_max(memory, seq_id))
                if last >= 0:
                    found[seq_id] = (int(llama_cpp.llama_memory_seq_pos_min(memory, seq_id)), last)
            return found

        return self._call(ask)

    def close(self) -> None:
        """Stop the decode thread (rounds in progress fail with EngineError) and free the
        context; the LlamaEngine too when this engine owns it."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        atexit.unregister(self.close)
        self._thread.join()
        self._batch.close()
        self._ctx.close()
        if self.own_engine:
            self.base.close()

    # -- called from worker threads -----------------------------------------------------
    def _check_alive(self) -> None:
        if self._failure is not None:
            raise EngineError(str(self._failure))  # a new one per thread that raises it
        if self._closing or not self._thread.is_alive():
            raise EngineError("the batched llama.cpp engine is closed")

    def _submit(self, seq: _Sequence, request: Request) -> None:
        with self._cond:
            self._check_alive()
            if seq.release:  # closed or cancelled from another thread meanwhile
                request.events.put(("done", (Generation(text="", finish_reason="cancelled"), [], 0)))
                return
            seq.inbox = request
            self._cond.notify_all()

    def _release(self, session: BatchedSession) -> None:
        with self._cond:
            seq, session.slot = session.slot, None
            if seq is not None:
                seq.release = True
                self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _call(self, fn: Callable[[], object]) -> object:
        box: list = []
        with self._cond:
            self._check_alive()
            self._calls.append((fn, box))
            self._cond.notify_all()
            while not box:
                self._cond.wait(_IDLE_POLL_S)
                if not box:
                    self._check_alive()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    # -- the decode thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._next_step():
                self._step()
        except BaseException as exc:  # noqa: BLE001 - reported to every waiting thread
            self._failure = EngineError(f"the batched llama.cpp engine failed: {type(exc).__name__}: {exc}")
        finally:
            message = str(self._failure or "the batched llama.cpp engine was closed during this round")
            with self._cond:
                for seq in self._live:
                    for request in (seq.request, seq.inbox):
                        if request is not None:
                            request.events.put(("error", EngineError(message)))
                    seq.request = seq.inbox = None
                for _, box in self._calls:
                    box.append((False, EngineError(message)))
                self._calls.clear()
                self._cond.notify_all()

    def _next_step(self) -> bool:
        """Wait until there is something to do; False when the engine closes."""
        with self._cond:
            while True:
                if self._closing:
                    return False
                for seq in self._live:
                    event = seq.session.cancel_event
                    if event is not None and event.is_set() and not seq.release:
                        seq.session.cancelled, seq.release = True, True
                        seq.session.slot = None
                if self._calls or any(s.release or s.inbox or s.request for s in self._live):
                    return True
                self._cond.wait(_IDLE_POLL_S)
