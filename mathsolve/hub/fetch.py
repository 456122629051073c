"""Downloading from the Hugging Face Hub, and making sure what came is the file asked for.

huggingface_hub is imported inside the functions: the CLI must start fast, and the common run
(file already cached) only needs `cached_file`, which never touches the network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mathsolve.errors import DownloadError
from mathsolve.hub.cache import cached_file, gguf_flaw
from mathsolve.hub.env import (
    DEFAULT_REVISION,
    cache_root,
    free_disk_bytes,
    hub_endpoint,
    metadata_timeout,
    offline_mode,
    repo_dir,
    resolve_url,
)
from mathsolve.hub.failures import by_hand, explain
from mathsolve.hub.parts import split_parts
from mathsolve.hub.progress import DownloadProgress, SilentProgress, bar_class
from mathsolve.hub.removal import link_target, unlink_entries
from mathsolve.sizes import format_size


def list_gguf_files(repo_id: str) -> dict[str, int | None]:
    """Name -> size in bytes of every `.gguf` file in the repo (on `main`), sorted by name.

    One repo-info request: unlike the paginated tree listing, huggingface_hub does not retry it
    with backoff, so an unreachable Hub fails in one round trip rather than after 20+ seconds.
    """
    page = f"{hub_endpoint()}/{repo_id}"
    if offline_mode():
        raise DownloadError(
            f"cannot list the files of {repo_id}: HF_HUB_OFFLINE is set; unset it or browse {page}"
        )
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=hub_endpoint()).model_info(
            repo_id, revision=DEFAULT_REVISION, files_metadata=True, timeout=metadata_timeout()
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes a one-line DownloadError
        raise explain(exc, repo_id=repo_id, filename=None, url=page) from exc
    sizes: dict[str, int | None] = {}
    for sibling in info.siblings or []:
        if sibling.rfilename.lower().endswith(".gguf"):
            # For LFS files the LFS size is the real file size; `size` is the same on today's Hub.
            sizes[sibling.rfilename] = sibling.lfs.size if sibling.lfs is not None else sibling.size
    return dict(sorted(sizes.items()))


def download(
    repo_id: str,
    filename: str,
    *,
    size: int | None = None,
    progress: DownloadProgress | None = None,
) -> Path:
    """The cached path of `filename` from `repo_id` (revision `main`), downloading it if needed.

    A cached file is returned at once, without any network call. Otherwise the file is fetched with
    `hf_hub_download` into the standard cache, reporting to `progress` (by default nothing is
    shown). huggingface_hub writes to a temporary `.incomplete` file, resumes with HTTP Range after
    a dropped connection within the call, deletes the partial file on failure and renames the file
    into place only when complete, so no partial file is ever left where `cached_file` looks.

    `size` is an exact size known from elsewhere, used when the Hub announces none. A `.gguf` file
    must prove to be a complete GGUF model of the size the Hub announced (else `size`): whatever
    the Hub, or a proxy on the way, sent instead is deleted again, and the call fails.

    A model split across files (`NAME-00001-of-00003.gguf`, see `split_parts`) is fetched whole:
    every part, into one snapshot folder; the path returned is the first part's, the one
    llama.cpp is given (it opens the others beside it).
    """
    found = cached_file(repo_id, filename, size=size)
    if found is not None:
        return found
    url = resolve_url(repo_id, filename)
    if offline_mode():
        missing = "" if len(split_parts(filename)) == 1 else " (or not all the parts of the model)"
        raise DownloadError(
            f"HF_HUB_OFFLINE is set and {filename} from {repo_id} is not in the cache{missing} "
            f"({cache_root()}); unset HF_HUB_OFFLINE to download it, or {by_hand(url)}"
        )
    shown = progress if progress is not None else SilentProgress()
    parts = split_parts(filename)
    try:
        if len(parts) > 1:
            return _fetch_parts(repo_id, parts, progress=shown)
        return _fetch(repo_id, filename, url, size=size, progress=shown)
    except DownloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a one-line DownloadError
        raise explain(exc, repo_id=repo_id, filename=filename, url=url) from exc


def _fetch_parts(repo_id: str, parts: list[str], *, progress: DownloadProgress) -> Path:
    """Every part of a split model, into the snapshot folder of the first. The Hub is asked for
    every part's size first, so a model that cannot fit is refused before its first byte."""
    missing = 0
    for part in parts:
        with _explained(repo_id, part, resolve_url(repo_id, part)) as url:
            metadata = _metadata(url)
        if not (repo_dir(repo_id) / "blobs" / metadata.etag).is_file():
            missing += metadata.size or 0
    _check_disk_space(f"{parts[0]} with its {len(parts) - 1} other parts", missing)
    first = _fetch(repo_id, parts[0], resolve_url(repo_id, parts[0]), size=None, progress=progress)
    # The others at the very commit the first came from (main may move meanwhile): same folder.
    commit = first.relative_to(repo_dir(repo_id) / "snapshots").parts[0]
    for part in parts[1:]:
        with _explained(repo_id, part, resolve_url(repo_id, part, commit)) as url:
            _fetch(repo_id, part, url, size=None, progress=progress, revision=commit)
    return first


@contextmanager
def _explained(repo_id: str, filename: str, url: str) -> Iterator[str]:
    """Yields `url`; any failure inside becomes the one-line DownloadError naming this file."""
    try:
        yield url
    except DownloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a one-line DownloadError
        raise explain(exc, repo_id=repo_id, filename=filename, url=url) from exc


