"""Random-weight GGUFs with the shapes of real checkpoints, for speed measurements.

Where the real file cannot be had (a GPU machine with no network, a shape no small
model on PyPI has), speed can still be measured: llama.cpp's time per token depends
on the architecture's shapes and the weight type, not on the weights' values. These
models have the layer count, widths, attention heads, KV heads and vocabulary size of
the named checkpoint, Q4_0 weights drawn at random (the 4-bit codes random, each
block's scale fixed so activations stay finite), and the tests' byte-level tokenizer
padded with plain word tokens up to the vocabulary size, so what they "write" streams
like text. Their answers are nonsense: the suite skips accuracy on them.

Writing is fast (random bytes, no quantization): about 4 GB for the 7B shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

Q4_0_BLOCK = 32  # weights per block
Q4_0_BYTES = 18  # one f16 scale + 16 bytes of 4-bit codes
SPECIAL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


@dataclass(frozen=True)
class Shape:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int


# From the checkpoints' config.json (hidden_size, num_hidden_layers, num_attention_heads,
# num_key_value_heads, intermediate_size, vocab_size).
SHAPES: dict[str, Shape] = {
    "qwen2.5-0.5b": Shape(896, 24, 14, 2, 4864, 151936, 32768),  # the CPU bench model
    "qwen2.5-1.5b": Shape(1536, 28, 12, 2, 8960, 151936, 4096),  # qwen2.5-math-1.5b, the default
    "qwen2.5-7b": Shape(3584, 28, 28, 4, 18944, 152064, 4096),  # qwen2.5-math-7b, numinamath-7b
    "llama2-7b": Shape(4096, 32, 32, 32, 11008, 32000, 4096),  # tora-7b, tora-code-7b, mathcoder-7b
}


def _q4_0(rng: np.random.Generator, rows: int, cols: int, std: float) -> np.ndarray:
    """A (rows, cols) Q4_0 tensor as raw bytes: random codes, every scale the same.
    A code q stands for scale * (q - 8); uniform codes have a standard deviation of
    about 4.6 steps, so scale = std / 4.6 gives weights of that spread."""
    if cols % Q4_0_BLOCK:
        raise ValueError(f"{cols} columns is not a multiple of {Q4_0_BLOCK}")
    blocks = rng.integers(0, 256, size=(rows, cols // Q4_0_BLOCK, Q4_0_BYTES), dtype=np.uint8)
    blocks[:, :, :2] = np.frombuffer(np.float16(std / 4.6).tobytes(), dtype=np.uint8)
    return blocks.reshape(rows, -1)


def write_synthetic(path: Path, shape_name: str, *, seed: int = 0, shape: Shape | None = None) -> Path:
    """Write the random-weight model of `shape_name` (a key of SHAPES, or any name with
    an explicit `shape`) to `path`."""
    import gguf

    from mathsolve.testkit import TinyDims, add_llama_hparams, bpe_vocab

    s = shape or SHAPES[shape_name]
    vocab = bpe_vocab(SPECIAL, int(gguf.TokenType.CONTROL))
    tokens = [t for t in vocab.tokens if not t.startswith("[PAD")]
    types = vocab.types[: len(tokens)]
    # "Ġ" is the byte-level alphabet's space: fillers read as words " w1234".
    tokens += [f"\u0120w{i}" for i in range(s.n_vocab - len(tokens))]
    types += [int(gguf.TokenType.NORMAL)] * (s.n_vocab - len(types))

    dims = TinyDims(n_embd=s.n_embd, n_head=s.n_head, n_head_kv=s.n_head_kv, n_ff=s.n_ff, n_layer=s.n_layer)
    tmp = path.with_suffix(".incomplete")  # renamed once complete
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(f"synthetic-{shape_name}-q4_0")
    add_llama_hparams(writer, dims, context_length=s.n_ctx_train, n_vocab=s.n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_add_bos_token(False)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    rng = np.random.default_rng(seed)
    q4 = gguf.GGMLQuantizationType.Q4_0
    kv_dim = s.n_head_kv * dims.head_dim

    def matrix(name: str, rows: int, cols: int, std: float) -> None:
        writer.add_tensor(name, _q4_0(rng, rows, cols, std), raw_dtype=q4)

    matrix("token_embd.weight", s.n_vocab, s.n_embd, 1.0)
    for i in range(s.n_layer):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(s.n_embd, dtype=np.float32))
        matrix(p + "attn_q.weight", s.n_embd, s.n_embd, s.n_embd**-0.5)
        matrix(p + "attn_k.weight", kv_dim, s.n_embd, s.n_embd**-0.5)
        matrix(p + "attn_v.weight", kv_dim, s.n_embd, s.n_embd**-0.5)
        matrix(p + "attn_output.weight", s.n_embd, s.n_embd, s.n_embd**-0.5)
        writer.add_tensor(p + "ffn_norm.weight", np.ones(s.n_embd, dtype=np.float32))
        matrix(p + "ffn_gate.weight", s.n_ff, s.n_embd, s.n_embd**-0.5)
        matrix(p + "ffn_up.weight", s.n_ff, s.n_embd, s.n_embd**-0.5)
        matrix(p + "ffn_down.weight", s.n_embd, s.n_ff, s.n_ff**-0.5)
    writer.add_tensor("output_norm.weight", np.ones(s.n_embd, dtype=np.float32))
    matrix("output.weight", s.n_vocab, s.n_embd, 3.0 * s.n_embd**-0.5)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def synthetic_model(shape_name: str, directory: Path) -> Path:
    """The synthetic model of that shape in `directory`, written once."""
    if shape_name not in SHAPES:
        raise SystemExit(f"--synthetic {shape_name}: known shapes are {', '.join(SHAPES)}")
    path = directory / f"synthetic-{shape_name}-q4_0.gguf"
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        write_synthetic(path, shape_name)
    return path
