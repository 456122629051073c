"""Tests of the tiny GGUF generator against the real llama.cpp.

These pin down the properties other tests rely on: the files load, the
tokenizers behave like the real Qwen2 (BPE) and Llama-2 (SPM) ones, output is
deterministic, and generation runs for as many tokens as asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

from mathsolve.testkit import write_tiny_gguf

CHAT_SPECIALS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
MATHCODER_SPECIALS = ("<|text|>", "<|code|>", "<|execution|>", "<|endofblock|>")
ALL_SPECIALS = CHAT_SPECIALS + MATHCODER_SPECIALS

SPM_SPACE_ID = 259  # "▁" in the SPM vocabulary (after <unk>, <s>, </s>, 256 bytes)
PROMPT = "Question: Janet’s ducks lay 16 eggs per day. How many?\nAnswer:"

LlamaFactory = Callable[..., Any]


@pytest.fixture(scope="module")
def make_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaFactory]:
    """Write (once per argument set) and load a tiny model.

    Models are cached per module because several tests share one; loading
    takes milliseconds, writing a few more.
    """
    root = tmp_path_factory.mktemp("tiny")
    cache: dict[tuple[Any, ...], Any] = {}

    def factory(**kwargs: Any) -> Any:
        key = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                           for k, v in kwargs.items()))
        if key not in cache:
            path = root / f"m{len(cache)}.gguf"
            write_tiny_gguf(path, **kwargs)
            cache[key] = llama_cpp.Llama(str(path), n_ctx=512, verbose=False)
        return cache[key]

    yield factory
    for llm in cache.values():
        llm.close()


def greedy_tokens(llm: Any, prompt: str, n: int = 32) -> list[int]:
    """Generate ``n`` tokens at temperature 0 and return their ids."""
    llm.reset()
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=False)
    out: list[int] = []
    for tok in llm.generate(tokens, temp=0.0, reset=True):
        out.append(tok)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("tokenizer", ["bpe", "spm"])
def test_loads_and_generates_32_tokens(make_llm: LlamaFactory, tokenizer: str) -> None:
    llm = make_llm(tokenizer=tokenizer, special_tokens=CHAT_SPECIALS)
    assert llm.n_vocab() % 32 == 0
    result = llm.create_completion(PROMPT, max_tokens=32, temperature=0.0)
    # EOS is pushed far down, so generation only ends at max_tokens.
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 32
    text = result["choices"][0]["text"]
    assert text and all(ch.isprintable() or ch in "\n\t" for ch in text)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=3, special_tokens=CHAT_SPECIALS)
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=3, special_tokens=CHAT_SPECIALS)
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=4, special_tokens=CHAT_SPECIALS)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert 100_000 < a.stat().st_size < 1_000_000


@pytest.mark.parametrize("tokenizer", ["bpe", "spm"])
def test_greedy_generation_is_deterministic_and_varied(tmp_path: Path, tokenizer: str) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf", tokenizer=tokenizer)
    first = llama_cpp.Llama(str(path), n_ctx=512, verbose=False)
    second = llama_cpp.Llama(str(path), n_ctx=512, verbose=False)
    try:
        run1 = greedy_tokens(first, PROMPT)
        assert greedy_tokens(first, PROMPT) == run1  # same context, reused
        assert greedy_tokens(second, PROMPT) == run1  # fresh context
        # Random weights must not collapse into one token forever, and the
        # prompt must matter.
        assert len(set(run1)) > 3
        assert greedy_tokens(first, "Let x = 3. Then 2x =") != run1
        assert first.token_eos() not in run1
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    "text",
    [
        "\n```output\n5\n```\n",
        "Janet’s ducks lay 16 eggs.\n\n```python\nprint(16 - 3 - 4)\n```\n```output\n9\n```",
        "  leading and trailing spaces  \t\ttabs\r\nCRLF",
        "日本語 ünïcödé 🎉 \\boxed{42}",
        "<|im_start|> looks special but is plain text",
        "",
    ],
)
def test_bpe_round_trips_text(make_llm: LlamaFactory, text: str) -> None:
    llm = make_llm(tokenizer="bpe", special_tokens=CHAT_SPECIALS)
    tokens = llm.tokenize(text.encode(), add_bos=False, special=False)
    assert llm.detokenize(tokens) == text.encode()
    # BPE has no implicit prefix, so token sequences splice freely.
    half = len(text) // 2
    spliced = (llm.tokenize(text[:half].encode(), add_bos=False, special=False)
               + llm.tokenize(text[half:].encode(), add_bos=False, special=False))
    assert llm.detokenize(spliced) == text.encode()


def test_bpe_has_multichar_tokens(make_llm: LlamaFactory) -> None:
    llm = make_llm(tokenizer="bpe", special_tokens=CHAT_SPECIALS)
    tokens = llm.tokenize(b"```output\n\n", add_bos=False, special=False)
    assert [llm.detokenize([t]) for t in tokens] == [b"```", b"output", b"\n\n"]


@pytest.mark.parametrize("tokenizer", ["bpe", "spm"])
def test_special_tokens_are_single_only_with_special(make_llm: LlamaFactory, tokenizer: str) -> None:
    llm = make_llm(tokenizer=tokenizer, special_tokens=ALL_SPECIALS)
    ids = []
    for text in ALL_SPECIALS:
        [tok] = llm.tokenize(text.encode(), add_bos=False, special=True)
        ids.append(tok)
        assert len(llm.tokenize(text.encode(), add_bos=False, special=False)) > 1
        # CONTROL tokens render only on request.
        assert llm.detokenize([tok]) == b""
        assert llm.detokenize([tok], special=True) == text.encode()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # given order


def test_user_defined_specials_are_always_split_out(make_llm: LlamaFactory) -> None:
    llm = make_llm(tokenizer="spm", special_tokens=MATHCODER_SPECIALS, special_type="user_defined")
    for text in MATHCODER_SPECIALS:
        [tok] = llm.tokenize(text.encode(), add_bos=False, special=False)
        assert llm.detokenize([tok]) == text.encode()


def test_bos_eos_conventions(make_llm: LlamaFactory) -> None:
    bpe = make_llm(tokenizer="bpe", special_tokens=CHAT_SPECIALS)
    [endoftext] = bpe.tokenize(b"<|endoftext|>", add_bos=False, special=True)
    assert bpe.token_eos() == bpe.token_bos() == endoftext
    assert bpe.tokenize(b"hi", add_bos=True) == bpe.tokenize(b"hi", add_bos=False)  # add_bos off

    qwen_chat = make_llm(tokenizer="bpe", special_tokens=("<|im_start|>", "<|im_end|>"))
    [im_end] = qwen_chat.tokenize(b"<|im_end|>", add_bos=False, special=True)
    assert qwen_chat.token_eos() == im_end

    spm = make_llm(tokenizer="spm")
    assert (spm.token_bos(), spm.token_eos()) == (1, 2)
    assert spm.tokenize(b"hi", add_bos=True)[0] == 1


def test_eos_is_reachable_through_logit_bias(make_llm: LlamaFactory) -> None:
    llm = make_llm(tokenizer="bpe", special_tokens=CHAT_SPECIALS)
    result = llm.create_completion(PROMPT, max_tokens=8, temperature=0.0,
                                   logit_bias={llm.token_eos(): 1000.0})
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"]["completion_tokens"] <= 1


def test_spm_leading_space_prefix(make_llm: LlamaFactory) -> None:
    """Pin down llama.cpp's SPM whitespace handling documented in mathsolve.testkit.gguf."""
    llm = make_llm(tokenizer="spm", special_tokens=MATHCODER_SPECIALS)
    block = "\n```output\n5\n```\n"
    alone = llm.tokenize(block.encode(), add_bos=False, special=False)
    inside = llm.tokenize(("Result:" + block).encode(), add_bos=False, special=False)
    assert alone[0] == SPM_SPACE_ID  # the space prefix, as its own token
    assert inside[-len(alone) + 1:] == alone[1:]  # same tokens, no prefix
    assert llm.detokenize(alone) == b" " + block.encode()
    with_bos = llm.tokenize(block.encode(), add_bos=True, special=False)
    assert with_bos[:2] == [1, SPM_SPACE_ID]
    assert llm.detokenize(with_bos) == block.encode()  # BOS strips the space
    # After a special token the next text fragment is space-prefixed too.
    code = llm.tokenize(b"<|code|>x", add_bos=False, special=True)
    assert code[1] == SPM_SPACE_ID
    assert llm.detokenize(code, special=True) == b"<|code|> x"


