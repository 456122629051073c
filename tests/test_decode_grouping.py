"""Calls grouped by depth (mathsolve.engines.llama.grouping): the fitted cost of a decode call,
the split it picks, and, on the real llama.cpp with a tiny GGUF, sequences decoded in split
calls keep the text each writes alone."""

from __future__ import annotations

import random

import pytest

from mathsolve.engines.llama import LlamaEngine
from mathsolve.engines.llama.batched import BatchedEngine
from mathsolve.engines.llama.grouping import MIN_OBSERVED, DecodeCost

from tests.test_batched_engine import PROMPTS, alone, decode_together


def fitted(fixed: float, per_token: float, per_cell: float, calls: int = 200, noise: float = 0.0) -> DecodeCost:
    """A DecodeCost that saw `calls` calls of a machine with these true costs."""
    rng = random.Random(7)
    cost = DecodeCost()
    for _ in range(calls):
        n, depth = rng.randint(1, 8), rng.randint(50, 4000)
        seconds = fixed + per_token * n + per_cell * n * depth
        cost.observe(n, depth, seconds * (1 + rng.uniform(-noise, noise)))
    return cost


def test_the_fit_finds_the_machines_costs() -> None:
    cost = fitted(0.012, 0.008, 0.000004)
    assert cost.fixed == pytest.approx(0.012, rel=0.05)
    assert cost.per_token == pytest.approx(0.008, rel=0.05)
    assert cost.per_cell == pytest.approx(0.000004, rel=0.05)
    gpu = fitted(0.010, 0.0002, 0.00000005, noise=0.05)  # weights dominate: a GPU's shape
    assert gpu.fixed == pytest.approx(0.010, rel=0.1) and gpu.per_cell < 0.0000002


def test_a_deep_sequence_is_split_off_where_that_is_cheaper() -> None:
    cpu = fitted(0.012, 0.008, 0.000004)
    depths = [120, 300, 3000, 150, 200, 180, 260, 90]
    assert cpu.groups(depths) == [[7, 0, 3, 5, 4, 6, 1], [2]]
    # Each group's cost beats the single call's.
    assert cpu.fixed * 2 + cpu.per_cell * (7 * 300 + 3000) < cpu.fixed + cpu.per_cell * 8 * 3000
    assert cpu.groups([300, 350, 280, 320]) == [[2, 0, 3, 1]]  # like depths: one call
    gpu = fitted(0.010, 0.0002, 0.00000005)
    assert gpu.groups(depths) == [sorted(range(8), key=lambda i: depths[i])]  # one read of the weights


def test_nothing_is_split_before_the_costs_are_known() -> None:
    cost = fitted(0.012, 0.008, 0.000004, calls=MIN_OBSERVED - 1)
    assert cost.groups([100, 4000]) == [[0, 1]]
    assert cost.groups([]) == [] and cost.groups([5]) == [[0]]
    nonsense = DecodeCost()
    for _ in range(MIN_OBSERVED):
        nonsense.observe(4, 1000, 0.0)  # a clock that says nothing: no negative cost is trusted
    assert len(nonsense.groups([100, 4000])) == 1


@pytest.mark.parametrize("tiny", ["tiny_bpe", "tiny_spm"])
def test_sequences_decoded_in_split_calls_keep_their_text(tiny, request) -> None:
    engine = LlamaEngine(str(request.getfixturevalue(tiny)), n_ctx=2048, extra_buffers="off")
    long_prompt = PROMPTS[1] * 12  # far deeper than the others
    prompts = [*PROMPTS[:3], long_prompt]
    expected = [alone(engine, p, n=40) for p in prompts]
    batched = BatchedEngine(engine, slots=len(prompts))
    batched.cost = fitted(0.012, 0.008, 0.000004)  # split by depth from the first call
    try:
        assert decode_together(batched, prompts, 40) == expected
        assert batched.counters["split_steps"] > 0
    finally:
        batched.close()
        engine.close()
