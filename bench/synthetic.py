"""Random-weight GGUFs with the shapes of real checkpoints, for speed measurements.

Where the real file cannot be had (a GPU machine with no network, a shape no small
model on PyPI has), speed can still be measured: llama.cpp's time per token depends
on the architecture's shapes and the weight type, not on the weights' values. These
models have the layer count, widths, attention heads, KV heads and vocabulary size of
the named checkpoint, weights drawn at random (the 4-bit codes random, each block's
scale fixed so activations stay finite), and the tests' byte-level tokenizer padded
with plain word tokens up to the vocabulary size, so what they "write" streams like
text. Their answers are nonsense: the suite skips accuracy on them.

Three llama.cpp architectures:

- `llama` for the Qwen2.5 and Llama-2 shapes (Qwen2's q/k/v biases are left out: an
  addition per projection, nothing next to the matrix products);
- `qwen3` (Qwen3-0.6B/1.7B/4B): a head size that is not n_embd / n_head, an RMS norm
  over each query and key head (`attn_q_norm`, `attn_k_norm`), no q/k/v biases, and the
  output projection tied to the token embedding (no `output.weight`);
- `gpt-oss` (llama.cpp's LLM_ARCH_OPENAI_MOE; gpt-oss-20b/120b): a mixture of experts
  (router `ffn_gate_inp` with a bias, expert tensors `ffn_{gate,up,down}_exps` with
  per-expert biases), attention sinks (`attn_sinks`), q/k/v/output biases, a norm after
  attention (`post_attention_norm`), YaRN rope scaling, and a 128-token sliding window
  on every other layer.

The tensor names, shapes and metadata keys are those llama.cpp reads (the version
llama-cpp-python 0.3.36 vendors: `src/models/qwen3.cpp` and `src/models/openai-moe.cpp`,
`load_arch_hparams` and `load_arch_tensors`; `src/llama-arch.cpp`) and that its converter
writes (`conversion/qwen.py`, `conversion/gpt_oss.py`, `conversion/base.py`
`set_gguf_parameters`). llama.cpp refuses a file with a missing tensor, a tensor of the
wrong shape or a tensor it does not use, so a model that loads has exactly its layout.

Weight types (`weights`): "q4_0" puts every matrix in Q4_0, the same for every shape so
shapes compare fairly; "mxfp4" (mixture-of-experts shapes only) is the layout gpt-oss
ships in (llama.cpp's MOSTLY_MXFP4_MOE, as the ggml-org GGUF): MXFP4 experts, Q8_0 for
the other matrices. Norms, biases, sinks and the router stay F32 in both, as llama.cpp's
converter and quantizer keep them.

The Qwen3 and gpt-oss vocabularies put the family's added tokens at their real ids
(Qwen3: `<|endoftext|>` 151643 .. `</think>` 151668, then unused `[PADn]` up to
151936; gpt-oss: the o200k_harmony specials 199998..201087, `<|return|>` 200002 and
`<|call|>` 200012 among them), so llama.cpp types them and picks its end-of-generation
tokens as it does for the real files. Reduced test shapes keep the same tail, shifted to
the end of their smaller vocabulary.

Files are written tensor by tensor (the 20B shape is about 12 GB), seeded, in seconds
per gigabyte (random bytes, no quantization).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32  # weights per block in Q4_0, Q8_0 and MXFP4
BLOCK_BYTES = {"q4_0": 18, "q8_0": 34, "mxfp4": 17}  # f16 scale + 16 codes; f16 + 32 int8; e8m0 + 16 codes
SPECIAL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")  # the llama-architecture shapes' specials
WEIGHTS = ("q4_0", "mxfp4")


@dataclass(frozen=True)
class Shape:
    """A checkpoint's shape as llama.cpp sees it (its config.json, converted)."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int  # feed-forward width; for a mixture of experts, each expert's
    n_vocab: int
    n_ctx_train: int
    arch: str = "llama"  # GGUF general.architecture
    head_dim: int = 0  # 0: n_embd // n_head (llama); qwen3 and gpt-oss set their own
    rope_theta: float = 10000.0
    tied: bool = False  # no output.weight: llama.cpp reuses token_embd
    n_expert: int = 0
    n_expert_used: int = 0
    sliding_window: int = 0  # gpt-oss: on the even layers (llama.cpp's swa pattern 2)

    @property
    def n_rot(self) -> int:
        return self.head_dim or self.n_embd // self.n_head