@pytest.mark.parametrize("file_type", ["F16", "Q8_0", "Q4_0"])
def test_other_file_types_load_and_generate(make_llm: LlamaFactory, file_type: str) -> None:
    llm = make_llm(tokenizer="bpe", file_type=file_type, special_tokens=CHAT_SPECIALS)
    result = llm.create_completion(PROMPT, max_tokens=32, temperature=0.0)
    assert result["usage"]["completion_tokens"] == 32
    again = llm.create_completion(PROMPT, max_tokens=32, temperature=0.0)
    assert again["choices"][0]["text"] == result["choices"][0]["text"]


@pytest.mark.parametrize("file_type", ["F32", "F16", "Q8_0", "Q4_0"])
@pytest.mark.parametrize("tokenizer", ["bpe", "spm"])
def test_mathsolve_header_check_accepts_every_generated_model(tmp_path: Path, file_type: str, tokenizer: str) -> None:
    # The strict header checks (bounds, types, block sizes, alignment) must not refuse any file
    # the real converter writes and llama.cpp loads; the byte count proves every tensor was seen.
    from mathsolve.ggufinfo import read_gguf

    path = write_tiny_gguf(tmp_path / "m.gguf", tokenizer=tokenizer, file_type=file_type,
                           special_tokens=CHAT_SPECIALS, chat_template="{{ messages }}")
    info = read_gguf(path)
    assert info.architecture == "llama" and info.context_length() == 2048
    assert info.metadata["tokenizer.ggml.model"] == ("gpt2" if tokenizer == "bpe" else "llama")
    assert info.metadata["tokenizer.chat_template"] == "{{ messages }}"
    assert info.n_tensors > 0 and info.file_size == path.stat().st_size


