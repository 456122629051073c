"""Generate tiny random-weight llama-architecture GGUF models for tests.

The models exercise the *real* llama.cpp code path (GGUF parsing, tokenizer,
graph build, sampling) in milliseconds and without any download: the weights
are random, but the file layout, metadata and tokenizer are the same kinds
llama.cpp sees for real Qwen2-style (byte-level BPE) and Llama-2-style
(SentencePiece) checkpoints.

Tokenizer conventions (token ids are stable for a given argument set):

``tokenizer="bpe"`` (``tokenizer.ggml.model = "gpt2"``, pre-tokenizer
``"qwen2"``)
    * ids ``0..255`` are the 256 byte tokens, id ``b`` is byte ``b`` written in
      GPT-2's byte-to-unicode alphabet (so ``"\\n"`` is id 10, ``" "`` id 32);
    * then multi-character tokens built by merges (``"``"``, ``"```"``,
      ``"\\n\\n"``, ``"output"``, ``" the"``, ...);
    * then one token per ``special_tokens`` entry, in the given order;
    * then, only if neither ``<|endoftext|>`` nor ``<|im_end|>`` was given, a
      dedicated ``<|endoftext|>`` control token;
    * then UNUSED ``[PADn]`` tokens up to a multiple of 32 (so the rows of
      output.weight suit the CPU repacking kernels).

    EOS is ``<|endoftext|>`` if given, else ``<|im_end|>`` if given, else the
    dedicated ``<|endoftext|>``; llama.cpp treats both texts as end of
    generation anyway.  BOS is the same id as EOS (as in Qwen2 GGUFs) and
    ``add_bos`` defaults to False, so ``tokenize(..., add_bos=True)`` adds
    nothing unless ``add_bos=True`` was written into the file.  Any UTF-8
    text round-trips exactly through ``tokenize(t, add_bos=False,
    special=False)`` / ``detokenize``, and token sequences can be spliced
    freely (no implicit prefix).  The ``"qwen2"`` pre-tokenizer splits
    punctuation from letters, so ``"```output"`` is ``"```"``, ``"output"``.

``tokenizer="spm"`` (``tokenizer.ggml.model = "llama"``)
    * ``0 = <unk>``, ``1 = <s>`` (BOS), ``2 = </s>`` (EOS);
    * ``3..258`` are the byte-fallback tokens ``<0x00>``..``<0xFF>`` (byte
      ``b`` is id ``b + 3``; ``"\\n"`` is ``<0x0A>`` = 13 as in Llama 2);
    * then ``"▁"`` (259), the printable ASCII characters and a few word pieces
      (``"▁the"``, ``"```"``, ``"```output"``, ...) with scores;
    * then the ``special_tokens``, in the given order;
    * then UNUSED ``[PADn]`` tokens up to a multiple of 32.

    ``add_bos`` defaults to True and ``add_space_prefix`` is True, as in
    Llama 2.  Leading-space behaviour observed with llama.cpp (it matters
    when splicing token sequences):

    * The first raw-text fragment is tokenized as ``" " + text``, whether or
      not BOS is added.  ``"\\n```output\\n5\\n```\\n"`` alone gives
      ``["▁", "<0x0A>", "```output", "<0x0A>", "5", "<0x0A>", "```",
      "<0x0A>"]``; inside a longer text (``"Result:\\n```output..."``) the
      same characters give the same tokens without the ``"▁"``.  Hence
      ``tokenize(a) + tokenize(b) != tokenize(a + b)``: drop the leading
      ``"▁"`` (id 259) of a tokenized continuation, or tokenize the whole
      text at once.
    * With ``special=True`` each raw-text fragment that follows a special
      token gets the ``"▁"`` prefix too: ``"<|code|>x"`` gives
      ``[<|code|>, "▁", "x"]`` and detokenizes to ``" x"`` after the
      marker; ``"<|im_end|>\\n"`` gives ``[<|im_end|>, "▁", "<0x0A>"]``.
    * llama-cpp-python's ``Llama.detokenize`` maps ``"▁"`` back to ``" "``
      and strips one leading space only when the first token is BOS, so
      ``detokenize(tokenize(t, add_bos=False))`` returns ``b" " + t`` while
      ``detokenize(tokenize(t, add_bos=True))`` returns ``t`` (for text
      without special tokens).

Special tokens (``special_type``): CONTROL tokens (the default) are one token
only with ``special=True`` and detokenize to nothing unless
``detokenize(..., special=True)``.  USER_DEFINED tokens are split out even
with ``special=False`` and always detokenize to their text, except that
llama.cpp forces end-of-turn-looking texts (``<|im_end|>``,
``<|endoftext|>``, ...) to CONTROL at load time.

Generation behaviour: the weights are scaled so that greedy decoding depends
on the prompt and varies from step to step (random nets still fall into short
cycles quickly).  All special tokens (``special_tokens``, BOS/EOS/UNK,
padding) and the byte tokens other than printable ASCII, ``"\\n"`` and
``"\\t"`` get logits far below the rest through a constant "bias" channel
of the residual stream.  So the model never stops on its own and always
emits printable ASCII: bound generation with ``max_tokens`` or stop strings.

Files are byte-identical for identical arguments (seeded numpy RNG, no
timestamps in GGUF).
"""


