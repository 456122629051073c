"""What the batched engine's decode thread does (mathsolve.engines.llama.batched): one
step starts the rounds just asked for, frees closed and cancelled sequences, plans one
batch (a token for each sequence that is sampling, then context suffixes in chunks),
decodes it in one `llama_decode` (or a few, by depth: grouping.py says why) and samples
each finished sequence's next token.

`Scheduler` is the decode-thread half of BatchedEngine (its base class); it uses the
engine's context, batch, lock and slot lists, and nothing here runs on another thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mathsolve.engines.base import Generation
from mathsolve.engines.llama.sequence import BatchedSession, Request, RoundText, sampler_chain
from mathsolve.errors import EngineError

_DECODE_ERRORS = {1: "no free KV cells for the batch", 2: "aborted", -1: "invalid batch"}


def _decode(ctx, batch) -> int:
    """One llama_decode call (a seam the tests use to make a call fail)."""
    import llama_cpp

    return int(llama_cpp.llama_decode(ctx, batch))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass(eq=False)
class _Sequence:
    """A slot's state. `kv` is owned by the decode thread: the token ids in the sequence's
    KV cells, by position. The flags are set under the engine's lock by other threads."""

    seq_id: int
    order: int  # when the slot was taken: earlier sequences evaluate shared prefixes first
    session: BatchedSession
    kv: list[int] = field(default_factory=list)
    inbox: Request | None = None  # submitted, not yet started by the decode thread
    request: Request | None = None  # the round being decoded
    feed: list[int] = field(default_factory=list)  # tokens to evaluate before sampling
    prefilling: bool = False  # feed is the round's context suffix, not a sampled token
    fresh: bool = False  # may still copy a prefix from another sequence
    evaluated: int = 0  # tokens of this round run through the model
    text: RoundText | None = None
    sampler: object = None
    release: bool = False  # closed or cancelled: free the cells and the slot
    freed: bool = False


