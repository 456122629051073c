"""Protocols that depend on the model file, through a real llama.cpp on tiny GGUFs:
MathCoder's special-token markers (checked at load, tokenized as markers when the loop
appends them) and chat-tir's template read from the GGUF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathsolve.cli import app
from mathsolve.engines.llama import LlamaEngine
from mathsolve.errors import EXIT_BAD_MODEL_FILE, EXIT_USAGE
from mathsolve.formats.mathcoder import MARKERS, MathCoderProtocol
from mathsolve.testkit import write_tiny_gguf

runner = CliRunner()
Q = "What is 2 + 3?"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def mathcoder_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # MathCoder is Llama-2 based: a SentencePiece vocabulary plus the eight added markers.
    return write_tiny_gguf(tmp_path_factory.mktemp("mc") / "mathcoder-tiny.gguf", tokenizer="spm", special_tokens=MARKERS)


@pytest.fixture(scope="module")
def mathcoder_engine(mathcoder_gguf: Path):
    engine = LlamaEngine(str(mathcoder_gguf), n_ctx=512, extra_buffers="off")
    yield engine
    engine.close()


def test_markers_are_verified_single_tokens(mathcoder_engine, tiny_spm: Path) -> None:
    assert mathcoder_engine.marker_problems(MARKERS) == []
    plain = LlamaEngine(str(tiny_spm), n_ctx=256, extra_buffers="off")
    try:
        assert plain.marker_problems(MARKERS) == list(MARKERS)
    finally:
        plain.close()


def test_a_conversion_without_the_markers_is_refused(tiny_spm: Path) -> None:
    r = runner.invoke(app, ["--model", str(tiny_spm), "--protocol", "mathcoder", Q])
    assert r.exit_code == EXIT_BAD_MODEL_FILE
    assert "<|code|>" in r.output and "single special tokens" in r.output and "Traceback" not in r.output


def test_mathcoder_prompt_and_appended_markers_are_single_tokens(mathcoder_engine) -> None:
    p = MathCoderProtocol()
    prompt = p.prompt(Q)
    session = mathcoder_engine.session(prompt, special=True, render_special=True, literal=Q, markers=MARKERS)
    ids = {m: mathcoder_engine.tokenize(m.encode(), add_bos=False, special=True)[0] for m in MARKERS}
    assert sum(t in ids.values() for t in session.tokens) == prompt.count("<|")
    before = len(session.tokens)
    session.push("<|execution|>5<|endofblock|>")
    tail = session.tokens[before:]
    assert tail[0] == ids["<|execution|>"] and tail[-1] == ids["<|endofblock|>"]
    assert mathcoder_engine.detokenize(tail[1:-1], True).strip() == b"5"


def test_printed_marker_text_becomes_the_marker_as_in_the_reference(mathcoder_engine) -> None:
    # The reference re-tokenized its whole transcript with special tokens parsed.
    session = mathcoder_engine.session("x", special=True, render_special=True, markers=MARKERS)
    before = len(session.tokens)
    session.push("<|execution|>a<|code|>b<|endofblock|>")
    code_id = mathcoder_engine.tokenize(b"<|code|>", add_bos=False, special=True)[0]
    assert code_id in session.tokens[before:]


def test_mathcoder_solves_end_to_end_on_the_tiny_model(mathcoder_gguf: Path) -> None:
    r = runner.invoke(app, ["--model", str(mathcoder_gguf), "--protocol", "mathcoder", "--max-tokens", "6", "--json", Q])
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert record["protocol"] == "mathcoder" and record["transcript"][0]["text"] == MathCoderProtocol().prompt(Q)


def test_chat_tir_uses_the_template_in_the_gguf(tmp_path: Path) -> None:
    path = write_tiny_gguf(
        tmp_path / "chat.gguf", tokenizer="bpe", special_tokens=("<|im_start|>", "<|im_end|>"), chat_template=CHATML
    )
    r = runner.invoke(app, ["--model", str(path), "--protocol", "chat-tir", "--max-tokens", "8", "--json", Q])
    assert r.exit_code == 0, r.output
    prompt = json.loads(r.stdout)["transcript"][0]["text"]
    assert prompt.startswith("<|im_start|>system\nSolve the math problem")
    assert prompt.endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")


def test_chat_tir_on_a_gguf_without_template_is_a_usage_error(tiny_bpe: Path) -> None:
    r = runner.invoke(app, ["--model", str(tiny_bpe), "--protocol", "chat-tir", Q])
    assert r.exit_code == EXIT_USAGE and "chat template" in r.output and "Traceback" not in r.output
