"""Where the Hub and the cache are: the Hugging Face settings, read from the environment at call time.

huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE, HF_HOME and HF_HUB_OFFLINE once, when it is
first imported. These functions read them on every call, and the hub passes `endpoint=` and
`cache_dir=` explicitly, so a changed environment (a test, a long-lived process) is honoured.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import quote

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"

# Same truth values as huggingface_hub's constants module.
_TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})
# Seconds to wait for the Hub's answer to a metadata request (HEAD, repo info).
_DEFAULT_METADATA_TIMEOUT = 10.0


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


def repo_dir(repo_id: str) -> Path:
    """The repo's folder in the cache, named as huggingface_hub names it."""
    return cache_root() / ("models--" + repo_id.replace("/", "--"))


def free_disk_bytes() -> int:
    """Free bytes on the disk that holds the hub cache (which may not exist yet)."""
    path = cache_root()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def resolve_url(repo_id: str, filename: str, revision: str = DEFAULT_REVISION) -> str:
    """The direct download URL of a file, for users who fetch it by hand."""
    return f"{hub_endpoint()}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"


def offline_mode() -> bool:
    """Whether HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE) forbids the network."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE_VALUES


def metadata_timeout() -> float:
    """Seconds to wait for a metadata answer: HF_HUB_ETAG_TIMEOUT, as huggingface_hub reads it."""
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or _DEFAULT_METADATA_TIMEOUT)
    except ValueError:
        return _DEFAULT_METADATA_TIMEOUT


def _expand(value: str) -> Path:
    # Resolved, as hf_hub_download resolves its cache_dir: both paths we hand out then agree.
    return Path(os.path.expandvars(os.path.expanduser(value))).resolve()