# From the checkpoints' config.json (hidden_size, num_hidden_layers, num_attention_heads,
# num_key_value_heads, intermediate_size, vocab_size, max_position_embeddings; Qwen3 and
# gpt-oss: head_dim, rope_theta, tie_word_embeddings; gpt-oss: num_local_experts,
# num_experts_per_tok, sliding_window). The small Qwen2.5s tie their embeddings too
# (their published totals, 0.49B and 1.54B, count the matrix once). Qwen3's are the
# original April 2025 releases (Qwen/Qwen3-0.6B, -1.7B, -4B; llama.cpp's qwen3.cpp names
# 28 layers of 1024 "0.6B" and 36 of 2560 "4B"). gpt-oss: openai/gpt-oss-20b's config and
# transformers' GptOssConfig defaults, which are the 120b's (36 layers, 128 experts; also
# openai/gpt-oss gpt_oss/torch/model.py ModelConfig); the 20b has 24 layers and 32
# experts (model card, arXiv 2508.10925). tests/test_bench_synthetic.py checks every
# shape against its published parameter count. The 120b (about 63 GB at 4 bits) is here
# for the table; writing it needs that much free disk.
SHAPES: dict[str, Shape] = {
    "qwen2.5-0.5b": Shape(896, 24, 14, 2, 4864, 151936, 32768, tied=True),  # the CPU bench model
    # qwen2.5-math-1.5b (the default) and openmath-nemotron-1.5b
    "qwen2.5-1.5b": Shape(1536, 28, 12, 2, 8960, 151936, 4096, tied=True),
    "qwen2.5-7b": Shape(3584, 28, 28, 4, 18944, 152064, 4096),  # qwen2.5-math-7b, numinamath-7b
    "llama2-7b": Shape(4096, 32, 32, 32, 11008, 32000, 4096),  # tora-7b, tora-code-7b, mathcoder-7b
    "qwen3-0.6b": Shape(1024, 28, 16, 8, 3072, 151936, 40960, "qwen3", 128, 1e6, tied=True),
    "qwen3-1.7b": Shape(2048, 28, 16, 8, 6144, 151936, 40960, "qwen3", 128, 1e6, tied=True),
    "qwen3-4b": Shape(2560, 36, 32, 8, 9728, 151936, 40960, "qwen3", 128, 1e6, tied=True),
    "gpt-oss-20b": Shape(2880, 24, 64, 8, 2880, 201088, 131072, "gpt-oss", 64, 150000.0,
                         n_expert=32, n_expert_used=4, sliding_window=128),
    "gpt-oss-120b": Shape(2880, 36, 64, 8, 2880, 201088, 131072, "gpt-oss", 64, 150000.0,
                          n_expert=128, n_expert_used=4, sliding_window=128),
}

# gpt-oss's rope scaling, the same for both sizes (config.json "rope_scaling": yarn,
# factor 32, original_max_position_embeddings 4096, beta_fast 32, beta_slow 1), and
# the RMS-norm epsilons (rms_norm_eps).
YARN = {"factor": 32.0, "original_context": 4096, "beta_fast": 32.0, "beta_slow": 1.0}
RMS_EPS = {"llama": 1e-6, "qwen3": 1e-6, "gpt-oss": 1e-5}


