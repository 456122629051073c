"""Check a GGUF file before llama.cpp sees it, and read the few metadata keys we use.

llama.cpp reports a missing or corrupt file with a generic failure (or worse); reading
the header ourselves lets the CLI say exactly what is wrong: not a GGUF, truncated,
unsupported version. Only the header and tensor table are read, never the weights.

The header is untrusted input (a download may be an HTML page, a disk may flip bits): every
length or count read from it is checked against the bytes left in the file before anything is
allocated, read or looped over, so a hostile file ends as one ModelFileError, never a
MemoryError or an endless loop.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from mathsolve.errors import ModelFileError

MAGIC = b"GGUF"
# Advice on a truncated file; a caller that has already deleted the file drops it.
REDOWNLOAD_HINT = "an interrupted download? remove it and download again"
# Magic, version, tensor count, key count: no GGUF file is shorter.
MIN_HEADER_BYTES = 24

# GGUF metadata value types -> struct format (scalars); 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# The fewest bytes one value of a type takes: a string is at least its 8-byte length, an array
# its 4-byte item type and 8-byte count. Bounds array counts by the bytes left in the file.
_MIN_BYTES = {**{t: struct.calcsize(f) for t, f in _SCALARS.items()}, _STRING: 8, _ARRAY: 12}
# The GGUF spec caps keys at 65,535 bytes; tensor names are far shorter. Names are skipped or
# read whole, so a cap keeps one hostile length from reading gigabytes into memory.
_MAX_NAME = 65_535
# Kept strings (chat templates are the longest, tens of kB): a longer one is dropped, unread.
_MAX_KEPT_STRING = 16 << 20
# Arrays inside arrays are legal, but no model nests them deeply; the cap bounds the recursion.
_MAX_NESTING = 8
# llama.cpp's GGML_MAX_DIMS: a tensor with more dimensions is refused by the loader.
_MAX_DIMS = 4
_INT64_MAX = (1 << 63) - 1
# Sanity caps on the header counts (real models hold a few thousand of each).
_MAX_COUNT = 10**6
# Bytes of the smallest key/value pair (8-byte key length, 4-byte type, a 1-byte value) and of the
# smallest tensor entry (8-byte name length, 4-byte dimension count, 4-byte type, 8-byte offset).
_MIN_KV_BYTES, _MIN_TENSOR_BYTES = 13, 24

# ggml tensor types -> (bytes per block, elements per block), for the size check.
_TYPE_SIZES = {
    0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 6: (22, 32), 7: (24, 32), 8: (34, 32),
    9: (36, 32), 10: (84, 256), 11: (110, 256), 12: (144, 256), 13: (176, 256), 14: (210, 256),
    15: (292, 256), 16: (66, 256), 17: (74, 256), 18: (98, 256), 19: (50, 256), 20: (18, 32),
    21: (110, 256), 22: (82, 256), 23: (136, 256), 24: (1, 1), 25: (2, 1), 26: (4, 1),
    27: (8, 1), 28: (8, 1), 29: (56, 256), 30: (2, 1), 34: (54, 256), 35: (66, 256), 39: (17, 32),
    40: (36, 64), 41: (18, 128),
}

# Only these keys are kept (the tokenizer arrays are skipped, not stored), with the Python type
# their value must have; a key of another type is dropped, as if absent.
_WANTED: dict[str, type] = {
    "general.architecture": str, "general.name": str, "general.file_type": int,
    "general.alignment": int, "tokenizer.ggml.model": str, "tokenizer.ggml.add_bos_token": bool,
    "tokenizer.chat_template": str,
}
# Per-architecture keys kept too (`llama.block_count`, ...): the context length, and the shape
# that sizes the KV cache (mathsolve.engines.llama checks it fits in memory before loading).
_WANTED_SUFFIXES = (".context_length", ".block_count", ".embedding_length", ".attention.head_count",
                    ".attention.head_count_kv", ".attention.key_length", ".attention.value_length")


@dataclass
class GGUFInfo:
    path: Path
    version: int
    n_tensors: int
    metadata: dict[str, Any] = field(default_factory=dict)
    file_size: int = 0

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def file_type(self) -> int | None:
        return self.metadata.get("general.file_type")

    def context_length(self) -> int | None:
        return self.metadata.get(f"{self.architecture}.context_length")

    def kv_values_per_token(self) -> int | None:
        """Numbers the KV cache stores per token (keys and values of every layer), from the
        header; None when the header does not say (then nothing is estimated)."""
        arch = self.architecture
        get = self.metadata.get
        layers, embd, heads = get(f"{arch}.block_count"), get(f"{arch}.embedding_length"), get(f"{arch}.attention.head_count")
        if not (layers and embd and heads):
            return None
        kv_heads = get(f"{arch}.attention.head_count_kv") or heads
        key = get(f"{arch}.attention.key_length") or embd // heads
        value = get(f"{arch}.attention.value_length") or embd // heads
        return layers * kv_heads * (key + value)


class _Reader:
    """Reads the header of an open file of `size` bytes, refusing lengths that overrun it.

    The position is counted here rather than asked of the file: a vocabulary is ~10^5 strings,
    and a `tell()` per string would double the time the header takes.
    """

    def __init__(self, f: BinaryIO, path: Path, size: int, pos: int) -> None:
        self.f, self.path, self.size, self.pos = f, path, size, pos

    def corrupt(self, reason: str) -> ModelFileError:
        return ModelFileError(f"{self.path} is corrupt ({reason})")

    def need(self, n: int, what: str) -> None:
        """Refuse a length read from the file that reaches past its end."""
        left = self.size - self.pos
        if n > left:
            raise self.corrupt(f"{what} needs {n:,} bytes at offset {self.pos:,}, only {left:,} are left")

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise ModelFileError(f"{self.path} is truncated (its GGUF header ends early)")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.f.seek(n, os.SEEK_CUR)
        self.pos += n

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt)))[0]

    def name(self, what: str) -> str:
        """A key or tensor name: short by the spec, so read whole after a bounds check."""
        n = self.unpack("Q")
        if n > _MAX_NAME:
            raise self.corrupt(f"{what} length {n:,} at offset {self.pos - 8:,} is implausible")
        self.need(n, what)
        return self.read(n).decode("utf-8", errors="replace")

    def string(self, keep: bool) -> str | None:
        n = self.unpack("Q")
        if not keep or n > _MAX_KEPT_STRING:  # vocabularies hold ~10^5 strings: seek past them
            self.skip(n, "a string")
            return None
        self.need(n, "a string")
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string(keep)
        if vtype == _ARRAY:
            self.array(depth=0)
            return None  # no key we keep is an array
        raise self.corrupt(f"unknown GGUF value type {vtype}")

    def array(self, depth: int) -> None:
        """Skip an array, after checking its count against the bytes left."""
        if depth >= _MAX_NESTING:
            raise self.corrupt(f"arrays nested more than {_MAX_NESTING} deep")
        itype, count = self.unpack("I"), self.unpack("Q")
        if itype not in _MIN_BYTES:
            raise self.corrupt(f"unknown GGUF array item type {itype}")
        self.need(count * _MIN_BYTES[itype], f"an array of {count:,} items")
        if itype in _SCALARS:  # fixed-size items: one seek
            self.skip(count * _MIN_BYTES[itype], "an array")
            return
        if itype == _STRING:  # vocabularies: the hot loop of the whole header, kept flat
            for _ in range(count):
                self.skip(self.unpack("Q"), "a string")
            return
        for _ in range(count):  # bounded by the check above: each item takes 12 bytes or more
            self.array(depth + 1)


def read_gguf(path: str | Path) -> GGUFInfo:
    """Validate `path` as a complete GGUF file; raise ModelFileError with a one-line reason."""
    path = _expand(Path(path))
    try:
        with _open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            return _read_header(f, path, size)
    except OSError as exc:  # EIO mid-read, a file vanishing: not a bug, one line
        raise ModelFileError(f"cannot read model file {path}: {_reason(exc)}") from exc


def _expand(path: Path) -> Path:
    try:
        return path.expanduser()
    except RuntimeError:  # "~nobody/x": no such home; the open then says the file is missing
        return path


def _open_regular(path: Path) -> BinaryIO:
    """Open `path` for reading, refusing anything but a regular file before reading a byte.

    O_NONBLOCK keeps a FIFO from blocking the open; it changes nothing for a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {_reason(exc)}") from exc
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ModelFileError(f"cannot read model file {path}: it is {kind}")
    return os.fdopen(fd, "rb")


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EISDIR:
        return "it is a directory"
    return exc.strerror or type(exc).__name__


