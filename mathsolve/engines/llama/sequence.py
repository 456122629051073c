"""One sequence of the batched llama.cpp engine (mathsolve.engines.llama.batched), as its
worker thread sees it: a Session like LlamaSession whose rounds the engine's decode thread
decodes together with the other sequences'.

    RoundText        one round's text, token by token: stops, end-of-generation, streaming
    sampler_chain    the llama_sampler chain a round samples with
    Request          one generate call handed to the decode thread
    BatchedSession   the Session: generate, push, cancel, close

The prompt's tokenization and the token reuse of `push` are LlamaSession's own (inherited,
not copied), so a sequence holds exactly the tokens a LlamaSession would; RoundText and
sampler_chain follow LlamaSession.generate and llama-cpp-python's `Llama._init_sampler`
step for step, so a sequence's greedy text is the same as LlamaSession's on the same model.
"""

from __future__ import annotations

import codecs
import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from mathsolve.engines.base import Generation, Sampling, find_stop, held_back
from mathsolve.engines.llama.session import LlamaSession
from mathsolve.errors import EngineError

if TYPE_CHECKING:
    from mathsolve.engines.llama.batched import BatchedEngine, _Sequence
    from mathsolve.engines.llama.engine import LlamaEngine

# How often a waiting worker thread checks that the decode thread is still alive.
_ALIVE_CHECK_S = 0.25


class RoundText:
    """The text of one round as tokens arrive, with LlamaSession.generate's rules: an
    end-of-generation token ends the round ("eos"), or as that stop when its text is one
    of the stops (harmony's <|call|>); a stop string cuts the text before it; text that
    could still grow into a stop is held back from `emit`; the token limit ends it as
    "length"."""

    def __init__(self, engine: LlamaEngine, *, stops: tuple[str, ...], render_special: bool,
                 max_tokens: int, emit: Callable[[str], None] | None) -> None:
        self.engine, self.stops, self.render_special = engine, stops, render_special
        self.max_tokens, self.emit = max_tokens, emit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text, self.emitted, self.reason, self.stop = "", 0, "length", None
        self.tokens: list[int] = []  # the round's tokens as the session keeps them (see push)
        self.longest_stop = max((len(s) for s in stops), default=0)
        # Text can only be held back when its tail holds the first character of a stop.
        self.stop_starts = "".join({s[0] for s in stops if s})

    def add(self, token: int) -> bool:
        """Take one sampled token; True when the round has ended."""
        engine = self.engine
        if engine.is_eog(token):
            piece = engine.piece(token, True).decode("utf-8", "replace")
            if piece in self.stops:
                self.reason, self.stop = "stop", piece
                self.tokens.append(token)
            else:
                self.reason = "eos"
            return True
        self.tokens.append(token)
        # A stop string can only end in the new piece: search from just before it.
        search_from = max(0, len(self.text) - self.longest_stop + 1)
        self.text += self.decoder.decode(engine.piece(token, self.render_special))
        hit = find_stop(self.text, self.stops, search_from)
        if hit is not None:
            self.text, self.reason, self.stop = self.text[: hit[0]], "stop", hit[1]
            return True
        if self.emit is not None:
            text, longest = self.text, self.longest_stop
            tail = text[len(text) - longest + 1 :] if longest > 1 else ""
            hold = held_back(text, self.stops) if any(c in tail for c in self.stop_starts) else 0
            safe_end = len(text) - hold
            if safe_end > self.emitted:
                self.emit(text[self.emitted : safe_end])
                self.emitted = safe_end
        return len(self.tokens) >= self.max_tokens

    def finish(self, reason: str | None = None) -> Generation:
        """The round's Generation; `reason` overrides why it ended ("cancelled")."""
        if reason is not None:
            self.reason, self.stop = reason, None
        text = self.text + (self.decoder.decode(b"", final=True) if self.reason != "stop" else "")
        if self.emit is not None and len(text) > self.emitted:
            self.emit(text[self.emitted :])
            self.emitted = len(text)
        return Generation(text=text, finish_reason=self.reason, stop=self.stop, n_tokens=len(self.tokens))