def test_quantized_model_dims_suit_block_size(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = write_tiny_gguf(tmp_path / "q.gguf", file_type="Q4_0", tokenizer="spm")
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.Q4_0
    assert types["output_norm.weight"] == gguf.GGMLQuantizationType.F32
    for tensor in reader.tensors:
        if len(tensor.shape) == 2:
            # ne[0] (the row length) must hold whole 32-element blocks; the
            # row counts are multiples of 8 so the CPU repack kernels apply.
            assert tensor.shape[0] % 32 == 0 and tensor.shape[1] % 8 == 0
            assert tensor.shape[0] >= 256


def test_q4_0_weights_are_repacked_on_avx2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Q4_0 model is big enough for llama.cpp's CPU weight repacking.

    Which kernels exist depends on the CPU, so this only asserts where the
    x86 AVX2 Q4_0 8x8 kernel is available.
    """
    info = llama_cpp.llama_print_system_info().decode()
    if "REPACK = 1" not in info or "AVX2 = 1" not in info:
        pytest.skip(f"no x86 AVX2 repack kernels here: {info}")
    path = write_tiny_gguf(tmp_path / "q4.gguf", file_type="Q4_0")
    capsys.readouterr()
    llm = llama_cpp.Llama(str(path), n_ctx=512, verbose=True)
    try:
        log = capsys.readouterr().err
    finally:
        llm.close()
    assert "CPU_REPACK model buffer size" in log
    assert "repack tensor blk.0.ffn_down.weight" in log