def _read_header(f: BinaryIO, path: Path, size: int) -> GGUFInfo:
    magic = f.read(4)
    if magic != MAGIC:
        raise ModelFileError(f"{path} is not a GGUF file (magic bytes {magic!r}, expected b'GGUF')")
    r = _Reader(f, path, size, pos=len(magic))
    version = r.unpack("I")
    if version not in (2, 3):
        raise ModelFileError(f"{path}: unsupported GGUF version {version}")
    n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise r.corrupt(f"implausible header counts: {n_tensors:,} tensors, {n_kv:,} keys")
    r.need(n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_BYTES, "the key and tensor tables")
    info = GGUFInfo(path=path, version=version, n_tensors=n_tensors, file_size=size)
    for _ in range(n_kv):
        _read_kv(r, info.metadata)
    alignment = _alignment(r, info.metadata)
    end = 0
    for _ in range(n_tensors):
        end = max(end, _tensor_end(r, alignment))
    data_start = -(-r.pos // alignment) * alignment
    if data_start + end > size:
        missing = data_start + end - size
        raise ModelFileError(f"{path} is truncated: {missing:,} bytes of tensor data missing ({REDOWNLOAD_HINT})")
    return info


def _read_kv(r: _Reader, metadata: dict[str, Any]) -> None:
    key = r.name("a key")
    vtype = r.unpack("I")
    wanted = _WANTED.get(key, int if key.endswith(_WANTED_SUFFIXES) else None)
    value = r.value(vtype, keep=wanted is not None)
    if wanted is not None and isinstance(value, wanted):
        metadata[key] = value


def _shown(name: str) -> str:
    """A name from the file, quoted and escaped for a one-line message, at most 64 characters."""
    return repr(name if len(name) <= 64 else name[:64] + "...")


def _alignment(r: _Reader, metadata: dict[str, Any]) -> int:
    """The tensor data alignment; llama.cpp refuses a file whose alignment is not a power of 2."""
    alignment = metadata.get("general.alignment", 32)
    if alignment <= 0 or alignment & (alignment - 1):
        raise r.corrupt(f"general.alignment is {alignment}, not a power of 2")
    return alignment


def _tensor_end(r: _Reader, alignment: int) -> int:
    """Read one tensor entry; return where its data ends, relative to the data section."""
    name = _shown(r.name("a tensor name"))
    n_dims = r.unpack("I")
    if n_dims > _MAX_DIMS:
        raise r.corrupt(f"tensor {name} has {n_dims} dimensions, at most {_MAX_DIMS} are allowed")
    dims = [r.unpack("Q") for _ in range(n_dims)]
    ttype, offset = r.unpack("I"), r.unpack("Q")
    if ttype not in _TYPE_SIZES:
        raise r.corrupt(f"tensor {name} has unknown type {ttype}")
    block_bytes, block_elems = _TYPE_SIZES[ttype]
    n_elems = 1
    for d in dims:
        n_elems *= d
    if n_elems > _INT64_MAX or any(d > _INT64_MAX for d in dims):
        raise r.corrupt(f"tensor {name} has {n_elems:,} elements, more than ggml can address")
    if dims and dims[0] % block_elems:
        raise r.corrupt(f"tensor {name} rows of {dims[0]} elements do not fill whole blocks of {block_elems}")
    if offset % alignment:
        raise r.corrupt(f"tensor {name} data offset {offset} is not a multiple of {alignment}")
    return offset + n_elems * block_bytes // block_elems
