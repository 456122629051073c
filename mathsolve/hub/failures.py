"""Turning whatever huggingface_hub, httpx or the OS raised into one-line DownloadErrors.

Every failure of the hub leaves as a `DownloadError` whose message says what happened and what
to do (set HF_TOKEN, free disk space, fetch the file by hand); no traceback escapes. The error
classes are imported only when there is an error to explain, so this module stays light.
"""

from __future__ import annotations

import errno

from mathsolve.errors import DownloadError
from mathsolve.hub.env import DEFAULT_REVISION, cache_root, hub_endpoint

# Fragments of OS/resolver messages that mean "the host name did not resolve".
_DNS_FAILURE_HINTS = (
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "getaddrinfo failed",
    "no address associated",
)


def explain(exc: BaseException, *, repo_id: str, filename: str | None, url: str) -> DownloadError:
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
            f"offline mode is on (HF_HUB_OFFLINE) and {what} is not cached; {by_hand(url)}"
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
        return DownloadError(f"{host} did not answer in time for {what}; {by_hand(url)}")
    if isinstance(exc, httpx2.ConnectError):
        return DownloadError(
            f"cannot reach {host} ({_connect_reason(exc)}): no network? {by_hand(url)}"
        )
    if isinstance(exc, httpx2.TransportError):  # connection dropped mid-transfer, retries exhausted
        return DownloadError(
            f"the connection to {host} broke while fetching {what} ({first_line(exc)}); "
            f"run the command again, or {by_hand(url)}"
        )
    if isinstance(exc, LocalEntryNotFoundError):
        # huggingface_hub's "cannot reach the Hub and not cached": the cause says why.
        if exc.__cause__ is not None:
            return explain(exc.__cause__, repo_id=repo_id, filename=filename, url=url)
        return DownloadError(
            f"cannot reach {host} and {what} is not cached: no network? {by_hand(url)}"
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
        f"could not download {what} from {repo_id}: {type(exc).__name__}: {first_line(exc)}"
    )


def by_hand(url: str) -> str:
    """The way out when the Hub cannot deliver: fetch the file yourself and pass its path."""
    return f"get the file by hand from {url} and run mathsolve --model PATH.gguf"


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's text (messages must stay one line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


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
        f"the Hub answered HTTP {status} for {what}; try again later, or {by_hand(url)}"
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