class Scheduler:
    """The decode thread's step. Set by BatchedEngine: base (the LlamaEngine), unified,
    n_ctx (per sequence), n_batch, counters, cost (a grouping.DecodeCost), _ctx, _batch,
    _n_vocab, _penalty_last_n, _cond, _live, _free, _calls."""

    def _step(self) -> None:
        with self._cond:
            releases = [s for s in self._live if s.release]
            arrivals = [s for s in self._live if s.inbox is not None and not s.release]
            calls, self._calls = self._calls, []
        for seq in releases:
            self._free_sequence(seq)
        for seq in arrivals:
            self._start(seq)
        for seq in self._live:
            if seq.request is not None and seq.request.abort:
                self._finish(seq, "cancelled")
        for fn, box in calls:
            try:
                box.append((True, fn()))
            except Exception as exc:  # noqa: BLE001 - handed back to the caller
                box.append((False, exc))
        if calls:
            with self._cond:
                self._cond.notify_all()
        for group in self._groups(self._plan()):
            self._decode_plan(group)

    def _free_sequence(self, seq: _Sequence) -> None:
        import llama_cpp

        if seq.request is not None:
            self._finish(seq, "cancelled")
        if seq.inbox is not None:
            seq.inbox.events.put(("done", (Generation(text="", finish_reason="cancelled"), [], 0)))
            seq.inbox = None
        llama_cpp.llama_memory_seq_rm(self._ctx.memory, seq.seq_id, -1, -1)  # a whole sequence: never fails
        seq.kv, seq.freed = [], True
        with self._cond:
            self._live.remove(seq)
            self._free.append(seq.seq_id)
            self._cond.notify_all()

    def _start(self, seq: _Sequence) -> None:
        """Begin a round: keep the cells of the context's unchanged prefix, evaluate the rest."""
        import llama_cpp

        with self._cond:
            request, seq.inbox = seq.inbox, None
        if seq.request is not None:  # a round its worker gave up waiting for (interrupted)
            self._finish(seq, "cancelled")
        session = seq.session
        target = list(session.tokens)
        bad = [t for t in target if not 0 <= t < self._n_vocab]
        if not target or bad:
            why = f"token id {bad[0]} is not in the model's vocabulary" if bad else "the context is empty"
            request.events.put(("error", EngineError(f"cannot generate: {why}")))
            return
        budget = self.n_ctx - len(target)
        if budget <= 0:  # the context is full, as LlamaSession reports it
            request.events.put(("done", (Generation(text="", finish_reason="length"), [], 0)))
            return
        keep = min(common_prefix(seq.kv, target), len(target) - 1)
        if keep < len(seq.kv):
            if not llama_cpp.llama_memory_seq_rm(self._ctx.memory, seq.seq_id, keep, -1):
                raise EngineError(f"llama.cpp could not drop the end of sequence {seq.seq_id}")
            seq.kv = seq.kv[:keep]
        seq.request, seq.feed, seq.prefilling, seq.fresh, seq.evaluated = request, target[keep:], True, True, 0
        emit = (lambda chunk: request.events.put(("text", chunk))) if request.stream else None
        seq.text = RoundText(self.base, stops=request.stops, render_special=session.render_special,
                             max_tokens=min(request.max_tokens, budget), emit=emit)
        seq.sampler = sampler_chain(request.sampling, n_vocab=self._n_vocab, penalty_last_n=self._penalty_last_n)

    def _finish(self, seq: _Sequence, reason: str | None = None) -> None:
        request, text = seq.request, seq.text
        generation = text.finish(reason)
        seq.request, seq.text, seq.feed, seq.prefilling = None, None, [], False
        seq.sampler.close()
        seq.sampler = None
        request.events.put(("done", (generation, text.tokens, seq.evaluated)))

    def _fail_round(self, seq: _Sequence, error: EngineError) -> None:
        request = seq.request
        seq.request, seq.text, seq.feed, seq.prefilling = None, None, [], False
        seq.sampler.close()
        seq.sampler = None
        request.events.put(("error", error))

    def _plan(self) -> list[tuple[_Sequence, list[int], bool]]:
        """This call's batch: (sequence, tokens, wants logits). One token for each sequence
        that is sampling, then context suffixes in slot order, in chunks up to n_batch."""
        active = [s for s in self._live if s.request is not None]
        plan = [(s, s.feed, True) for s in active if not s.prefilling]
        room = self.n_batch - len(plan)
        for seq in active:
            if not seq.prefilling or room <= 0:
                continue
            if seq.fresh and self._share_or_wait(seq, active):
                continue
            n = min(len(seq.feed), room)
            plan.append((seq, seq.feed[:n], n == len(seq.feed)))
            room -= n
            seq.fresh = False
        return plan

    def _groups(self, plan: list[tuple[_Sequence, list[int], bool]]) -> list[list[tuple[_Sequence, list[int], bool]]]:
        """The plan in one call, or in calls by depth when the fitted costs say that is
        cheaper (a stream per sequence only: a unified cache's calls all read every cell)."""
        if self.unified or len(plan) < 2:
            return [plan] if plan else []
        depths = [len(seq.kv) + len(tokens) for seq, tokens, _ in plan]
        groups = self.cost.groups(depths)
        if len(groups) > 1:
            self.counters["split_steps"] += 1
        return [[plan[i] for i in group] for group in groups]

    def _share_or_wait(self, seq: _Sequence, active: list[_Sequence]) -> bool:
        """Copy the longest prefix another sequence holds; True: wait, an earlier sequence
        is still evaluating more of this context."""
        import llama_cpp

        target = seq.kv + seq.feed
        limit = len(target) - 1  # the last token is evaluated here, for its logits
        donor, best = None, len(seq.kv)
        for other in self._live:
            if other is not seq and not other.freed:
                n = min(common_prefix(other.kv, target), limit)
                if n > best:
                    donor, best = other, n
        if donor is not None:
            memory = self._ctx.memory
            if self.unified:  # the cells are tagged with this sequence too: nothing is copied
                llama_cpp.llama_memory_seq_cp(memory, donor.seq_id, seq.seq_id, len(seq.kv), best)
            else:  # llama.cpp copies whole streams only (a partial copy aborts the process)
                llama_cpp.llama_memory_seq_cp(memory, donor.seq_id, seq.seq_id, -1, -1)
                llama_cpp.llama_memory_seq_rm(memory, seq.seq_id, best, -1)
            self.counters["tokens_shared"] += best - len(seq.kv)
            seq.kv, seq.feed = target[:best], target[best:]
        for other in active:
            if other.order < seq.order and other.prefilling:
                shared = min(common_prefix(other.kv + other.feed, target), limit)
                if shared > len(seq.kv) and len(other.kv) < shared:
                    return True
        return False

    def _decode_plan(self, plan: list[tuple[_Sequence, list[int], bool]]) -> None:
        import llama_cpp

        batch = self._batch.batch
        n, rows = 0, []
        for seq, tokens, logits in plan:
            start = len(seq.kv)
            for i, token in enumerate(tokens):
                batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, start + i, 1
                batch.seq_id[n][0], batch.logits[n] = seq.seq_id, False
                n += 1
            if logits:
                batch.logits[n - 1] = True
            rows.append(n - 1)
        batch.n_tokens = n
        started = time.perf_counter()
        code = _decode(self._ctx.ctx, batch)
        seconds = time.perf_counter() - started
        self.counters["decode_s"] += seconds
        if code == 0 and n == len(plan):  # one token a sequence: what the cost model fits
            self.cost.observe(n, max(len(seq.kv) + 1 for seq, _, _ in plan), seconds)
        if code != 0:
            error = EngineError(f"llama_decode failed ({code}: {_DECODE_ERRORS.get(code, 'error')}) "
                                f"for a batch of {n} tokens from {len(plan)} sequence(s)")
            for seq, _, _ in plan:  # put every sequence's cells back as they were
                llama_cpp.llama_memory_seq_rm(self._ctx.memory, seq.seq_id, len(seq.kv), -1)
                if seq.request is not None:
                    self._fail_round(seq, error)
            return
        self.counters["decode_calls"] += 1
        self.counters["tokens_decoded"] += n
        self.counters["sequences_per_call_max"] = max(self.counters["sequences_per_call_max"], len(plan))
        for (seq, tokens, logits), row in zip(plan, rows):
            seq.kv.extend(tokens)
            seq.evaluated += len(tokens)
            seq.feed = seq.feed[len(tokens):]
            if not logits:
                continue
            token = int(llama_cpp.llama_sampler_sample(seq.sampler.sampler, self._ctx.ctx, row))
            seq.prefilling = False
            if seq.text.add(token) or seq.request.abort or seq.release:
                self._finish(seq, "cancelled" if seq.request.abort or seq.release else None)
            else:
                seq.feed = [token]
