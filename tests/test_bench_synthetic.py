"""The bench's synthetic models: real GGUFs llama.cpp loads with the declared shapes."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest

from bench.synthetic import SHAPES, Shape, write_synthetic
from mathsolve.engines.llama import LlamaEngine
from mathsolve.ggufinfo import read_gguf

SMALL = Shape(n_embd=128, n_layer=3, n_head=4, n_head_kv=2, n_ff=256, n_vocab=2048, n_ctx_train=512)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "small.gguf", "small", shape=SMALL)


def test_declared_shape_loads_and_generates(synthetic: Path) -> None:
    engine = LlamaEngine(str(synthetic), n_ctx=256, extra_buffers="off")
    try:
        model = engine.llm._model.model
        assert llama_cpp.llama_model_n_layer(model) == SMALL.n_layer
        assert llama_cpp.llama_model_n_embd(model) == SMALL.n_embd
        assert engine.llm.n_vocab() == SMALL.n_vocab
        assert read_gguf(str(synthetic)).file_type == 2  # MOSTLY_Q4_0
        from tests.test_engine_llama import _generate

        gen = _generate(engine, prompt="What is 2 + 3?", n=8)[1]
        assert gen.n_tokens == 8 and gen.text.strip()  # filler words stream as text
    finally:
        engine.close()


def test_known_shapes_are_q4_0_compatible() -> None:
    for name, shape in SHAPES.items():
        assert shape.n_embd % 32 == 0 and shape.n_ff % 32 == 0, name
        assert shape.n_embd % shape.n_head == 0 and shape.n_head % shape.n_head_kv == 0, name
