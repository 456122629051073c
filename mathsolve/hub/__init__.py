"""Everything that talks to the Hugging Face Hub or to the local Hugging Face cache.

GGUF files go to the standard hub cache (`<cache>/models--org--name/{blobs,snapshots,refs}`), the
one every Hugging Face tool shares, so a file fetched by another tool is found here and the other
way round.

- `env`: where the Hub and the cache are, read from the environment at every call.
- `cache`: finding a whole downloaded file (`cached_file`), without huggingface_hub.
- `removal`: deleting a file from the cache (`remove_cached`), sparing shared blobs.
- `fetch`: listing a repo and downloading (`download`), checking what came.
- `progress`: the `DownloadProgress` a download reports to; the hub itself never draws.
- `failures`: every failure as a one-line `DownloadError`; no traceback escapes.

Importing this package imports neither huggingface_hub nor rich: the CLI must start fast.
"""

from mathsolve.hub.cache import broken_cached_file, cached_file, has_repo
from mathsolve.hub.env import (
    DEFAULT_ENDPOINT,
    DEFAULT_REVISION,
    cache_root,
    free_disk_bytes,
    hub_endpoint,
    offline_mode,
    resolve_url,
)
from mathsolve.hub.fetch import download, list_gguf_files
from mathsolve.hub.progress import DownloadProgress, SilentProgress
from mathsolve.hub.removal import remove_cached

__all__ = [
    "has_repo",
    "DEFAULT_ENDPOINT",
    "DEFAULT_REVISION",
    "DownloadProgress",
    "SilentProgress",
    "broken_cached_file",
    "cache_root",
    "cached_file",
    "download",
    "free_disk_bytes",
    "hub_endpoint",
    "list_gguf_files",
    "offline_mode",
    "remove_cached",
    "resolve_url",
]
