"""The batched llama.cpp engine on the real llama.cpp with tiny generated GGUFs: the same text
as LlamaSession alone and together, the tool loop, prefix sharing, sequences waiting on a
tool, cancellation, slots, closing, and failures that reach the waiting thread.

Waits on other threads have timeouts: a hang there fails the test instead of stalling the suite."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mathsolve.core.loop import run_loop
from mathsolve.engines.base import Generation, Sampling
from mathsolve.engines.llama import LlamaEngine, scheduler
from mathsolve.engines.llama.batched import BatchedEngine
from mathsolve.errors import EngineError, UsageError
from mathsolve.formats.base import Execute, Step
from mathsolve.formats.tora import QwenTirProtocol
from mathsolve.tools import ToolResult, ToolRouter
from mathsolve.tools.base import Limits

PROMPTS = (
    "<|user|>\nWhat is 2 + 3?\n<|assistant|>\n",
    "<|user|>\nA train leaves at 3 pm. When does it arrive?\n<|assistant|>\n",
    "def area(r):\n    return",
    "<|user|>\nWhat is 2 + 3?\n<|assistant|>\n",  # the first again: its evaluation is shared
)
WAIT_S = 60  # the longest any test waits for a thread (a hang fails, it does not stall)


@pytest.fixture(scope="module")
def bpe_engine(tiny_bpe: Path):
    engine = LlamaEngine(str(tiny_bpe), n_ctx=2048, extra_buffers="off")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def spm_engine(tiny_spm: Path):
    engine = LlamaEngine(str(tiny_spm), n_ctx=2048, extra_buffers="off")
    yield engine
    engine.close()


@pytest.fixture(params=["bpe_engine", "spm_engine"])
def engine(request) -> LlamaEngine:
    return request.getfixturevalue(request.param)


@pytest.fixture(params=[False, True], ids=["streams", "unified"])
def unified(request) -> bool:
    """Both KV cache layouts: a stream per sequence (the default) or one unified cache."""
    return request.param


def alone(engine: LlamaEngine, prompt: str, n: int = 40, stops: tuple[str, ...] = (),
          sampling: Sampling | None = None) -> Generation:
    """What today's LlamaSession generates for this prompt."""
    return engine.session(prompt).generate(stops=stops, max_tokens=n, sampling=sampling or Sampling())


def once(batched: BatchedEngine, prompt: str, n: int = 40, stops: tuple[str, ...] = (),
         sampling: Sampling | None = None) -> Generation:
    """One round on a session of its own, closed after it (a session holds its slot until then)."""
    session = batched.session(prompt, timeout=WAIT_S)
    try:
        return session.generate(stops=stops, max_tokens=n, sampling=sampling or Sampling())
    finally:
        session.close()


def in_threads(*fns: Callable[[], object]) -> list[object]:
    """Run each function in its own thread; their results (an exception is returned, not
    raised); a thread still running after WAIT_S fails the test."""
    results: list[object] = [None] * len(fns)

    def call(i: int) -> None:
        try:
            results[i] = fns[i]()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
        assert not t.is_alive(), "a thread hung"
    return results


