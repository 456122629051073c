"""The bench's synthetic models: real GGUFs llama.cpp loads with the declared shapes.

Each architecture is written here in a reduced size (few layers, narrow, few experts,
a small vocabulary) with every tensor and metadata key of its full size, loaded by the
real llama.cpp through mathsolve's engine and decoded. The full sizes are checked on
paper (parameter counts against the published ones) and measured by the bench
(`python -m bench.default_model`), not written here.
"""

from __future__ import annotations

import math
from pathlib import Path

import llama_cpp
import pytest

from bench.synthetic import QK, SHAPES, Shape, file_bytes, tensors, vocabulary, write_synthetic
from mathsolve.engines.llama import LlamaEngine
from mathsolve.ggufinfo import read_gguf
from tests.test_engine_llama import _generate

SMALL = Shape(n_embd=128, n_layer=3, n_head=4, n_head_kv=2, n_ff=256, n_vocab=2048, n_ctx_train=512)
# head_dim 64 with 4 heads of a 128-wide model: the query width (256) is not n_embd, as
# in Qwen3-0.6B (16 x 128 = 2048 over 1024).
SMALL_QWEN3 = Shape(n_embd=128, n_layer=2, n_head=4, n_head_kv=2, n_ff=256, n_vocab=2048, n_ctx_train=40960,
                    arch="qwen3", head_dim=64, rope_theta=1e6, tied=True)
# Two layers: one sliding (window 16, shorter than the test prompt), one full. 8 experts,
# 2 per token. The vocabulary keeps harmony's 1,090-token tail of specials.
SMALL_GPT_OSS = Shape(n_embd=128, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=8192, n_ctx_train=131072,
                      arch="gpt-oss", head_dim=64, rope_theta=150000.0, n_expert=8, n_expert_used=2,
                      sliding_window=16)
PROMPT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " * 2


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "small.gguf", "small", shape=SMALL)


def _load(path: Path) -> LlamaEngine:
    return LlamaEngine(str(path), n_ctx=256, threads=2, extra_buffers="off")


def _tensor_names(path: Path) -> set[str]:
    import gguf

    return {t.name for t in gguf.GGUFReader(str(path)).tensors}


def _decodes(engine: LlamaEngine, n: int = 8) -> None:
    gen = _generate(engine, prompt=PROMPT, n=n)[1]
    assert gen.n_tokens == n and gen.finish_reason == "length"


def test_declared_shape_loads_and_generates(synthetic: Path) -> None:
    engine = _load(synthetic)
    try:
        model = engine.llm._model.model
        assert llama_cpp.llama_model_n_layer(model) == SMALL.n_layer
        assert llama_cpp.llama_model_n_embd(model) == SMALL.n_embd
        assert engine.llm.n_vocab() == SMALL.n_vocab
        assert read_gguf(str(synthetic)).file_type == 2  # MOSTLY_Q4_0
        gen = _generate(engine, prompt="What is 2 + 3?", n=8)[1]
        assert gen.n_tokens == 8 and gen.text.strip()  # filler words stream as text
    finally:
        engine.close()


def test_qwen3_reduced_loads_with_its_own_head_size_and_tied_output(tmp_path: Path) -> None:
    path = write_synthetic(tmp_path / "qwen3.gguf", "qwen3-small", shape=SMALL_QWEN3)
    names = _tensor_names(path)
    assert {"blk.1.attn_q_norm.weight", "blk.1.attn_k_norm.weight"} <= names
    assert "output.weight" not in names and not any(n.endswith(".bias") for n in names)
    engine = _load(path)
    try:
        model = engine.llm._model.model
        assert engine.info.details["architecture"] == "qwen3"
        assert llama_cpp.llama_model_n_layer(model) == 2 and llama_cpp.llama_model_n_embd(model) == 128
        assert engine.llm.metadata["qwen3.attention.key_length"] == "64"
        # The query projection is n_head x head_dim = 256 wide, twice n_embd.
        assert llama_cpp.llama_model_n_head(model) * SMALL_QWEN3.head_dim == 2 * SMALL_QWEN3.n_embd
        # Qwen3's added tokens keep their offsets from the end of the vocabulary:
        # <think> is 151667 of 151936 in the real one.
        think = engine.tokenize(b"<think>", add_bos=False, special=True)
        assert think == [SMALL_QWEN3.n_vocab - (151936 - 151667)]
        vocab = engine.llm._model.vocab
        im_end = engine.tokenize(b"<|im_end|>", add_bos=False, special=True)[0]
        assert llama_cpp.llama_vocab_is_eog(vocab, im_end) and llama_cpp.llama_vocab_eos(vocab) == im_end
        _decodes(engine)
    finally:
        engine.close()