from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gguf
import numpy as np

from mathsolve.testkit.vocab import MAX_TOKEN_BYTES, Vocab, bpe_vocab, spm_vocab

__all__ = ["FILE_TYPES", "TinyDims", "add_llama_hparams", "dims_for", "write_tiny_gguf"]

_QUANT_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "Q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "Q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}
FILE_TYPES: tuple[str, ...] = ("F32", "F16", *_QUANT_TYPES)


@dataclass(frozen=True)
class TinyDims:
    """Hyper-parameters of a generated model."""

    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_layer: int

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


# F32/F16: as small as possible while still having real multi-head attention
# with grouped KV heads (as Qwen2 has).
_SMALL = TinyDims(n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_layer=2)
# Quantized: every matrix dimension is a multiple of the 32-element quant
# block and large enough that llama.cpp's CPU backend repacks the weights
# into its interleaved layouts (the code path mathsolve probes).
_QUANT = TinyDims(n_embd=256, n_head=4, n_head_kv=4, n_ff=512, n_layer=2)


def dims_for(file_type: str) -> TinyDims:
    """Return the model dimensions used for ``file_type``."""
    if file_type not in FILE_TYPES:
        raise ValueError(f"file_type must be one of {FILE_TYPES}, got {file_type!r}")
    return _QUANT if file_type in _QUANT_TYPES else _SMALL


def _weights(vocab: Vocab, dims: TinyDims, seed: int) -> dict[str, np.ndarray]:
    """Random weights, as numpy arrays shaped (rows, cols) = (out, in).

    GGUF stores ggml's ``ne`` order, the reverse of numpy's shape, and the
    writer reverses it for us: a numpy (n_vocab, n_embd) array becomes
    ``ne = [n_embd, n_vocab]``, which is what llama.cpp expects for
    token_embd/output, and (out, in) is what it expects for projections.
    """
    rng = np.random.default_rng(seed)
    e, ff = dims.n_embd, dims.n_ff
    n_vocab = len(vocab.tokens)
    q_dim = dims.n_head * dims.head_dim
    kv_dim = dims.n_head_kv * dims.head_dim

    def normal(shape: tuple[int, int], std: float) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    # Dimension 0 of the residual stream is a constant "bias" channel: every
    # token embedding has the same positive value there and no layer writes
    # to it (row 0 of attn_output/ffn_down is zero), so after the final RMS
    # norm it stays positive.  A very negative output weight on it then makes
    # a token practically unsampleable (EOS, control tokens, stray bytes).
    bias_value = 4.0
    tok_embd = normal((n_vocab, e), 1.0)
    tok_embd[:, 0] = bias_value

    out: dict[str, np.ndarray] = {"token_embd.weight": tok_embd}
    # Projections ~ N(0, 1/fan_in) keep activations O(1) through the layers
    # so attention (and thus the prompt) influences the next token.
    for i in range(dims.n_layer):
        p = f"blk.{i}."
        out[p + "attn_norm.weight"] = np.ones(e, dtype=np.float32)
        out[p + "attn_q.weight"] = normal((q_dim, e), 1.0 / np.sqrt(e))
        out[p + "attn_k.weight"] = normal((kv_dim, e), 1.0 / np.sqrt(e))
        out[p + "attn_v.weight"] = normal((kv_dim, e), 1.0 / np.sqrt(e))
        attn_out = normal((e, q_dim), 1.0 / np.sqrt(q_dim))
        attn_out[0, :] = 0.0
        out[p + "attn_output.weight"] = attn_out
        out[p + "ffn_norm.weight"] = np.ones(e, dtype=np.float32)
        out[p + "ffn_gate.weight"] = normal((ff, e), 1.0 / np.sqrt(e))
        out[p + "ffn_up.weight"] = normal((ff, e), 1.0 / np.sqrt(e))
        ffn_down = normal((e, ff), 1.0 / np.sqrt(ff))
        ffn_down[0, :] = 0.0
        out[p + "ffn_down.weight"] = ffn_down
    out["output_norm.weight"] = np.ones(e, dtype=np.float32)

    # Logit std ~3: greedy decoding has clear winners (stable across runs and
    # quantization noise is unlikely to flip them) while sampling still varies.
    output = normal((n_vocab, e), 3.0 / np.sqrt(e))
    output[:, 0] = 0.0
    output[vocab.suppressed, 0] = -10.0
    out["output.weight"] = output
    return out


