"""The vocabularies of the test kit's tiny models: byte-level BPE (Qwen2-like) and
SentencePiece with byte fallback (Llama-2-like). See mathsolve.testkit.gguf for the
token-id conventions they follow; the writer there adds the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import gguf

__all__ = ["MAX_TOKEN_BYTES", "Vocab", "bpe_vocab", "is_plain_ascii", "spm_vocab"]

# Multi-character BPE tokens (plain text; spaces and newlines included).  They
# cover the pieces the tool-integrated math prompts use a lot, so that real
# multi-character tokens occur in tests.
_BPE_WORDS: tuple[str, ...] = (
    "``", "```", "\n\n", "output", "```output", " the", " of", " and", " is",
    "The", "answer", " answer", "def", " def", "print", "return", " return",
    "import", " import", "solution", "    ", "        ", " =", " +", "in", "ing",
    "python", "boxed", "\\boxed", " {", "}\n",
)

# SentencePiece word pieces; "▁" stands for a space as in Llama's vocab.
_SPM_WORDS: tuple[str, ...] = (
    "▁the", "▁of", "▁and", "▁is", "▁answer", "▁The", "``", "```", "output",
    "```output", "▁print", "print", "def", "▁def", "return", "▁return",
    "▁import", "ing", "▁=", "▁+", "python", "boxed", "\\boxed", "▁▁", "▁▁▁▁",
    "solution",
)

_SPM_SPACE = "\u2581"  # "▁", SentencePiece's visible space

# llama-cpp-python's detokenize copies each piece through a 32-byte buffer
# and asserts the piece fits, so no token text may be longer than that.
MAX_TOKEN_BYTES = 32

def _gpt2_byte_alphabet() -> list[str]:
    """GPT-2's reversible byte-to-unicode map, as a list indexed by byte.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map, in
    byte order, to the code points from U+0100 upwards.  llama.cpp decodes
    "gpt2" vocabularies with exactly this map.
    """
    printable = set(range(ord("!"), ord("~") + 1))
    printable |= set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    alphabet: list[str] = []
    extra = 0
    for b in range(256):
        if b in printable:
            alphabet.append(chr(b))
        else:
            alphabet.append(chr(256 + extra))
            extra += 1
    return alphabet


@dataclass
class Vocab:
    """Everything the writer needs to know about a tokenizer."""

    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    bos_id: int
    eos_id: int
    unk_id: int | None
    suppressed: list[int]  # token ids whose logits are pushed far down


def _pad_vocab(tokens: list[str], types: list[int], scores: list[float] | None) -> None:
    """Append unused ``[PADn]`` tokens until the vocabulary is a multiple of 32.

    The vocabulary size is the row count of output.weight; the CPU repacking
    kernels only take matrices whose row count is a multiple of their
    interleave width (4 or 8).  Real checkpoints pad the same way (Qwen2's
    GGUFs carry UNUSED ``[PADn]`` tokens); UNUSED rather than CONTROL keeps
    llama.cpp from logging one "control token is not EOG" line per pad.
    """
    n = 0
    while len(tokens) % 32:
        tokens.append(f"[PAD{n}]")
        types.append(int(gguf.TokenType.UNUSED))
        if scores is not None:
            scores.append(0.0)
        n += 1


def bpe_vocab(special_tokens: Sequence[str], special_type: int) -> Vocab:
    alphabet = _gpt2_byte_alphabet()
    tokens = list(alphabet)
    types = [int(gguf.TokenType.NORMAL)] * 256
    merges: list[str] = []
    known = set(tokens)

    # Every multi-character token is reached by merging its prefix with its
    # next symbol, so each word contributes merges for all its prefixes.
    # Merge priority is list order, so shorter pieces (added first) win.
    for word in _BPE_WORDS:
        symbols = [alphabet[b] for b in word.encode("utf-8")]
        prefix = symbols[0]
        for sym in symbols[1:]:
            merged = prefix + sym
            if merged not in known:
                merges.append(f"{prefix} {sym}")
                tokens.append(merged)
                types.append(int(gguf.TokenType.NORMAL))
                known.add(merged)
            prefix = merged

    first_special = len(tokens)
    for text in special_tokens:
        if text in known:
            raise ValueError(f"special token {text!r} collides with a vocabulary token")
        tokens.append(text)
        types.append(special_type)
    if "<|endoftext|>" in special_tokens:
        eos_text = "<|endoftext|>"
    elif "<|im_end|>" in special_tokens:
        eos_text = "<|im_end|>"
    else:
        eos_text = "<|endoftext|>"
        tokens.append(eos_text)
        types.append(int(gguf.TokenType.CONTROL))
    eos_id = tokens.index(eos_text, first_special)
    _pad_vocab(tokens, types, None)

    suppressed = [i for i in range(256) if not is_plain_ascii(i)]
    suppressed += list(range(first_special, len(tokens)))
    return Vocab(tokens, types, None, merges, bos_id=eos_id, eos_id=eos_id,
                  unk_id=None, suppressed=suppressed)


def spm_vocab(special_tokens: Sequence[str], special_type: int) -> Vocab:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [int(gguf.TokenType.UNKNOWN), int(gguf.TokenType.CONTROL), int(gguf.TokenType.CONTROL)]
    scores = [0.0, 0.0, 0.0]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(int(gguf.TokenType.BYTE))
        scores.append(0.0)

    # llama.cpp's SPM tokenizer starts from single characters and repeatedly
    # merges the adjacent pair whose concatenation is a vocabulary piece with
    # the highest score, so every prefix of a word must be a piece too.
    # Scores decrease with insertion order: shorter, earlier pieces merge first.
    pieces: list[str] = [_SPM_SPACE] + [chr(c) for c in range(ord("!"), ord("~") + 1)]
    for word in _SPM_WORDS:
        pieces.extend(word[:k] for k in range(2, len(word) + 1))
    seen = set(tokens)
    for piece in pieces:
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        types.append(int(gguf.TokenType.NORMAL))
        scores.append(-float(len(scores)))

    first_special = len(tokens)
    for text in special_tokens:
        if text in seen:
            raise ValueError(f"special token {text!r} collides with a vocabulary piece")
        seen.add(text)
        tokens.append(text)
        types.append(special_type)
        scores.append(0.0)
    _pad_vocab(tokens, types, scores)

    suppressed = [0, 1, 2] + [b + 3 for b in range(256) if not is_plain_ascii(b)]
    suppressed += list(range(first_special, len(tokens)))
    return Vocab(tokens, types, scores, None, bos_id=1, eos_id=2, unk_id=0,
                  suppressed=suppressed)


def is_plain_ascii(b: int) -> bool:
    """True for bytes a well-behaved text generator may emit on their own."""
    return 0x20 <= b < 0x7F or b in (0x09, 0x0A)