def _metadata(url: str):
    """The Hub's answer to one HEAD request without retries, checked to come from a Hub.

    hf_hub_download answers an unreachable Hub by retrying with exponential backoff (over 20 s)
    before it gives up; this fails in one round trip, and it tells us the size, to check the
    free disk space before writing anything.
    """
    from huggingface_hub import get_hf_file_metadata

    endpoint = hub_endpoint()
    metadata = get_hf_file_metadata(url, timeout=metadata_timeout(), endpoint=endpoint)
    if metadata.commit_hash is None or metadata.etag is None:
        raise DownloadError(
            f"{endpoint} did not answer like a Hugging Face Hub (no X-Repo-Commit or ETag header "
            f"for {url}); check HF_ENDPOINT"
        )
    return metadata


def _fetch(
    repo_id: str, filename: str, url: str, *, size: int | None, progress: DownloadProgress,
    revision: str = DEFAULT_REVISION,
) -> Path:
    """Check the file on the Hub, download it with hf_hub_download, then check what came."""
    from huggingface_hub import hf_hub_download

    endpoint = hub_endpoint()
    metadata = _metadata(url)
    expected = _expected_size(announced=metadata.size, catalog=size)
    folder = repo_dir(repo_id)
    blob = folder / "blobs" / metadata.etag
    pointer = folder / "snapshots" / metadata.commit_hash / filename
    # hf_hub_download returns a snapshot entry or blob already in place without looking at it:
    # one that fails the check (an error page saved earlier, a cut-short blob) is fetched afresh.
    force = any(path.is_file() and gguf_flaw(path, filename, expected) for path in (pointer, blob))
    already_there = set() if force else {path for path in (pointer, blob) if os.path.lexists(path)}
    if force or blob not in already_there:
        _check_disk_space(filename, metadata.size)
    _sweep_orphan_partials(folder)
    try:
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_root(),
            endpoint=endpoint,
            etag_timeout=metadata_timeout(),
            tqdm_class=bar_class(progress, filename),
            force_download=force,
        )
    finally:
        progress.stop()
    _check_download(repo_id, filename, Path(path), expected, keep=already_there)
    return Path(path)


def _expected_size(*, announced: int | None, catalog: int | None) -> int | None:
    """The size the download must have: the one the Hub announces for this very file, else the
    catalog's. The Hub wins when they differ: a file replaced upstream is still the model the
    repository now serves, and what it sends is checked against what it announced."""
    return announced if announced is not None else catalog


def _check_download(
    repo_id: str, filename: str, path: Path, expected: int | None, *, keep: set[Path]
) -> None:
    """Make sure a fresh download is a complete GGUF model; else delete it and say what came.

    A 71-byte HTML page served under a model's name would otherwise be listed as downloaded and
    fail later, inside llama.cpp. Only what this download created is deleted: `keep` holds the
    snapshot entry and blob that were already in place.
    """
    problem = gguf_flaw(path, filename, expected)
    if problem is None and filename.lower().endswith(".gguf"):
        from mathsolve.errors import ModelFileError
        from mathsolve.ggufinfo import REDOWNLOAD_HINT, read_gguf

        try:
            read_gguf(path)
        except ModelFileError as exc:
            detail = exc.message.replace(str(path), filename).replace(f" ({REDOWNLOAD_HINT})", "")
            problem = f"not a usable GGUF model ({detail})"
    if problem is None:
        return
    _discard(repo_id, path, keep=keep)
    raise DownloadError(f"the Hub sent {filename} for {repo_id}, but it is {problem}; nothing was kept")


def _discard(repo_id: str, entry: Path, *, keep: set[Path]) -> None:
    """Delete a rejected download's snapshot entry and blob, sparing those in `keep`."""
    snapshots = repo_dir(repo_id) / "snapshots"
    try:
        blob = link_target(entry) if entry.is_symlink() else None
        entries = [] if entry in keep else [entry]
        unlink_entries(snapshots, entries, spare={blob} & keep if blob else set())
    except (OSError, ValueError):  # ValueError: not inside the snapshots (cannot happen)
        pass  # best effort: `cached_file` refuses it anyway, and `mathsolve rm` can remove it


def _check_disk_space(filename: str, size: int | None) -> None:
    """Refuse to start a download that cannot fit (huggingface_hub only warns)."""
    if size is None:
        return
    free = free_disk_bytes()
    if free < size:
        raise DownloadError(
            f"not enough disk space for {filename}: it needs {format_size(size)} and {cache_root()} "
            f"has {format_size(free)} free; free some space or set HF_HUB_CACHE to a larger disk"
        )


def _sweep_orphan_partials(folder: Path) -> None:
    """Delete `.incomplete` files in the repo's blobs that no running download owns.

    huggingface_hub writes each download to a process-unique `<etag>.<id>.incomplete` file and
    deletes it on any error, but a killed process (SIGKILL, power cut) leaves it behind, and it is
    never reused. A running download holds `<cache>/.locks/<repo dir>/<etag>.lock` (a flock, which
    the kernel releases when its process dies), so a partial whose lock we can take is an orphan.
    """
    blobs = folder / "blobs"
    partials = sorted(blobs.glob("*.incomplete")) if blobs.is_dir() else []
    if not partials:
        return
    from filelock import FileLock, Timeout

    locks = folder.parent / ".locks" / folder.name
    for partial in partials:
        etag = partial.name.split(".", 1)[0]
        try:
            locks.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(locks / f"{etag}.lock"), mode=0o664)
            lock.acquire(timeout=0)  # try once: never wait for a live download
        except (Timeout, OSError):
            continue  # a live download owns it, or the lock is unusable: leave it alone
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            lock.release()
