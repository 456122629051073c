"""Models published as several GGUF files (llama.cpp's gguf-split: `NAME-00001-of-00003.gguf`).

llama.cpp is given the first part and opens the others itself, by name, from the same folder
(`llama_split_path`'s format "%s-%05d-of-%05d.gguf"), so every part must be downloaded, and
into the same snapshot folder. The catalog names a split model by its first part.
"""

from __future__ import annotations

import re

_PART = re.compile(r"(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf")


def split_parts(filename: str) -> list[str]:
    """Every part of the model whose first part is `filename`, in order; `[filename]` for a
    model in one file (or a name that is not a split's first part)."""
    match = _PART.fullmatch(filename)
    if match is None or int(match["index"]) != 1 or int(match["count"]) < 2:
        return [filename]
    count = int(match["count"])
    return [f"{match['prefix']}-{index:05d}-of-{count:05d}.gguf" for index in range(1, count + 1)]