def add_llama_hparams(writer: gguf.GGUFWriter, dims: TinyDims, *, context_length: int, n_vocab: int) -> None:
    """The llama architecture's hyper-parameters, as every generated model writes them."""
    writer.add_context_length(context_length)
    writer.add_embedding_length(dims.n_embd)
    writer.add_block_count(dims.n_layer)
    writer.add_feed_forward_length(dims.n_ff)
    writer.add_head_count(dims.n_head)
    writer.add_head_count_kv(dims.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_dimension_count(dims.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(n_vocab)


def write_tiny_gguf(
    path: Path,
    *,
    tokenizer: str = "bpe",
    seed: int = 0,
    file_type: str = "F32",
    special_tokens: Sequence[str] = (),
    add_bos: bool | None = None,
    context_length: int = 2048,
    special_type: Literal["control", "user_defined"] = "control",
    chat_template: str | None = None,
) -> Path:
    """Write a tiny random-weight llama-architecture GGUF model to ``path``.

    Args:
        path: Output file; parent directories must exist.
        tokenizer: ``"bpe"`` for a byte-level GPT-2/Qwen2-style vocabulary,
            ``"spm"`` for a SentencePiece/Llama-2-style one (see the module
            docstring for ids and whitespace conventions).
        seed: Seed of the weights; the same arguments give identical bytes.
        file_type: ``"F32"``, ``"F16"`` (2-D tensors in half precision), or
            ``"Q8_0"`` / ``"Q4_0"`` (2-D tensors quantized; these models use
            n_embd 256 / n_ff 512 so llama.cpp's CPU backend repacks them).
        special_tokens: Extra special tokens, e.g. ``"<|im_start|>"``; each is
            one token when tokenized with ``special=True``.
        add_bos: Value of ``tokenizer.ggml.add_bos_token``; defaults to False
            for BPE (like Qwen2) and True for SPM (like Llama 2).
        context_length: ``llama.context_length`` (the training context).
        special_type: Token type for ``special_tokens``: ``"control"`` (only
            parsed with ``special=True``, rendered only with special
            rendering on) or ``"user_defined"`` (always parsed and rendered,
            like non-special added tokens of HF tokenizers).  llama.cpp
            forces end-of-turn-looking texts (``<|im_end|>``,
            ``<|endoftext|>``, ...) to CONTROL whatever the file says.
        chat_template: ``tokenizer.chat_template`` (a Jinja template), or
            none at all.

    Returns:
        ``path``, for convenience.
    """
    path = Path(path)
    dims = dims_for(file_type)
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError("special_tokens contains duplicates")
    for text in special_tokens:
        if not text or len(text.encode("utf-8")) > MAX_TOKEN_BYTES:
            raise ValueError(f"special token {text!r} must be 1..{MAX_TOKEN_BYTES} bytes")
    if special_type not in ("control", "user_defined"):
        raise ValueError(f"special_type must be 'control' or 'user_defined', got {special_type!r}")

    ttype = int(gguf.TokenType.CONTROL if special_type == "control" else gguf.TokenType.USER_DEFINED)
    if tokenizer == "bpe":
        vocab = bpe_vocab(special_tokens, ttype)
        default_add_bos = False
    elif tokenizer == "spm":
        vocab = spm_vocab(special_tokens, ttype)
        default_add_bos = True
    else:
        raise ValueError(f"tokenizer must be 'bpe' or 'spm', got {tokenizer!r}")

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"tiny-{tokenizer}-{file_type.lower()}-s{seed}")
    add_llama_hparams(writer, dims, context_length=context_length, n_vocab=len(vocab.tokens))

    if tokenizer == "bpe":
        writer.add_tokenizer_model("gpt2")
        # "qwen2" is Qwen2's pre-tokenizer regex (digits split one by one,
        # newlines grouped), the family most mathsolve models belong to.
        writer.add_tokenizer_pre("qwen2")
    else:
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    if vocab.unk_id is not None:
        writer.add_unk_token_id(vocab.unk_id)
    writer.add_pad_token_id(vocab.eos_id if tokenizer == "bpe" else 0)
    writer.add_add_bos_token(default_add_bos if add_bos is None else add_bos)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if tokenizer == "spm":
        writer.add_add_space_prefix(True)

    if file_type == "F32":
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    elif file_type == "F16":
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    else:
        writer.add_file_type(_QUANT_TYPES[file_type][1])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    for name, data in _weights(vocab, dims, seed).items():
        # Norm vectors stay F32, as llama.cpp's converters keep them.
        if data.ndim == 1 or file_type == "F32":
            writer.add_tensor(name, data.astype(np.float32))
        elif file_type == "F16":
            writer.add_tensor(name, data.astype(np.float16))
        else:
            qtype = _QUANT_TYPES[file_type][0]
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