class paused:
    """Hold the decode thread between two steps, so that requests submitted meanwhile all
    start in the same step (decoded together, deterministically)."""

    def __init__(self, batched: BatchedEngine) -> None:
        self.batched, self.gate = batched, threading.Event()

    def __enter__(self) -> paused:
        holding = threading.Event()

        def hold():
            holding.set()
            self.gate.wait(WAIT_S)

        threading.Thread(target=self.batched._call, args=(hold,), daemon=True).start()
        assert holding.wait(WAIT_S)
        return self

    def until_submitted(self, n: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while sum(s.inbox is not None for s in self.batched._live) < n:
            assert time.monotonic() < deadline, "requests never arrived"
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self.gate.set()


# -- the same text as LlamaSession ---------------------------------------------------------


def test_one_sequence_alone_is_llama_session(engine, unified) -> None:
    full = alone(engine, PROMPTS[0], n=60).text
    stop = full[25:28]
    batched = BatchedEngine(engine, slots=2, unified=unified)
    try:
        for prompt in PROMPTS[:3]:
            chunks: list[str] = []
            session = batched.session(prompt)
            got = session.generate(stops=(), max_tokens=40, sampling=Sampling(), on_text=chunks.append)
            assert got == alone(engine, prompt)
            assert "".join(chunks) == got.text and len(chunks) > 1
            # The whole prompt, then every sampled token but the last, went through the model.
            assert session.stats.prompt == len(session.tokens)
            assert session.stats.evaluated == len(session.tokens) + got.n_tokens - 1
            session.close()
        # A stop string cuts the text as LlamaSession cuts it, and is never half-streamed.
        chunks = []
        got = batched.session(PROMPTS[0], timeout=WAIT_S).generate(stops=(stop,), max_tokens=60, sampling=Sampling(),
                                                                   on_text=chunks.append)
        assert got == alone(engine, PROMPTS[0], n=60, stops=(stop,))
        assert got.finish_reason == "stop" and got.stop == stop and "".join(chunks) == got.text
    finally:
        batched.close()


def test_sampling_matches_llama_session_seed_for_seed(bpe_engine) -> None:
    batched = BatchedEngine(bpe_engine, slots=2)
    try:
        for seed in (1, 2):
            sampling = Sampling(temperature=1.5, top_k=40, top_p=0.9, min_p=0.05, repeat_penalty=1.1, seed=seed)
            assert once(batched, PROMPTS[1], sampling=sampling) == alone(bpe_engine, PROMPTS[1], sampling=sampling)
        sampled = [once(batched, PROMPTS[1], sampling=Sampling(temperature=1.5, seed=seed)).text for seed in (1, 2)]
        assert sampled[0] != sampled[1]  # the seed matters
    finally:
        batched.close()


def decode_together(batched: BatchedEngine, prompts, n: int) -> list[object]:
    """A greedy round of `n` tokens on a session per prompt, every round starting in the
    same step; each round's Generation (or exception)."""
    sessions = [batched.session(p) for p in prompts]
    with paused(batched) as pause:
        results = in_threads(*[
            lambda s=s: s.generate(stops=(), max_tokens=n, sampling=Sampling()) for s in sessions
        ], lambda: pause.until_submitted(len(sessions)) or pause.gate.set())
    return results[: len(sessions)]


def test_sequences_decoded_together_give_each_its_text_alone(engine, unified) -> None:
    expected = [alone(engine, p, n=50) for p in PROMPTS]
    batched = BatchedEngine(engine, slots=len(PROMPTS), unified=unified)
    try:
        assert decode_together(batched, PROMPTS, 50) == expected
        assert batched.counters["sequences_per_call_max"] == len(PROMPTS)
    finally:
        batched.close()


def test_sessions_with_one_prompt_evaluate_it_once(bpe_engine, unified) -> None:
    k, n = 4, 20
    seeds = range(k)
    samplings = [Sampling(temperature=1.0, seed=seed) for seed in seeds]
    expected = [alone(bpe_engine, PROMPTS[1], n=n, sampling=s) for s in samplings]
    batched = BatchedEngine(bpe_engine, slots=k, unified=unified)
    try:
        sessions = [batched.session(PROMPTS[1]) for _ in seeds]
        prompt_tokens = len(sessions[0].tokens)
        with paused(batched) as pause:
            results = in_threads(*[
                lambda s=s, m=m: s.generate(stops=(), max_tokens=n, sampling=m) for s, m in zip(sessions, samplings)
            ], lambda: pause.until_submitted(k) or pause.gate.set())
        assert results[:k] == expected
        # One sequence evaluated the prompt; the others copied all of it but their last token.
        assert batched.counters["tokens_shared"] == (k - 1) * (prompt_tokens - 1)
        assert [s.stats.evaluated for s in sessions] == [prompt_tokens + n - 1] + [1 + n - 1] * (k - 1)
        cells = batched.cells()
        assert sorted(cells) == [s.seq_id for s in sessions]
        assert all(cells[s.seq_id] == (0, prompt_tokens + n - 2) for s in sessions)
    finally:
        batched.close()


# -- the tool loop -------------------------------------------------------------------------


class EveryRoundRuns(QwenTirProtocol):
    """qwen-tir whose every round ends at a newline (or 24 tokens) and runs one block."""

    name = "test-every-round-runs"
    stops = ("\n",) + QwenTirProtocol.stops
    max_new_tokens = 24
    max_rounds = 3

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        return Execute(keep=generation.text.rstrip(), code=f"print({round_index} * 7)")


class SandboxedPython:
    """A real sandboxed interpreter per block."""

    name, description = "python", "sandboxed python"

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        from mathsolve.sandbox import run_python

        return ToolResult.from_exec(self.name, run_python(code, limits=limits, prelude=prelude))


class ScriptedTool:
    """A tool that prints 42 after `delay_s` (its first block only), and says when it ran."""

    name, description = "python", "scripted"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s, self.started, self.ended = delay_s, [], []

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        self.started.append(time.monotonic())
        time.sleep(self.delay_s if len(self.started) == 1 else 0.0)
        self.ended.append(time.monotonic())
        return ToolResult(self.name, "ok", stdout="42\n")


def solve(session, prompt: str, tool: SandboxedPython | ScriptedTool | None = None):
    return run_loop(prompt=prompt, protocol=EveryRoundRuns(), session=session,
                    router=ToolRouter({"python": tool or SandboxedPython()}), sampling=Sampling(),
                    limits=Limits())


def test_tool_loop_rounds_match_llama_session(bpe_engine) -> None:
    protocol = EveryRoundRuns()
    prompts = [protocol.prompt(q) for q in ("What is 2 + 3?", "How many legs do 3 spiders have?")]
    expected = []
    for prompt in prompts:
        reference = solve(bpe_engine.session(prompt, special=True), prompt)
        assert reference.rounds == 3 and len(reference.tool_calls) == 3
        expected.append([(s.role, s.text) for s in reference.segments])
    batched = BatchedEngine(bpe_engine, slots=2)
    try:
        sessions = [batched.session(p, special=True) for p in prompts]
        results = in_threads(*[lambda s=s, p=p: solve(s, p) for s, p in zip(sessions, prompts)])
        for result, segments, session in zip(results, expected, sessions):
            assert [(s.role, s.text) for s in result.segments] == segments
            assert [c.stdout for c in result.tool_calls] == ["0\n", "7\n", "14\n"]
            # Prefix reuse: each round evaluated only the new tokens (the pushed text and,
            # per round, the sampled tokens fed back), never the transcript again.
            k = session.stats
            assert k.retokenized == 0
            assert k.evaluated <= k.prompt + k.generated + k.injected
    finally:
        batched.close()


def test_a_sequence_waiting_on_a_slow_tool_does_not_hold_up_the_others(bpe_engine) -> None:
    protocol = EveryRoundRuns()
    prompts = [protocol.prompt(q) for q in ("Slow?", "Fast one?", "Fast two?")]
    slow, fast = ScriptedTool(delay_s=2.0), [ScriptedTool(), ScriptedTool()]
    batched = BatchedEngine(bpe_engine, slots=3)
    try:
        sessions = [batched.session(p, special=True) for p in prompts]
        finished: dict[int, float] = {}

        def run(i: int, tool: ScriptedTool):
            result = solve(sessions[i], prompts[i], tool)
            finished[i] = time.monotonic()
            return result

        results = in_threads(lambda: run(0, slow), lambda: run(1, fast[0]), lambda: run(2, fast[1]))
        assert all(len(r.tool_calls) == 3 for r in results)
        # Both fast problems did all three rounds while the slow one sat in its first tool call.
        assert finished[1] < slow.ended[0] and finished[2] < slow.ended[0]
    finally:
        batched.close()


# -- cancelling, slots, closing -------------------------------------------------------------


def test_cancel_ends_the_round_and_frees_the_cells_and_the_slot(bpe_engine) -> None:
    batched = BatchedEngine(bpe_engine, slots=1)
    try:
        session = batched.session(PROMPTS[0])
        started = threading.Event()
        box = in_threads(
            lambda: session.generate(stops=(), max_tokens=1900, sampling=Sampling(),
                                     on_text=lambda _: started.set()),
            lambda: started.wait(WAIT_S) and session.cancel(),
        )
        got = box[0]
        assert got.finish_reason == "cancelled" and 0 < got.n_tokens < 1900
        assert batched.cells() == {}  # the sequence's cells are gone
        again = batched.session(PROMPTS[1], timeout=5)  # and its slot is free
        assert again.generate(stops=(), max_tokens=10, sampling=Sampling()) == alone(bpe_engine, PROMPTS[1], n=10)
        # A cancelled session stays cancelled, without a slot.
        assert session.generate(stops=(), max_tokens=10, sampling=Sampling()) == Generation("", "cancelled")
        assert session.seq_id is None
    finally:
        batched.close()


def test_a_cancel_event_stops_every_session_that_shares_it(bpe_engine) -> None:
    batched = BatchedEngine(bpe_engine, slots=2)
    try:
        stop = threading.Event()
        sessions = [batched.session(PROMPTS[i], cancel=stop) for i in range(2)]
        started = [threading.Event(), threading.Event()]
        results = in_threads(
            *[lambda i=i: sessions[i].generate(stops=(), max_tokens=1900, sampling=Sampling(),
                                               on_text=lambda _: started[i].set()) for i in range(2)],
            lambda: all(e.wait(WAIT_S) for e in started) and stop.set(),
        )
        assert [r.finish_reason for r in results[:2]] == ["cancelled", "cancelled"]
        assert batched.cells() == {}
        # A session asked for once the event is set needs no slot: it is cancelled already.
        late = batched.session(PROMPTS[0], cancel=stop)
        assert late.generate(stops=(), max_tokens=5, sampling=Sampling()).finish_reason == "cancelled"
    finally:
        batched.close()


def test_more_sessions_than_slots_wait_first_come_first_served(bpe_engine) -> None:
    batched = BatchedEngine(bpe_engine, slots=2)
    try:
        first, second = batched.session(PROMPTS[0]), batched.session(PROMPTS[1])
        with pytest.raises(EngineError, match="no free sequence slot within 0.2 s"):
            batched.session(PROMPTS[2], timeout=0.2)
        got: dict[str, object] = {}
        waiter = threading.Thread(target=lambda: got.update(session=batched.session(PROMPTS[2])), daemon=True)
        waiter.start()
        time.sleep(0.3)
        assert "session" not in got  # still waiting
        first.generate(stops=(), max_tokens=5, sampling=Sampling())
        first.close()
        waiter.join(WAIT_S)
        third = got["session"]
        assert third.seq_id == 0  # the slot the first session gave back
        assert third.generate(stops=(), max_tokens=20, sampling=Sampling()) == alone(bpe_engine, PROMPTS[2], n=20)
        assert sorted(batched.cells()) == [0]  # the first session's cells went with it
        with pytest.raises(EngineError, match="closed"):
            first.generate(stops=(), max_tokens=5, sampling=Sampling())
        second.close()
    finally:
        batched.close()


def test_closing_the_engine_with_sequences_in_flight(bpe_engine) -> None:
    batched = BatchedEngine(bpe_engine, slots=3)
    sessions = [batched.session(p) for p in PROMPTS[:3]]
    started = threading.Event()
    results = in_threads(
        *[lambda s=s: s.generate(stops=(), max_tokens=1900, sampling=Sampling(), on_text=lambda _: started.set())
          for s in sessions],
        lambda: started.wait(WAIT_S) and batched.close(),
    )
    assert all(isinstance(r, EngineError) and "closed" in str(r) for r in results[:3]), results
    with pytest.raises(EngineError, match="closed"):
        sessions[0].generate(stops=(), max_tokens=5, sampling=Sampling())
    with pytest.raises(EngineError, match="closed"):
        batched.session(PROMPTS[0])
    sessions[1].close()  # closing a session of a closed engine is harmless
    batched.close()  # and so is closing twice


# -- failures --------------------------------------------------------------------------------


def test_a_failed_decode_fails_that_round_and_the_session_goes_on(bpe_engine, monkeypatch) -> None:
    batched = BatchedEngine(bpe_engine, slots=2)
    try:
        real, calls = scheduler._decode, []

        def failing_once(ctx, batch):
            calls.append(batch.n_tokens)
            return -3 if len(calls) == 1 else real(ctx, batch)

        monkeypatch.setattr(scheduler, "_decode", failing_once)
        session = batched.session(PROMPTS[0])
        with pytest.raises(EngineError, match=r"llama_decode failed \(-3"):
            session.generate(stops=(), max_tokens=20, sampling=Sampling())
        assert batched.cells() == {}  # put back as before the call
        assert session.generate(stops=(), max_tokens=20, sampling=Sampling()) == alone(bpe_engine, PROMPTS[0], n=20)
    finally:
        batched.close()


def test_an_error_in_the_decode_thread_reaches_every_waiting_thread(bpe_engine, monkeypatch) -> None:
    batched = BatchedEngine(bpe_engine, slots=2)
    try:
        def broken(ctx, batch):
            raise RuntimeError("the decode step broke")

        sessions = [batched.session(p) for p in PROMPTS[:2]]
        monkeypatch.setattr(scheduler, "_decode", broken)
        started = time.monotonic()
        results = in_threads(*[lambda s=s: s.generate(stops=(), max_tokens=20, sampling=Sampling()) for s in sessions])
        assert time.monotonic() - started < 10
        for r in results:
            assert isinstance(r, EngineError) and "RuntimeError: the decode step broke" in str(r)
        with pytest.raises(EngineError, match="decode step broke"):
            batched.session(PROMPTS[0])
    finally:
        batched.close()


def test_a_bad_token_fails_its_own_sequence_only(bpe_engine) -> None:
    batched = BatchedEngine(bpe_engine, slots=2)
    try:
        bad, good = batched.session(PROMPTS[0]), batched.session(PROMPTS[1])
        bad.tokens = bad.tokens + [10**6]
        results = in_threads(lambda: bad.generate(stops=(), max_tokens=10, sampling=Sampling()),
                             lambda: good.generate(stops=(), max_tokens=10, sampling=Sampling()))
        assert isinstance(results[0], EngineError) and "not in the model's vocabulary" in str(results[0])
        assert results[1] == alone(bpe_engine, PROMPTS[1], n=10)
    finally:
        batched.close()


def test_an_error_in_on_text_reaches_the_caller_and_the_session_goes_on(bpe_engine) -> None:
    batched = BatchedEngine(bpe_engine, slots=1)
    try:
        session = batched.session(PROMPTS[0])

        def refuse(text: str) -> None:
            raise ValueError("the renderer failed")

        with pytest.raises(ValueError, match="renderer failed"):
            session.generate(stops=(), max_tokens=20, sampling=Sampling(), on_text=refuse)
        assert session.generate(stops=(), max_tokens=20, sampling=Sampling()) == alone(bpe_engine, PROMPTS[0], n=20)
    finally:
        batched.close()


# -- limits and end-of-generation ---------------------------------------------------------------


def test_a_full_context_ends_with_length_as_llama_session(tiny_bpe: Path) -> None:
    small = LlamaEngine(str(tiny_bpe), n_ctx=64, extra_buffers="off")
    batched = BatchedEngine(small, slots=2, own_engine=True)
    try:
        expected = alone(small, PROMPTS[1], n=500)
        session = batched.session(PROMPTS[1])
        got = session.generate(stops=(), max_tokens=500, sampling=Sampling())
        assert got == expected and got.finish_reason == "length"
        assert len(session.tokens) + got.n_tokens == 64
        session.push(got.text)
        assert session.generate(stops=(), max_tokens=5, sampling=Sampling()) == Generation("", "length")
    finally:
        batched.close()


def test_an_end_of_generation_token_that_is_a_stop_ends_the_round_as_that_stop(bpe_engine, monkeypatch) -> None:
    """The tiny model never samples a special token, so one token it does write is made an
    end-of-generation token for this test (on the engine both sessions read it from)."""
    reference = bpe_engine.session(PROMPTS[0])
    reference.generate(stops=(), max_tokens=12, sampling=Sampling())
    eog = reference._pending[8]
    text = bpe_engine.piece(eog, True).decode()
    real = bpe_engine.is_eog
    monkeypatch.setattr(bpe_engine, "is_eog", lambda t: t == eog or real(t))
    batched = BatchedEngine(bpe_engine, slots=1)
    try:
        for stops, reason in (((text,), "stop"), ((), "eos")):
            got = once(batched, PROMPTS[0], stops=stops)
            assert got == alone(bpe_engine, PROMPTS[0], stops=stops)
            assert got.finish_reason == reason and got.stop == (text if stops else None)
    finally:
        batched.close()


def test_settings_out_of_range_are_refused(bpe_engine) -> None:
    with pytest.raises(UsageError, match="1 to 256 sequences"):
        BatchedEngine(bpe_engine, slots=0)
    with pytest.raises(UsageError, match="1 to 256 sequences"):
        BatchedEngine(bpe_engine, slots=257)
    if not bpe_engine.info.details["n_gpu_layers"]:  # the KV cache is in this machine's memory
        with pytest.raises(UsageError, match="needs .* GiB for the KV cache"):
            BatchedEngine(bpe_engine, slots=256, n_ctx=2**24)
