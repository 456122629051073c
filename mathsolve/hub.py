"""Everything that talks to the Hugging Face Hub or to the local Hugging Face cache.

GGUF files go to the standard hub cache (`<cache>/models--org--name/{blobs,snapshots,refs}`), the
one every Hugging Face tool shares, so a file fetched by another tool is found here and the other
way round.

Two rules shape this module:

- huggingface_hub is imported inside the functions: the CLI must start fast, and the common run
  (file already cached) only needs `cached_file`, which never touches the network.
- huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE, HF_HOME and HF_HUB_OFFLINE once, when it is
  first imported. This module reads them at call time and passes `endpoint=` and `cache_dir=`
  explicitly, so a changed environment (a test, a long-lived process) is honoured.

Every failure leaves as a `DownloadError` with a one-line message; no traceback escapes.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from mathsolve.errors import DownloadError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"

# Same truth values as huggingface_hub's constants module.
_TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})
# Seconds to wait for the Hub's answer to a metadata request (HEAD, repo info).
_DEFAULT_METADATA_TIMEOUT = 10.0
# A full commit id: a revision that names one snapshot and nothing else.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
# Fragments of OS/resolver messages that mean "the host name did not resolve".
_DNS_FAILURE_HINTS = (
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "getaddrinfo failed",
    "no address associated",
)


# -- environment, read at call time ------------------------------------------------------------


def hub_endpoint() -> str:
    """The Hub base URL in force: HF_ENDPOINT, else https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def cache_root() -> Path:
    """The hub cache directory in force, resolved the way huggingface_hub resolves it.

    Order: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE (legacy name), $HF_HOME/hub,
    $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub.
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return _expand(explicit)
    home = os.environ.get("HF_HOME")
    if home:
        return _expand(home) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return _expand(xdg) / "huggingface" / "hub"


def free_disk_bytes() -> int:
    """Free bytes on the disk that holds the hub cache (which may not exist yet)."""
    path = cache_root()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def resolve_url(repo_id: str, filename: str, revision: str = DEFAULT_REVISION) -> str:
    """The direct download URL of a file, for users who fetch it by hand."""
    return f"{hub_endpoint()}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"


def _expand(value: str) -> Path:
    # Resolved, as hf_hub_download resolves its cache_dir: both paths we hand out then agree.
    return Path(os.path.expandvars(os.path.expanduser(value))).resolve()


def offline_mode() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE_VALUES


def _metadata_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or _DEFAULT_METADATA_TIMEOUT)
    except ValueError:
        return _DEFAULT_METADATA_TIMEOUT


def _repo_dir(repo_id: str) -> Path:
    """The repo's folder in the cache, named as huggingface_hub names it."""
    return cache_root() / ("models--" + repo_id.replace("/", "--"))