# -- tensors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """One tensor of the plan: numpy order (..., rows, cols), ggml's ne reversed."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "q4_0", "q8_0", "mxfp4", or F32: "ones", "zeros", "normal"
    std: float = 1.0

    @property
    def nbytes(self) -> int:
        n = math.prod(self.shape)
        return n * 4 if self.kind in ("ones", "zeros", "normal") else n // QK * BLOCK_BYTES[self.kind]

    def data(self, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "ones":
            return np.ones(self.shape, dtype=np.float32)
        if self.kind == "zeros":
            return np.zeros(self.shape, dtype=np.float32)
        if self.kind == "normal":
            return rng.standard_normal(self.shape, dtype=np.float32) * np.float32(self.std)
        return _blocks(rng, self.kind, self.shape, self.std)


def _blocks(rng: np.random.Generator, kind: str, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Quantized blocks as raw bytes, shape (..., rows, cols / 32 * block bytes): random
    codes, every block's scale the same, chosen so the weights have spread `std`.

    Q4_0: code q stands for d * (q - 8); uniform codes spread 4.6 steps. Q8_0: int8 codes
    times d; uniform codes spread 73.9. MXFP4: E2M1 codes (0, 0.5, 1, ... 6, signed) spread
    2.93, times a power of two 2^(e - 127) (ggml's e8m0 scale byte e)."""
    *lead, cols = shape
    if cols % QK:
        raise ValueError(f"{cols} columns is not a multiple of {QK}")
    out = rng.integers(0, 256, size=(*lead, cols // QK, BLOCK_BYTES[kind]), dtype=np.uint8)
    if kind == "mxfp4":
        out[..., 0] = np.uint8(min(254, max(1, 127 + round(math.log2(std / 2.93)))))
    else:
        spread = 4.6 if kind == "q4_0" else 73.9
        out[..., :2] = np.frombuffer(np.float16(std / spread).tobytes(), dtype=np.uint8)
    return out.reshape(*lead, -1)


def tensors(s: Shape, weights: str = "q4_0") -> list[Tensor]:
    """Every tensor of shape `s`, in file order, with the weight types of `weights`."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if weights == "mxfp4" and not s.n_expert:
        raise ValueError("mxfp4 weights are the experts' type: only for mixture-of-experts shapes")
    dense = "q8_0" if weights == "mxfp4" else "q4_0"
    experts = "mxfp4" if weights == "mxfp4" else "q4_0"
    e, q_dim, kv_dim = s.n_embd, s.n_head * s.n_rot, s.n_head_kv * s.n_rot
    fan = e**-0.5

    out = [Tensor("token_embd.weight", (s.n_vocab, e), dense, 1.0)]
    for i in range(s.n_layer):
        p = f"blk.{i}."
        out.append(Tensor(p + "attn_norm.weight", (e,), "ones"))
        out += [Tensor(p + "attn_q.weight", (q_dim, e), dense, fan),
                Tensor(p + "attn_k.weight", (kv_dim, e), dense, fan),
                Tensor(p + "attn_v.weight", (kv_dim, e), dense, fan),
                Tensor(p + "attn_output.weight", (e, q_dim), dense, q_dim**-0.5)]
        if s.arch == "qwen3":
            out += [Tensor(p + "attn_q_norm.weight", (s.n_rot,), "ones"),
                    Tensor(p + "attn_k_norm.weight", (s.n_rot,), "ones")]
        if s.arch == "gpt-oss":
            out += _gpt_oss_layer(s, p, experts)
        else:
            out += [Tensor(p + "ffn_norm.weight", (e,), "ones"),
                    Tensor(p + "ffn_gate.weight", (s.n_ff, e), dense, fan),
                    Tensor(p + "ffn_up.weight", (s.n_ff, e), dense, fan),
                    Tensor(p + "ffn_down.weight", (e, s.n_ff), dense, s.n_ff**-0.5)]
    out.append(Tensor("output_norm.weight", (e,), "ones"))
    if not s.tied:
        out.append(Tensor("output.weight", (s.n_vocab, e), dense, 3.0 * fan))
    return out


def _gpt_oss_layer(s: Shape, p: str, experts: str) -> list[Tensor]:
    """gpt-oss's layer beyond the q/k/v/output matrices (llama.cpp's openai-moe.cpp):
    biases, sinks, the post-attention norm, the router and the experts."""
    e, x, ff, q_dim, kv_dim = s.n_embd, s.n_expert, s.n_ff, s.n_head * s.n_rot, s.n_head_kv * s.n_rot
    return [
        Tensor(p + "attn_q.bias", (q_dim,), "zeros"),
        Tensor(p + "attn_k.bias", (kv_dim,), "zeros"),
        Tensor(p + "attn_v.bias", (kv_dim,), "zeros"),
        Tensor(p + "attn_output.bias", (e,), "zeros"),
        Tensor(p + "attn_sinks.weight", (s.n_head,), "zeros"),
        Tensor(p + "post_attention_norm.weight", (e,), "ones"),
        # A random router spreads tokens over the experts as a trained one does, so
        # decoding reads different experts' weights from token to token.
        Tensor(p + "ffn_gate_inp.weight", (x, e), "normal", e**-0.5),
        Tensor(p + "ffn_gate_inp.bias", (x,), "zeros"),
        Tensor(p + "ffn_gate_exps.weight", (x, ff, e), experts, e**-0.5),
        Tensor(p + "ffn_gate_exps.bias", (x, ff), "zeros"),
        Tensor(p + "ffn_up_exps.weight", (x, ff, e), experts, e**-0.5),
        Tensor(p + "ffn_up_exps.bias", (x, ff), "zeros"),
        Tensor(p + "ffn_down_exps.weight", (x, e, ff), experts, ff**-0.5),
        Tensor(p + "ffn_down_exps.bias", (x, e), "zeros"),
    ]


def file_bytes(s: Shape, weights: str = "q4_0") -> int:
    """The tensor data's size (the header and vocabulary add a few MB)."""
    return sum(t.nbytes for t in tensors(s, weights))


# -- vocabularies ------------------------------------------------------------------------


@dataclass(frozen=True)
class Specials:
    """A family's added tokens: where they start in the real vocabulary and how many
    ids follow them there (the tail a smaller test vocabulary keeps), their texts and
    GGUF token types, the pre-tokenizer, and which of them BOS, EOS and padding are."""

    first_id: int
    tail: int
    tokens: tuple[tuple[str, str], ...]  # (text, "control" | "user_defined")
    pre: str
    bos: str
    eos: str
    pad: str


def _qwen3_specials() -> Specials:
    # Qwen3's tokenizer_config.json added_tokens_decoder, 151643..151668. llama.cpp's
    # converter types "special": true tokens and <|...|> lookalikes CONTROL, the rest
    # (<tool_call>, <think>, ...) USER_DEFINED, and pads to vocab_size with [PADn].
    texts = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
             "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
             "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
             "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
             "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>")
    kinds = tuple((t, "control" if t.startswith("<|") else "user_defined") for t in texts)
    return Specials(151643, 151936 - 151643, kinds, pre="qwen2",
                    bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>")


def _harmony_specials() -> Specials:
    # tiktoken's o200k_harmony special tokens, 199998..201087 (openai/harmony
    # docs/format.md lists <|start|> 200006, <|end|> 200007, <|message|> 200008,
    # <|channel|> 200005, <|constrain|> 200003, <|return|> 200002, <|call|> 200012);
    # the ids between are <|reserved_N|>. EOS is <|return|>, as in the tokenizer config.
    named = {199998: "<|startoftext|>", 199999: "<|endoftext|>", 200002: "<|return|>", 200003: "<|constrain|>",
             200005: "<|channel|>", 200006: "<|start|>", 200007: "<|end|>", 200008: "<|message|>",
             200012: "<|call|>", 200018: "<|endofprompt|>"}
    tokens = tuple((named.get(i, f"<|reserved_{i}|>"), "control") for i in range(199998, 201088))
    return Specials(199998, 201088 - 199998, tokens, pre="gpt-4o",
                    bos="<|startoftext|>", eos="<|return|>", pad="<|endoftext|>")


def vocabulary(s: Shape):
    """(tokens, types, merges, specials) for shape `s`: the tests' byte-level BPE
    tokens, filler words " w1234" up to the specials' place, the specials, and for the
    llama shapes the three ChatML specials right after the BPE tokens."""
    import gguf

    from mathsolve.testkit import bpe_vocab

    normal, control = int(gguf.TokenType.NORMAL), int(gguf.TokenType.CONTROL)
    if s.arch == "llama":
        vocab = bpe_vocab(SPECIAL, control)
        tokens = [t for t in vocab.tokens if not t.startswith("[PAD")]
        types = vocab.types[: len(tokens)]
        specials = None
        special_at = s.n_vocab
    else:
        vocab = bpe_vocab((), control)
        base = [i for i, kind in enumerate(vocab.types) if kind == normal]
        tokens, types = [vocab.tokens[i] for i in base], [normal] * len(base)
        specials = _qwen3_specials() if s.arch == "qwen3" else _harmony_specials()
        special_at = s.n_vocab - specials.tail
        if special_at < len(tokens):
            raise ValueError(f"a {s.arch} vocabulary needs at least {len(tokens) + specials.tail} tokens")
    # "Ġ" is the byte-level alphabet's space: fillers read as words " w1234".
    tokens += [f"\u0120w{i}" for i in range(special_at - len(tokens))]
    types += [normal] * (special_at - len(types))
    if specials is not None:
        kind = {"control": control, "user_defined": int(gguf.TokenType.USER_DEFINED)}
        tokens += [text for text, _ in specials.tokens]
        types += [kind[k] for _, k in specials.tokens]
        # Beyond the added tokens: unused padding up to the vocabulary size (Qwen3).
        tokens += [f"[PAD{i}]" for i in range(len(tokens), s.n_vocab)]
        types += [int(gguf.TokenType.UNUSED)] * (s.n_vocab - len(types))
    return tokens, types, vocab.merges, specials


# -- writing -------------------------------------------------------------------------------


def write_synthetic(path: Path, shape_name: str, *, seed: int = 0, shape: Shape | None = None,
                    weights: str = "q4_0") -> Path:
    """Write the random-weight model of `shape_name` (a key of SHAPES, or any name with
    an explicit `shape`) to `path`, tensor by tensor."""
    import gguf

    s = shape or SHAPES[shape_name]
    plan = tensors(s, weights)
    tmp = path.with_suffix(".incomplete")  # renamed once complete
    writer = gguf.GGUFWriter(str(tmp), s.arch)
    writer.add_name(f"synthetic-{shape_name}-{weights}")
    _hparams(writer, s)
    _tokenizer(writer, s)
    if weights == "mxfp4":
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_MXFP4_MOE)
    else:
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    for t in plan:
        if t.kind in BLOCK_BYTES:
            *lead, cols = t.shape
            raw = getattr(gguf.GGMLQuantizationType, t.kind.upper())
            writer.add_tensor_info(t.name, (*lead, cols // QK * BLOCK_BYTES[t.kind]), np.dtype(np.uint8),
                                   t.nbytes, raw_dtype=raw)
        else:
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for data in _stream(plan, rng):
        writer.write_tensor_data(data)
    writer.close()
    tmp.replace(path)
    return path


def _stream(plan: list[Tensor], rng: np.random.Generator) -> Iterator[np.ndarray]:
    for t in plan:  # one tensor in memory at a time
        yield t.data(rng)


def _hparams(writer, s: Shape) -> None:
    from mathsolve.testkit import TinyDims, add_llama_hparams

    if s.arch == "llama":
        dims = TinyDims(n_embd=s.n_embd, n_head=s.n_head, n_head_kv=s.n_head_kv, n_ff=s.n_ff, n_layer=s.n_layer)
        add_llama_hparams(writer, dims, context_length=s.n_ctx_train, n_vocab=s.n_vocab)
        return
    # The keys llama.cpp's converter writes for these architectures (no rope dimension
    # count: llama.cpp takes the head size, key_length).
    writer.add_context_length(s.n_ctx_train)
    writer.add_embedding_length(s.n_embd)
    writer.add_block_count(s.n_layer)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(s.n_head)
    writer.add_head_count_kv(s.n_head_kv)
    writer.add_rope_freq_base(s.rope_theta)
    writer.add_layer_norm_rms_eps(RMS_EPS[s.arch])
    writer.add_key_length(s.n_rot)
    writer.add_value_length(s.n_rot)
    if s.arch == "gpt-oss":
        import gguf

        writer.add_expert_count(s.n_expert)
        writer.add_expert_used_count(s.n_expert_used)
        writer.add_expert_feed_forward_length(s.n_ff)
        # Which layers slide is llama.cpp's rule for this architecture (pattern 2: the
        # even ones), not a key: the converter writes only the window.
        writer.add_sliding_window(s.sliding_window)
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(YARN["factor"])
        writer.add_rope_scaling_orig_ctx_len(YARN["original_context"])
        writer.add_rope_scaling_yarn_beta_fast(YARN["beta_fast"])
        writer.add_rope_scaling_yarn_beta_slow(YARN["beta_slow"])


def _tokenizer(writer, s: Shape) -> None:
    tokens, types, merges, specials = vocabulary(s)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(specials.pre if specials else "qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if specials is None:
        eos = tokens.index("<|endoftext|>")
        bos = pad = eos
    else:
        bos, eos, pad = (tokens.index(t) for t in (specials.bos, specials.eos, specials.pad))
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    if specials is not None:
        writer.add_pad_token_id(pad)
    writer.add_add_bos_token(False)


def model_file(shape_name: str, directory: Path, weights: str = "q4_0") -> Path:
    return directory / f"synthetic-{shape_name}-{weights}.gguf"


def synthetic_model(shape_name: str, directory: Path, weights: str = "q4_0") -> Path:
    """The synthetic model of that shape in `directory`, written once; refused with a
    one-line reason when the shape is unknown or the disk has no room for it."""
    if shape_name not in SHAPES:
        raise SystemExit(f"--synthetic {shape_name}: known shapes are {', '.join(SHAPES)}")
    try:
        need = file_bytes(SHAPES[shape_name], weights)
    except ValueError as exc:
        raise SystemExit(f"{shape_name}: {exc}") from None
    path = model_file(shape_name, directory, weights)
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(directory).free
        if free < need + 2**30:
            raise SystemExit(f"{shape_name} ({weights}) needs {need / 1e9:.1f} GB in {directory}, "
                             f"{free / 1e9:.1f} GB are free")
        write_synthetic(path, shape_name, weights=weights)
    return path