@pytest.mark.parametrize("weights, file_type", [("q4_0", 2), ("mxfp4", 38)])
def test_gpt_oss_reduced_loads_with_experts_sinks_and_sliding_window(tmp_path: Path, weights: str,
                                                                     file_type: int) -> None:
    path = write_synthetic(tmp_path / f"gpt-oss-{weights}.gguf", "gpt-oss-small", shape=SMALL_GPT_OSS,
                           weights=weights)
    assert read_gguf(str(path)).file_type == file_type  # MOSTLY_Q4_0, MOSTLY_MXFP4_MOE
    names = _tensor_names(path)
    for name in ("attn_sinks.weight", "post_attention_norm.weight", "ffn_gate_inp.weight", "ffn_gate_inp.bias",
                 "ffn_gate_exps.weight", "ffn_up_exps.bias", "ffn_down_exps.bias", "attn_q.bias",
                 "attn_output.bias"):
        assert f"blk.1.{name}" in names, name
    engine = _load(path)
    try:
        model = engine.llm._model.model
        meta = engine.llm.metadata
        assert engine.info.details["architecture"] == "gpt-oss"
        assert meta["gpt-oss.expert_count"] == "8" and meta["gpt-oss.expert_used_count"] == "2"
        assert meta["gpt-oss.rope.scaling.type"] == "yarn" and meta["gpt-oss.attention.sliding_window"] == "16"
        assert llama_cpp.llama_model_n_swa(model) == 16
        # harmony's stop tokens end generation; <|end|> (between messages) does not.
        vocab = engine.llm._model.vocab
        ids = {t: engine.tokenize(t.encode(), add_bos=False, special=True)
               for t in ("<|call|>", "<|return|>", "<|end|>")}
        assert ids["<|call|>"] == [SMALL_GPT_OSS.n_vocab - (201088 - 200012)]
        assert llama_cpp.llama_vocab_is_eog(vocab, ids["<|call|>"][0])
        assert llama_cpp.llama_vocab_is_eog(vocab, ids["<|return|>"][0])
        assert not llama_cpp.llama_vocab_is_eog(vocab, ids["<|end|>"][0])
        _decodes(engine)  # the prompt (152 tokens) is longer than the 16-token window
    finally:
        engine.close()


def test_mxfp4_is_refused_for_a_dense_shape() -> None:
    with pytest.raises(ValueError, match="mixture-of-experts"):
        tensors(SHAPES["qwen3-1.7b"], "mxfp4")


def test_known_shapes_are_block_compatible() -> None:
    for name, shape in SHAPES.items():
        for weights in ("q4_0", "mxfp4") if shape.n_expert else ("q4_0",):
            for t in tensors(shape, weights):
                assert t.shape[-1] % QK == 0 or t.kind in ("ones", "zeros", "normal"), (name, t.name)
        assert shape.n_head % shape.n_head_kv == 0, name
        vocabulary_tail = {"qwen3": 151936 - 151643, "gpt-oss": 201088 - 199998}.get(shape.arch)
        if vocabulary_tail:
            tokens, types, _, specials = vocabulary(shape)
            assert len(tokens) == len(types) == shape.n_vocab
            assert tokens.index(specials.eos) == {"qwen3": 151645, "gpt-oss": 200002}[shape.arch]