# -- public API --------------------------------------------------------------------------------


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
    """
    good, _broken = _find_copy(repo_id, filename, revision, size)
    return good


def broken_cached_file(repo_id: str, filename: str, *, size: int | None = None) -> Path | None:
    """A cached copy that `cached_file` refuses (not a GGUF, wrong size), when no good one exists.

    What `mathsolve models` marks broken and `mathsolve rm` removes.
    """
    good, broken = _find_copy(repo_id, filename, DEFAULT_REVISION, size)
    return broken if good is None else None


def _find_copy(
    repo_id: str, filename: str, revision: str, size: int | None
) -> tuple[Path | None, Path | None]:
    """(the first copy that passes the cheap check, the first that fails it), None where absent."""
    broken = None
    for copy in _cached_copies(repo_id, filename, revision):
        if _gguf_flaw(copy, filename, size) is None:
            return copy, None
        broken = broken or copy
    return None, broken


def _cached_copies(repo_id: str, filename: str, revision: str) -> Iterator[Path]:
    """Complete snapshot entries of a file, best first: the one `revision` names, then the rest.

    Lazy: the common case (the ref's copy is good) never lists the other snapshots.
    """
    # The cache layout is read directly (models--ORG--NAME/refs/REV -> snapshots/COMMIT/FILE),
    # so listing what is downloaded never imports huggingface_hub (`mathsolve models` stays light).
    if not _REPO_ID.fullmatch(repo_id) or not filename or ".." in Path(filename).parts or filename.startswith("/"):
        raise DownloadError(f"invalid Hugging Face repo or file name '{repo_id}' / '{filename}'")
    repo_dir = cache_root() / ("models--" + repo_id.replace("/", "--"))
    first = None
    try:
        if _COMMIT_HASH.fullmatch(revision):
            commit = revision
        else:
            ref = repo_dir / "refs" / revision
            commit = ref.read_text().strip() if ref.is_file() else None
        if commit:
            first = repo_dir / "snapshots" / commit / filename
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
    snapshots = _repo_dir(repo_id) / "snapshots"
    try:
        copies = [commit / filename for commit in snapshots.iterdir()]
        complete = [path for path in copies if path.is_file()]  # a dangling link is not a file
        return sorted(complete, key=lambda path: path.lstat().st_mtime, reverse=True)
    except OSError:
        return []


def _gguf_flaw(path: Path, filename: str, size: int | None = None) -> str | None:
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


def _shown(head: bytes) -> str:
    """The first bytes of a file as a short quoted text: '<!DOCTYPE html>' tells what came."""
    text = head.split(b"\n", 1)[0].decode("ascii", errors="replace")
    return repr("".join(c if c.isprintable() else "?" for c in text))


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
            repo_id, revision=DEFAULT_REVISION, files_metadata=True, timeout=_metadata_timeout()
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes a one-line DownloadError
        raise _explain(exc, repo_id=repo_id, filename=None, url=page) from exc
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
    console: Console | None = None,
    show_progress: bool = True,
) -> Path:
    """The cached path of `filename` from `repo_id` (revision `main`), downloading it if needed.

    A cached file is returned at once, without any network call. Otherwise the file is fetched with
    `hf_hub_download` into the standard cache, with a rich progress bar on stderr (or `console`).
    huggingface_hub writes to a temporary `.incomplete` file, resumes with HTTP Range after a
    dropped connection within the call, deletes the partial file on failure and renames the file
    into place only when complete, so no partial file is ever left where `cached_file` looks.

    `size` is an exact size known from elsewhere, used when the Hub announces none. A `.gguf` file
    must prove to be a complete GGUF model of the size the Hub announced (else `size`): whatever
    the Hub, or a proxy on the way, sent instead is deleted again, and the call fails.
    """
    found = cached_file(repo_id, filename, size=size)
    if found is not None:
        return found
    url = resolve_url(repo_id, filename)
    if offline_mode():
        raise DownloadError(
            f"HF_HUB_OFFLINE is set and {filename} from {repo_id} is not in the cache "
            f"({cache_root()}); unset HF_HUB_OFFLINE to download it, or {_by_hand(url)}"
        )
    try:
        return _fetch(repo_id, filename, url, size=size, console=console, show_progress=show_progress)
    except DownloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a one-line DownloadError
        raise _explain(exc, repo_id=repo_id, filename=filename, url=url) from exc


def remove_cached(repo_id: str, filename: str) -> int:
    """Delete a file from the cache, in every cached revision; return the bytes freed (0 if absent).

    Removes the snapshot entries (symlinks, or plain copies where the cache has no symlinks) and
    the blob they point to, unless another snapshot entry still links to that blob.
    """
    if Path(filename).is_absolute() or ".." in Path(filename).parts:
        raise DownloadError(f"invalid file name '{filename}': it must be a path inside the repo")
    snapshots = _repo_dir(repo_id) / "snapshots"
    if not snapshots.is_dir():
        return 0
    try:
        return _remove_entries(snapshots, filename)
    except OSError as exc:
        raise DownloadError(
            f"could not remove {filename} of {repo_id} from {cache_root()}: {_first_line(exc)}"
        ) from exc


# -- download internals ------------------------------------------------------------------------


def _fetch(
    repo_id: str,
    filename: str,
    url: str,
    *,
    size: int | None,
    console: Console | None,
    show_progress: bool,
) -> Path:
    """Check the file on the Hub, download it with hf_hub_download, then check what came."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download

    endpoint = hub_endpoint()
    # One HEAD request without retries first. hf_hub_download answers an unreachable Hub by
    # retrying with exponential backoff (over 20 s) before it gives up; this fails in one round
    # trip, and it tells us the size, to check the free disk space before writing anything.
    metadata = get_hf_file_metadata(url, timeout=_metadata_timeout(), endpoint=endpoint)
    if metadata.commit_hash is None or metadata.etag is None:
        raise DownloadError(
            f"{endpoint} did not answer like a Hugging Face Hub (no X-Repo-Commit or ETag header "
            f"for {url}); check HF_ENDPOINT"
        )
    expected = _expected_size(repo_id, filename, url, announced=metadata.size, catalog=size)
    repo_dir = _repo_dir(repo_id)
    blob = repo_dir / "blobs" / metadata.etag
    pointer = repo_dir / "snapshots" / metadata.commit_hash / filename
    # hf_hub_download returns a snapshot entry or blob already in place without looking at it:
    # one that fails the check (an error page saved earlier, a cut-short blob) is fetched afresh.
    force = any(path.is_file() and _gguf_flaw(path, filename, expected) for path in (pointer, blob))
    already_there = set() if force else {path for path in (pointer, blob) if os.path.lexists(path)}
    if force or blob not in already_there:
        _check_disk_space(filename, metadata.size)
    _sweep_orphan_partials(repo_dir)
    sink = _ProgressSink(filename, console, enabled=show_progress)
    try:
        path = hf_hub_download(
            repo_id,
            filename,
            revision=DEFAULT_REVISION,
            cache_dir=cache_root(),
            endpoint=endpoint,
            etag_timeout=_metadata_timeout(),
            tqdm_class=sink.bar_class(),
            force_download=force,
        )
    finally:
        sink.stop()
    _check_download(repo_id, filename, Path(path), expected, keep=already_there)
    return Path(path)


def _expected_size(
    repo_id: str, filename: str, url: str, *, announced: int | None, catalog: int | None
) -> int | None:
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
    problem = _gguf_flaw(path, filename, expected)
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
    snapshots = _repo_dir(repo_id) / "snapshots"
    try:
        blob = _link_target(entry) if entry.is_symlink() else None
        entries = [] if entry in keep else [entry]
        _unlink_entries(snapshots, entries, spare={blob} & keep if blob else set())
    except (OSError, ValueError):  # ValueError: not inside the snapshots (cannot happen)
        pass  # best effort: `cached_file` refuses it anyway, and `mathsolve rm` can remove it


def _check_disk_space(filename: str, size: int | None) -> None:
    """Refuse to start a download that cannot fit (huggingface_hub only warns)."""
    if size is None:
        return
    free = free_disk_bytes()
    if free < size:
        raise DownloadError(
            f"not enough disk space for {filename}: it needs {_human(size)} and {cache_root()} "
            f"has {_human(free)} free; free some space or set HF_HUB_CACHE to a larger disk"
        )


def _sweep_orphan_partials(repo_dir: Path) -> None:
    """Delete `.incomplete` files in the repo's blobs that no running download owns.

    huggingface_hub writes each download to a process-unique `<etag>.<id>.incomplete` file and
    deletes it on any error, but a killed process (SIGKILL, power cut) leaves it behind, and it is
    never reused. A running download holds `<cache>/.locks/<repo dir>/<etag>.lock` (a flock, which
    the kernel releases when its process dies), so a partial whose lock we can take is an orphan.
    """
    blobs = repo_dir / "blobs"
    partials = sorted(blobs.glob("*.incomplete")) if blobs.is_dir() else []
    if not partials:
        return
    from filelock import FileLock, Timeout

    locks = repo_dir.parent / ".locks" / repo_dir.name
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


class _ProgressSink:
    """The rich progress display of one download, fed by huggingface_hub through `bar_class()`.

    The live display starts only when huggingface_hub opens a bar, i.e. when bytes are about to
    flow, so a download that fails on its metadata request prints nothing.
    """

    def __init__(self, label: str, console: Console | None, *, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self._console = console
        self._progress: Progress | None = None

    def bar_class(self) -> type[_RichBar]:
        """A tqdm stand-in class bound to this display (hf_hub_download wants a class)."""
        return type("BoundRichBar", (_RichBar,), {"sink": self})

    def add_task(self, total: int | None, completed: int) -> TaskID | None:
        if not self.enabled:
            return None
        progress = self._start()
        return progress.add_task(self.label, total=total, completed=completed)

    def advance(self, task: TaskID | None, amount: float) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, advance=amount)

    def set_total(self, task: TaskID | None, total: float | None) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, total=total)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _start(self) -> Progress:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._console or Console(stderr=True),
            )
            self._progress.start()
        return self._progress


