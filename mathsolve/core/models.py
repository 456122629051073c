"""Which model a reference names: a catalog NAME[:QUANT] resolved to its GGUF in the Hugging
Face cache (downloaded first when needed, an inferred file name confirmed on the Hub), or a
path to a GGUF file, checked before llama.cpp sees it; and the catalog entry of a model a
server names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mathsolve.errors import DownloadError, UsageError

if TYPE_CHECKING:
    from mathsolve.hub import DownloadProgress


@dataclass
class ResolvedModel:
    path: str
    protocol: str
    context: int | None
    name: str | None = None
    quant: str | None = None
    repo: str | None = None


def looks_like_path(ref: str) -> bool:
    """A model reference that names a file rather than a catalog entry."""
    if ref.endswith(".gguf") or os.sep in ref or (os.altsep or "\0") in ref:
        return True
    try:
        return Path(ref).exists()
    except (OSError, ValueError):  # a name too long for the file system is no file
        return False


def resolve_model(
    ref: str,
    *,
    protocol: str | None = None,
    offline: bool = False,
    download: bool = True,
    progress: DownloadProgress | None = None,
) -> ResolvedModel:
    """Turn a catalog reference or a file path into a local GGUF path and a protocol.

    A catalog model not yet cached is downloaded, reporting to `progress` (silent when None).
    """
    from mathsolve import hub, registry

    if protocol is not None:
        registry.protocol(protocol)  # a typo fails now, not after a download
    if looks_like_path(ref):
        path = Path(ref).expanduser()
        from mathsolve.ggufinfo import read_gguf

        read_gguf(path)  # fails with a one-line reason before llama.cpp sees the file
        if protocol is None:
            card = _card_for_file(path.name)
            if card is None:
                names = ", ".join(sorted(registry.protocols()))
                raise UsageError(f"--protocol is required with a GGUF path (one of: {names})")
            protocol = card.protocol
        return ResolvedModel(path=str(path), protocol=protocol, context=None)

    card, gguf = registry.catalog().resolve(ref)
    # A cached copy that is not a GGUF counts as missing: it is fetched again rather than handed
    # to llama.cpp. The catalog's size is not a test: the Hub's file may have been replaced
    # upstream, and the download itself is checked against the size the Hub announces.
    cached = hub.cached_file(card.repo, gguf.file)
    if cached is None:
        broken = hub.broken_cached_file(card.repo, gguf.file) is not None
        missing = "is not downloaded" + (" (the cached copy is not a usable GGUF)" if broken else "")
        if offline or hub.offline_mode():
            raise DownloadError(
                f"{card.name}:{gguf.quant} {missing} and offline mode is on; "
                f"get {hub.resolve_url(card.repo, gguf.file)} and run with --model PATH.gguf"
            )
        if not download:
            raise DownloadError(f"{card.name}:{gguf.quant} {missing}; run `mathsolve pull {card.name}:{gguf.quant}`")
        if not gguf.verified:
            _confirm_file(card.repo, gguf.file)
        cached = hub.download(card.repo, gguf.file, progress=progress)
    return ResolvedModel(
        path=str(cached),
        protocol=protocol or card.protocol,
        context=card.context,
        name=card.name,
        quant=gguf.quant,
        repo=card.repo,
    )


def card_for_served_model(model_id: str):
    """The catalog card of a model id as a server names it: a catalog name, the original
    checkpoint (vLLM serves `llm-agents/tora-code-34b-v1.0`), its last path part, or a
    catalog GGUF file name (llama_cpp.server names a model by its file path)."""
    from mathsolve import registry

    wanted = model_id.strip().rstrip("/").lower()
    base = wanted.rsplit("/", 1)[-1]
    for card in registry.catalog():
        checkpoint = card.checkpoint.lower()
        if wanted in (card.name, checkpoint) or base == checkpoint.rsplit("/", 1)[-1]:
            return card
    return _card_for_file(model_id.replace("\\", "/").rsplit("/", 1)[-1])


def _card_for_file(filename: str):
    from mathsolve import registry

    for card in registry.catalog():
        if any(f.file == filename for f in card.files.values()):
            return card
    return None


def _confirm_file(repo: str, filename: str) -> None:
    """An inferred file name is checked against the repo's listing before downloading."""
    from mathsolve import hub

    files = hub.list_gguf_files(repo)
    if filename not in files:
        listed = ", ".join(sorted(files)) or "no .gguf files"
        raise DownloadError(f"{repo} has no file {filename} (the catalog's name was inferred); it holds: {listed}")