def sampler_chain(sampling: Sampling, *, n_vocab: int, penalty_last_n: int):
    """A llama_sampler chain as llama-cpp-python 0.3.36's `Llama._init_sampler` builds it
    for LlamaSession (llama_cpp/llama.py): repeat penalty over the last `penalty_last_n`
    tokens sampled in this chain (none of the prompt), then greedy at temperature 0, else
    top-k, typical (1.0: off), top-p, min-p (min_keep 1 each), temperature and a draw
    seeded with the Sampling's seed. A fresh chain per round, as LlamaSession has."""
    from llama_cpp import _internals

    chain = _internals.LlamaSampler()
    chain.add_penalties(n_vocab=n_vocab, penalty_last_n=penalty_last_n,
                        penalty_repeat=sampling.repeat_penalty, penalty_freq=0.0, penalty_present=0.0)
    if sampling.temperature < 0:
        chain.add_dist(sampling.seed)
    elif sampling.temperature == 0:
        chain.add_greedy()
    else:
        chain.add_top_k(sampling.top_k)
        chain.add_typical(1.0, 1)
        chain.add_top_p(sampling.top_p, 1)
        chain.add_min_p(sampling.min_p, 1)
        chain.add_temp(sampling.temperature)
        chain.add_dist(sampling.seed)
    return chain


@dataclass
class Request:
    """One generate call, from the worker thread to the decode thread. Events come back on
    `events`: ("text", chunk) while streaming, then ("done", (Generation, tokens,
    evaluated)) or ("error", exception)."""

    stops: tuple[str, ...]
    max_tokens: int
    sampling: Sampling
    stream: bool
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    abort: bool = False  # the worker gave up on this round (its on_text raised)


class BatchedSession(LlamaSession):
    """One problem (or one sample) on a BatchedEngine, used from one worker thread.

    `generate` blocks until the decode thread ends the round; `on_text` is called from
    this session's own thread. `cancel()` (from any thread) or the `cancel` event given
    to `BatchedEngine.session` ends it for good: a round in progress and every later one
    return finish_reason "cancelled", and the sequence's KV cells and slot are freed.
    """

    def __init__(self, batched: BatchedEngine, prompt: str, *, special: bool, render_special: bool,
                 literal: str | None, markers: tuple[str, ...], cancel: threading.Event | None) -> None:
        super().__init__(batched.base, prompt, special=special, render_special=render_special,
                         literal=literal, markers=markers)
        self.batched = batched
        self.cancel_event = cancel
        self.slot: _Sequence | None = None  # set by the engine once a slot is free
        self.cancelled = False

    @property
    def seq_id(self) -> int | None:
        """The llama.cpp sequence id this session decodes as (None: no slot held)."""
        return self.slot.seq_id if self.slot is not None else None

    def generate(self, *, stops: tuple[str, ...], max_tokens: int, sampling: Sampling,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        if self.cancel_event is not None and self.cancel_event.is_set():
            self.cancel()
        if self.cancelled:
            return Generation(text="", finish_reason="cancelled")
        slot = self.slot  # read once: close() from another thread clears it
        if slot is None:
            raise EngineError("this session is closed")
        request = Request(tuple(stops), max_tokens, sampling, stream=on_text is not None)
        self.batched._submit(slot, request)
        failure: BaseException | None = None
        while True:
            try:
                kind, value = request.events.get(timeout=_ALIVE_CHECK_S)
            except queue.Empty:
                self.batched._check_alive()
                continue
            except BaseException:  # interrupted (Ctrl-C in this thread): end the round, go
                request.abort = True
                self.batched._wake()
                raise
            if kind == "text":
                if on_text is not None and failure is None:
                    try:
                        on_text(value)
                    except BaseException as exc:  # end the round, then re-raise it here
                        failure, request.abort = exc, True
                        self.batched._wake()
                continue
            if kind == "error":
                raise value
            generation, tokens, evaluated = value
            self._pending = tokens
            self.stats.generated += len(tokens)
            self.stats.evaluated += evaluated
            if failure is not None:
                raise failure
            if generation.finish_reason == "cancelled" and not request.abort:
                self.cancelled = True
            return generation

    def cancel(self) -> None:
        """End this session's work now: its round returns "cancelled", its cells are freed."""
        self.cancelled = True
        self.batched._release(self)

    def close(self) -> None:
        self._pending = []
        self.batched._release(self)
