"""Check a GGUF file before llama.cpp sees it, and read the few metadata keys we use.

llama.cpp reports a missing or corrupt file with a generic failure (or worse); reading
the header ourselves lets the CLI say exactly what is wrong: not a GGUF, truncated,
unsupported version. Only the header and tensor table are read, never the weights.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from mathsolve.errors import ModelFileError

MAGIC = b"GGUF"

# GGUF metadata value types -> struct format (scalars); 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

# ggml tensor types -> (bytes per block, elements per block), for the size check.
_TYPE_SIZES = {
    0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 6: (22, 32), 7: (24, 32), 8: (34, 32),
    9: (36, 32), 10: (84, 256), 11: (110, 256), 12: (144, 256), 13: (176, 256), 14: (210, 256),
    15: (292, 256), 16: (66, 256), 17: (74, 256), 18: (98, 256), 19: (50, 256), 20: (18, 32),
    21: (110, 256), 22: (82, 256), 23: (136, 256), 24: (1, 1), 25: (2, 1), 26: (4, 1),
    27: (8, 1), 28: (8, 1), 29: (56, 256), 30: (2, 1), 34: (54, 256), 35: (66, 256), 39: (17, 32),
}

# Only these keys are kept (the tokenizer arrays are skipped, not stored).
_WANTED = (
    "general.architecture", "general.name", "general.file_type", "general.alignment",
    "tokenizer.ggml.model", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
)


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


class _Reader:
    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f, self.path = f, path

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise ModelFileError(f"{self.path} is truncated (its GGUF header ends early)")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.read(self.unpack("Q")).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            if not keep:  # vocabularies hold ~10^5 strings: seek past them
                self.f.seek(self.unpack("Q"), 1)
                return None
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.unpack("I"), self.unpack("Q")
            if itype in _SCALARS and not keep:  # skip fixed-size arrays in one seek
                self.f.seek(struct.calcsize(_SCALARS[itype]) * count, 1)
                return None
            items = [self.value(itype, keep) for _ in range(count)]
            return items if keep else None
        raise ModelFileError(f"{self.path} is corrupt (unknown GGUF value type {vtype})")


def read_gguf(path: str | Path) -> GGUFInfo:
    """Validate `path` as a complete GGUF file; raise ModelFileError with a one-line reason."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"not a file: {path}")
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
        if magic != MAGIC:
            raise ModelFileError(f"{path} is not a GGUF file (magic bytes {magic!r}, expected b'GGUF')")
        r = _Reader(f, path)
        version = r.unpack("I")
        if version not in (2, 3):
            raise ModelFileError(f"{path}: unsupported GGUF version {version}")
        n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
        if n_tensors > 10**6 or n_kv > 10**6:
            raise ModelFileError(f"{path} is corrupt (implausible header counts)")
        info = GGUFInfo(path=path, version=version, n_tensors=n_tensors, file_size=size)
        for _ in range(n_kv):
            key = r.string()
            vtype = r.unpack("I")
            wanted = key in _WANTED or key.endswith(".context_length")
            value = r.value(vtype, keep=wanted)
            if wanted:
                info.metadata[key] = value
        end = 0
        for _ in range(n_tensors):
            r.string()
            dims = [r.unpack("Q") for _ in range(r.unpack("I"))]
            ttype, offset = r.unpack("I"), r.unpack("Q")
            n_elems = 1
            for d in dims:
                n_elems *= d
            block_bytes, block_elems = _TYPE_SIZES.get(ttype, (0, 1))
            end = max(end, offset + n_elems * block_bytes // block_elems)
        alignment = int(info.metadata.get("general.alignment", 32))
        data_start = -(-f.tell() // alignment) * alignment
    if data_start + end > size:
        missing = data_start + end - size
        raise ModelFileError(
            f"{path} is truncated: {missing:,} bytes of tensor data missing "
            "(an interrupted download? remove it and download again)"
        )
    return info
