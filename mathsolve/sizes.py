"""Byte counts as people read them: the one size format of every message and table.

Decimal units (1 KB = 1000 bytes), because model sizes come from the Hugging Face Hub and the
catalog, both in powers of ten, and the download bar counts the same way: a file listed at
4.08 GB is the one the bar fills to 4.08 GB, and freeing it frees 4.08 GB. Two decimals, so a
quantisation a few MB smaller than its neighbour still shows a different size in
`mathsolve models`; whole bytes below 1 KB, where a fraction means nothing. "KB" is what
`mathsolve rm` has always printed, and scripts may read that message.

(Limits stated in binary units, such as the `openai` engine's "1 MiB" stream-line bound, are
another thing: they name a power of two, and keep their own wording.)
"""

from __future__ import annotations

_UNITS = ("KB", "MB", "GB", "TB")


def format_size(nbytes: float) -> str:
    """`512 B`, `537.00 KB`, `4.08 GB`, `1.20 TB`: decimal units, two decimals above 1 KB."""
    if round(nbytes) < 1000:
        return f"{nbytes:.0f} B"
    value = float(nbytes)
    for unit in _UNITS:
        value /= 1000
        # Compared as shown: 999,999 bytes is "1.00 MB", not "1000.00 KB".
        if round(value, 2) < 1000 or unit == _UNITS[-1]:
            break
    return f"{value:.2f} {unit}"