# Published parameter counts, in billions, at the precision they were published: total
# (and for Qwen, without the embedding). Qwen2.5 and Qwen3 model cards ("Number of
# Parameters", "Number of Paramaters (Non-Embedding)"); Llama-2-7B 6,738,415,616; the
# gpt-oss model card (arXiv 2508.10925): 20.9B and 116.8B, 3.6B active per token (20b).
PUBLISHED = {
    "qwen2.5-0.5b": (0.49, 0.36), "qwen2.5-1.5b": (1.54, 1.31), "qwen2.5-7b": (7.61, 6.53),
    "llama2-7b": (6.74, None), "qwen3-0.6b": (0.6, 0.44), "qwen3-1.7b": (1.7, 1.4), "qwen3-4b": (4.0, 3.6),
    "gpt-oss-20b": (20.9, None), "gpt-oss-120b": (116.8, None),
}


def _close(count: float, published: float) -> bool:
    """Within one unit of the published last digit (cards round or truncate: Qwen2.5-7B's
    7,615,616,512 is "7.61B", Qwen3-0.6B's 596M "0.6B")."""
    return abs(count - published) < 10.0 ** -len(repr(published).split(".")[1])


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_shapes_have_the_published_parameter_counts(name: str) -> None:
    s = SHAPES[name]
    total = sum(math.prod(t.shape) for t in tensors(s)) / 1e9
    embedding = s.n_vocab * s.n_embd * (1 if s.tied else 2) / 1e9
    published_total, published_non_embedding = PUBLISHED[name]
    assert _close(total, published_total)
    if published_non_embedding is not None:
        assert _close(total - embedding, published_non_embedding)
    if name == "gpt-oss-20b":  # active: 4 of 32 experts, one embedding matrix multiplied
        unused = s.n_layer * (s.n_expert - s.n_expert_used) * (3 * s.n_ff * s.n_embd + 2 * s.n_ff + s.n_embd)
        assert _close(total - unused / 1e9 - s.n_vocab * s.n_embd / 1e9, 3.6)


def test_gpt_oss_20b_as_shipped_is_the_size_of_the_released_gguf() -> None:
    # ggml-org/gpt-oss-20b-GGUF's MXFP4 file is 12.1 GB (MXFP4 experts, Q8_0 elsewhere).
    assert round(file_bytes(SHAPES["gpt-oss-20b"], "mxfp4") / 1e9, 1) == 12.1


def test_default_model_repetition_measures_a_reduced_model(tmp_path: Path) -> None:
    from bench.default_model import DECODED, SHORT, n_ctx_for, one_repetition, token_ids

    path = write_synthetic(tmp_path / "gpt-oss.gguf", "gpt-oss-small", shape=SMALL_GPT_OSS)
    engine = LlamaEngine(str(path), n_ctx=n_ctx_for(64), threads=2, extra_buffers="off")
    try:
        ids = token_ids(engine.llm.n_vocab(), SHORT + 2 * DECODED + 64)
        figures = one_repetition(engine.llm, ids, 64)
        assert set(figures) == {"decode_tok_s", "prompt_tok_s", "decode_deep_tok_s"}
        assert all(rate > 0 for rate in figures.values())
        # Positions only grow (a sliding-window cache may refuse removals): every id went in.
        assert engine.llm.n_tokens == len(ids) and list(engine.llm.input_ids[: len(ids)]) == ids
        # The ids are plain words, never the harmony specials at the top of the vocabulary.
        assert max(ids) < SMALL_GPT_OSS.n_vocab - (201088 - 199998)
        second = one_repetition(engine.llm, ids, 64)  # starts over from an empty cache
        assert engine.llm.n_tokens == len(ids) and all(rate > 0 for rate in second.values())
    finally:
        engine.close()


def test_solve_seconds_sums_the_per_token_times() -> None:
    from bench.default_model import decode_fit, solve_seconds

    # Level decode speed: prompt time plus tokens over the rate.
    flat = decode_fit(20.0, 20.0, (80.0, 2000.0))
    assert flat == (0.05, 0.0)
    assert solve_seconds(flat, 100.0, 200, 400) == 200 / 100 + 400 / 20
    # Slower with depth: the closed form equals the sum over every generated token.
    fit = decode_fit(20.0, 10.0, (80.0, 2080.0))
    direct = 300 / 150 + sum(fit[0] + fit[1] * d for d in range(300, 300 + 1000))
    assert solve_seconds(fit, 150.0, 300, 1000) == pytest.approx(direct)
    assert 1 / (fit[0] + fit[1] * 2080) == pytest.approx(10.0)
