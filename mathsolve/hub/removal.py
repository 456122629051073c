"""Deleting files from the local Hugging Face cache without breaking what other files still use.

A snapshot entry is a symlink to a blob (or, where the cache has no symlinks, the file itself),
and several entries, in several revisions, may share one blob; Xet downloads may even share one
payload across repos. So a file goes with every entry that names it, and its blob only once no
entry links to it any more. Like the lookups, this never imports huggingface_hub unless a shared
payload is to be collected.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from pathlib import Path

from mathsolve.errors import DownloadError
from mathsolve.hub.env import cache_root, repo_dir
from mathsolve.hub.failures import first_line
from mathsolve.hub.parts import split_parts


def remove_cached(repo_id: str, filename: str) -> int:
    """Delete a file from the cache, in every cached revision; return the bytes freed (0 if absent).

    Removes the snapshot entries (symlinks, or plain copies where the cache has no symlinks) and
    the blob they point to, unless another snapshot entry still links to that blob. A model split
    across files (`split_parts`) goes with all its parts.
    """
    return sum(_remove_one(repo_id, part) for part in split_parts(filename))


def _remove_one(repo_id: str, filename: str) -> int:
    if Path(filename).is_absolute() or ".." in Path(filename).parts:
        raise DownloadError(f"invalid file name '{filename}': it must be a path inside the repo")
    snapshots = repo_dir(repo_id) / "snapshots"
    if not snapshots.is_dir():
        return 0
    try:
        commits = [commit for commit in snapshots.iterdir() if os.path.lexists(commit / filename)]
        return unlink_entries(snapshots, [commit / filename for commit in commits])
    except OSError as exc:
        raise DownloadError(
            f"could not remove {filename} of {repo_id} from {cache_root()}: {first_line(exc)}"
        ) from exc


def unlink_entries(snapshots: Path, entries: list[Path], *, spare: Collection[Path] = ()) -> int:
    """Unlink snapshot entries, then their blobs no snapshot links to any more (but `spare`)."""
    folder = snapshots.parent
    freed = 0
    blobs: set[Path] = set()
    for entry in entries:
        commit = snapshots / entry.relative_to(snapshots).parts[0]
        if entry.is_symlink():
            blobs.add(link_target(entry))
        else:  # no-symlink layout: the snapshot entry is the file itself
            freed += _size_if_last_link(entry)
        entry.unlink()
        _prune_empty_dirs(entry.parent, stop=commit)
    still_linked = {link_target(path) for path in snapshots.rglob("*") if path.is_symlink()}
    for blob in blobs - still_linked - set(spare):
        freed += _delete_blob(blob, folder)
    _drop_repo_if_empty(folder)
    return freed


def link_target(link: Path) -> Path:
    """Where a symlink points, made absolute but not resolved further (the blob's own path)."""
    return Path(os.path.abspath(link.parent / os.readlink(link)))


def _size_if_last_link(path: Path) -> int:
    """The bytes deleting `path` frees: its size, unless another hard link keeps the data."""
    try:
        info = path.lstat()
    except OSError:
        return 0
    return info.st_size if info.st_nlink <= 1 else 0


def _delete_blob(blob: Path, folder: Path) -> int:
    """Delete a repo blob no snapshot uses any more; return the bytes freed."""
    if blob.parent != folder / "blobs":
        return 0  # a link we did not make: never delete outside the repo's blobs
    if blob.is_symlink():
        # Xet downloads may share one payload across repos: the repo blob is then a link into the
        # cache-wide store, whose payload goes only when no repo refers to it any more.
        target = link_target(blob)
        blob.unlink()
        return _sweep_shared_payload(target)
    if not blob.exists():
        return 0
    freed = _size_if_last_link(blob)
    blob.unlink()
    return freed


def _sweep_shared_payload(target: Path) -> int:
    """Let huggingface_hub collect a shared payload nobody links to; bytes freed (0 if kept)."""
    try:
        from huggingface_hub.utils._shared_blobs import sweep_shared_blob
    except ImportError:  # an older huggingface_hub has no shared store: nothing to collect
        return 0
    return sweep_shared_blob(target, cache_dir=cache_root())


def _prune_empty_dirs(directory: Path, *, stop: Path) -> None:
    """Remove `directory` and its parents below `stop` while they are empty.

    `stop` is the snapshot folder itself, which stays even when empty: `refs/main` may name it,
    and huggingface_hub reports a ref to a missing snapshot as a corrupted cache.
    """
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def _drop_repo_if_empty(folder: Path) -> None:
    """Remove the repo's folder (refs included) once it holds no file at all.

    Then the repo no longer shows in cache listings, and no ref is left naming a snapshot.
    """
    snapshots = folder / "snapshots"
    blobs = folder / "blobs"
    if snapshots.is_dir() and any(not path.is_dir() for path in snapshots.rglob("*")):
        return
    if blobs.is_dir() and any(blobs.iterdir()):
        return  # blobs of other revisions, or a download in progress
    shutil.rmtree(folder, ignore_errors=True)