class _RichBar:
    """The part of tqdm's interface that huggingface_hub's downloaders use, drawn with rich.

    hf_hub_download builds `tqdm_class(desc=, total=, initial=, unit=, unit_scale=)` for plain HTTP
    (Xet adds `position=`, `bar_format=`, `leave=`), uses it as a context manager, calls
    `update()`, `set_postfix_str()`, `refresh()` and `close()`, and reads/writes `total` and `n`.
    Its `desc` is a truncated URL, so the bar shows the file name instead.
    """

    sink: ClassVar[_ProgressSink]

    def __init__(
        self, *_args: Any, total: float | None = None, initial: float = 0, **_kwargs: Any
    ) -> None:
        self.n = initial or 0
        self._total = total
        self._task = self.sink.add_task(total, int(self.n))

    @property
    def total(self) -> float | None:
        return self._total

    @total.setter
    def total(self, value: float | None) -> None:
        self._total = value
        self.sink.set_total(self._task, value)

    def update(self, n: float = 1) -> None:
        self.n += n
        self.sink.advance(self._task, n)

    def update_transfer(self, n: float = 1) -> None:
        """Network bytes, reported apart by Xet; defining this makes Xet draw one bar, not two."""

    def set_transfer_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Xet's speed text for the transfer bar: rich computes its own speed."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """tqdm's free-form suffix: rich computes speed and ETA itself."""

    def refresh(self) -> None:
        """rich refreshes on its own schedule."""

    def close(self) -> None:
        """The display is stopped once by the download, after huggingface_hub is done."""

    def __enter__(self) -> _RichBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# -- error messages ----------------------------------------------------------------------------


def _explain(exc: BaseException, *, repo_id: str, filename: str | None, url: str) -> DownloadError:
    """Turn whatever huggingface_hub, httpx or the OS raised into a one-line DownloadError."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    host = hub_endpoint()
    what = filename if filename is not None else f"the file list of {repo_id}"
    if isinstance(exc, OfflineModeIsEnabled):
        # huggingface_hub saw HF_HUB_OFFLINE when it was imported, even if it is unset now.
        return DownloadError(
            f"offline mode is on (HF_HUB_OFFLINE) and {what} is not cached; {_by_hand(url)}"
        )
    if isinstance(exc, GatedRepoError):
        return DownloadError(
            f"{repo_id} is gated: accept its terms at {host}/{repo_id} and set HF_TOKEN "
            "to a token of that account"
        )
    if isinstance(exc, RemoteEntryNotFoundError):
        return DownloadError(f"{filename} is not in {repo_id} on the Hub (HTTP 404 for {url})")
    if isinstance(exc, RevisionNotFoundError):
        return DownloadError(f"{repo_id} has no revision {DEFAULT_REVISION} on the Hub (HTTP 404)")
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadError(
            f"repository {repo_id} not found on the Hub (HTTP {_status(exc)}); "
            "if it is private or gated, set HF_TOKEN"
        )
    if isinstance(exc, HfHubHTTPError):
        return _explain_status(_status(exc), repo_id=repo_id, what=what, url=url)
    if isinstance(exc, httpx2.TimeoutException):
        return DownloadError(f"{host} did not answer in time for {what}; {_by_hand(url)}")
    if isinstance(exc, httpx2.ConnectError):
        return DownloadError(
            f"cannot reach {host} ({_connect_reason(exc)}): no network? {_by_hand(url)}"
        )
    if isinstance(exc, httpx2.TransportError):  # connection dropped mid-transfer, retries exhausted
        return DownloadError(
            f"the connection to {host} broke while fetching {what} ({_first_line(exc)}); "
            f"run the command again, or {_by_hand(url)}"
        )
    if isinstance(exc, LocalEntryNotFoundError):
        # huggingface_hub's "cannot reach the Hub and not cached": the cause says why.
        if exc.__cause__ is not None:
            return _explain(exc.__cause__, repo_id=repo_id, filename=filename, url=url)
        return DownloadError(
            f"cannot reach {host} and {what} is not cached: no network? {_by_hand(url)}"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(
            f"disk full while downloading {what} into {cache_root()}; free some space "
            "or set HF_HUB_CACHE to a larger disk"
        )
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return DownloadError(
            f"the download of {what} ended short (size mismatch); run the command again"
        )
    return DownloadError(
        f"could not download {what} from {repo_id}: {type(exc).__name__}: {_first_line(exc)}"
    )


def _explain_status(status: int | None, *, repo_id: str, what: str, url: str) -> DownloadError:
    """A message for an HTTP error huggingface_hub did not classify further."""
    if status in (401, 403):
        return DownloadError(
            f"access to {repo_id} denied (HTTP {status}): it is gated or private; "
            "set HF_TOKEN to a token that can read it"
        )
    if status == 404:
        return DownloadError(f"{what} not found on the Hub (HTTP 404 for {url})")
    return DownloadError(
        f"the Hub answered HTTP {status} for {what}; try again later, or {_by_hand(url)}"
    )


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _connect_reason(exc: BaseException) -> str:
    """'connection refused', 'DNS lookup failed', ... from a connect error and its causes."""
    texts = []
    current: BaseException | None = exc
    while current is not None and len(texts) < 5:
        texts.append(str(current).lower())
        current = current.__cause__ or current.__context__
    text = " ".join(texts)
    if "refused" in text:
        return "connection refused"
    if any(hint in text for hint in _DNS_FAILURE_HINTS):
        return "DNS lookup failed"
    if "unreachable" in text:
        return "network unreachable"
    return "connection failed"


def _by_hand(url: str) -> str:
    return f"get the file by hand from {url} and run mathsolve --model PATH.gguf"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _human(size: int) -> str:
    """Decimal units, as rich's download column shows them."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


# -- cache removal internals ---------------------------------------------------------------------


def _link_target(link: Path) -> Path:
    """Where a symlink points, made absolute but not resolved further (the blob's own path)."""
    return Path(os.path.abspath(link.parent / os.readlink(link)))


def _size_if_last_link(path: Path) -> int:
    """The bytes deleting `path` frees: its size, unless another hard link keeps the data."""
    try:
        info = path.lstat()
    except OSError:
        return 0
    return info.st_size if info.st_nlink <= 1 else 0


def _delete_blob(blob: Path, repo_dir: Path) -> int:
    """Delete a repo blob no snapshot uses any more; return the bytes freed."""
    if blob.parent != repo_dir / "blobs":
        return 0  # a link we did not make: never delete outside the repo's blobs
    if blob.is_symlink():
        # Xet downloads may share one payload across repos: the repo blob is then a link into the
        # cache-wide store, whose payload goes only when no repo refers to it any more.
        target = _link_target(blob)
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


def _remove_entries(snapshots: Path, filename: str) -> int:
    """Unlink `filename` from every snapshot, then the blobs no snapshot links to any more."""
    commits = [commit for commit in snapshots.iterdir() if os.path.lexists(commit / filename)]
    return _unlink_entries(snapshots, [commit / filename for commit in commits])


def _unlink_entries(snapshots: Path, entries: list[Path], *, spare: Collection[Path] = ()) -> int:
    """Unlink snapshot entries, then their blobs no snapshot links to any more (but `spare`)."""
    repo_dir = snapshots.parent
    freed = 0
    blobs: set[Path] = set()
    for entry in entries:
        commit = snapshots / entry.relative_to(snapshots).parts[0]
        if entry.is_symlink():
            blobs.add(_link_target(entry))
        else:  # no-symlink layout: the snapshot entry is the file itself
            freed += _size_if_last_link(entry)
        entry.unlink()
        _prune_empty_dirs(entry.parent, stop=commit)
    still_linked = {_link_target(path) for path in snapshots.rglob("*") if path.is_symlink()}
    for blob in blobs - still_linked - set(spare):
        freed += _delete_blob(blob, repo_dir)
    _drop_repo_if_empty(repo_dir)
    return freed


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


def _drop_repo_if_empty(repo_dir: Path) -> None:
    """Remove the repo's folder (refs included) once it holds no file at all.

    Then the repo no longer shows in cache listings, and no ref is left naming a snapshot.
    """
    snapshots = repo_dir / "snapshots"
    blobs = repo_dir / "blobs"
    if snapshots.is_dir() and any(not path.is_dir() for path in snapshots.rglob("*")):
        return
    if blobs.is_dir() and any(blobs.iterdir()):
        return  # blobs of other revisions, or a download in progress
    shutil.rmtree(repo_dir, ignore_errors=True)
