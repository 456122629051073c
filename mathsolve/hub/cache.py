"""Finding a downloaded file in the local Hugging Face cache, and judging whether it is whole.

The cache layout is read directly (models--ORG--NAME/refs/REV -> snapshots/COMMIT/FILE), never
through huggingface_hub: this runs before every solve and for every row of `mathsolve models`,
which must stay light (no huggingface_hub import) and never touch the network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from mathsolve.errors import DownloadError
from mathsolve.hub.env import DEFAULT_REVISION, repo_dir
from mathsolve.hub.parts import split_parts

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
# A full commit id: a revision that names one snapshot and nothing else.
_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


def cached_file(
    repo_id: str, filename: str, revision: str = DEFAULT_REVISION, *, size: int | None = None
) -> Path | None:
    """The cached copy of a file if it is complete, else None. Never touches the network.

    A snapshot entry only appears once its blob has been fully written and renamed into place
    (downloads go to a temporary `.incomplete` file first), but what was written may still be wrong:
    an error page saved by an older version or another tool, a blob cut short. A `.gguf` copy
    counts only if it starts with the GGUF magic and, when `size` (the exact bytes the catalog
    knows) is given, has that size. That costs one open and a 16-byte read, as this runs before
    every solve and for every row of `mathsolve models`; the full header check is `read_gguf`'s.
    A model split across files (`NAME-00001-of-00003.gguf`) counts only with all its parts.
    """
    good, _broken = _find_copy(repo_id, filename, revision, size)
    return good


def broken_cached_file(repo_id: str, filename: str, *, size: int | None = None) -> Path | None:
    """A cached copy that `cached_file` refuses (not a GGUF, wrong size), when no good one exists.

    What `mathsolve models` marks broken and `mathsolve rm` removes.
    """
    good, broken = _find_copy(repo_id, filename, DEFAULT_REVISION, size)
    return broken if good is None else None


def gguf_flaw(path: Path, filename: str, size: int | None = None) -> str | None:
    """Why a downloaded copy of `filename` cannot be the model, judged cheaply; None if it can.

    Only the magic bytes and the size: enough to catch an error page or a cut-short blob at the
    cost of one small read. Files other than `.gguf` have no format to check here.
    """
    if not filename.lower().endswith(".gguf"):
        return None
    from mathsolve.ggufinfo import MAGIC, MIN_HEADER_BYTES

    try:
        with path.open("rb") as f:
            head = f.read(16)
            actual = os.fstat(f.fileno()).st_size
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    if not head.startswith(MAGIC):
        return f"not a GGUF model ({actual:,} bytes, starts with {_shown(head)})"
    if size is not None and actual != size:
        return f"incomplete ({actual:,} bytes where {size:,} were expected)"
    if actual < MIN_HEADER_BYTES:
        return f"incomplete (only {actual} bytes, shorter than a GGUF header)"
    return None


def has_repo(repo_id: str) -> bool:
    """Whether anything of the repo is in the cache: one stat, so listing the catalog
    skips the repositories never downloaded (most of them) without looking at each file."""
    try:
        return repo_dir(repo_id).is_dir()
    except (OSError, ValueError):
        return False


def _find_copy(
    repo_id: str, filename: str, revision: str, size: int | None
) -> tuple[Path | None, Path | None]:
    """(the first copy that passes the cheap check, the first that fails it), None where absent.

    For a model split across files (`split_parts`), a copy of the first part counts only with
    every other part whole beside it, in the same snapshot folder, where llama.cpp looks for
    them; `size` then applies to none of them (the catalog's figure is the sum).
    """
    parts = split_parts(filename)
    broken = None
    for copy in _cached_copies(repo_id, filename, revision):
        if len(parts) == 1:
            if gguf_flaw(copy, filename, size) is None:
                return copy, None
            broken = broken or copy
            continue
        beside = [(copy.parent / Path(part).name, part) for part in parts]
        present = [(path, part) for path, part in beside if path.is_file()]
        flawed = next((path for path, part in present if gguf_flaw(path, part) is not None), None)
        if flawed is None and len(present) == len(parts):
            return copy, None
        broken = broken or flawed
    return None, broken


def _cached_copies(repo_id: str, filename: str, revision: str) -> Iterator[Path]:
    """Complete snapshot entries of a file, best first: the one `revision` names, then the rest.

    Lazy: the common case (the ref's copy is good) never lists the other snapshots.
    """
    if not _REPO_ID.fullmatch(repo_id) or not filename or ".." in Path(filename).parts or filename.startswith("/"):
        raise DownloadError(f"invalid Hugging Face repo or file name '{repo_id}' / '{filename}'")
    folder = repo_dir(repo_id)
    first = None
    try:
        if _COMMIT_HASH.fullmatch(revision):
            commit = revision
        else:
            ref = folder / "refs" / revision
            commit = ref.read_text().strip() if ref.is_file() else None
        if commit:
            first = folder / "snapshots" / commit / filename
            if first.is_file():
                yield first
    except OSError:  # unreadable cache: treat as not cached, a download will say more
        return
    if _COMMIT_HASH.fullmatch(revision):
        return  # an exact commit was asked for: no other snapshot will do
    yield from (path for path in _snapshot_copies(repo_id, filename) if path != first)


def _snapshot_copies(repo_id: str, filename: str) -> list[Path]:
    """The file from every snapshot that has it, the most recently linked first.

    `refs/main` moves to the newest commit whenever any file of the repo is downloaded, and that
    commit's snapshot only holds the files fetched since. A quantisation fetched at an older commit
    is still complete and still what the catalog names, so it counts as cached: otherwise an
    offline run would miss a file that is on disk, and an online one would re-check the Hub.
    """
    snapshots = repo_dir(repo_id) / "snapshots"
    try:
        copies = [commit / filename for commit in snapshots.iterdir()]
        complete = [path for path in copies if path.is_file()]  # a dangling link is not a file
        return sorted(complete, key=lambda path: path.lstat().st_mtime, reverse=True)
    except OSError:
        return []


def _shown(head: bytes) -> str:
    """The first bytes of a file as a short quoted text: '<!DOCTYPE html>' tells what came."""
    text = head.split(b"\n", 1)[0].decode("ascii", errors="replace")
    return repr("".join(c if c.isprintable() else "?" for c in text))
