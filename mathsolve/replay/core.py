"""Replaying one file: read its blocks, run them again, compare each result with the record."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mathsolve.errors import UsageError
from mathsolve.formats.base import Protocol
from mathsolve.replay.compare import RELEASES, classify, configured, inner_lines, release_scores, render
from mathsolve.replay.runner import default_jobs, run_blocks
from mathsolve.replay.summary import Mismatch, ReplaySummary
from mathsolve.scoring.records import BadRecord, Block, Invalid, RecordFile, record_blocks, registered_protocol
from mathsolve.tools import ToolResult, ToolRouter

__all__ = ["read_blocks", "replay_file"]


def read_blocks(path: Path, *, protocol: str = "tora", offset: int = 0, limit: int | None = None,
                protocols: Callable[[str], Protocol] | None = None) -> tuple[ReplaySummary, list[Block]]:
    """Parse the file: a summary counting records, formats and bad lines, and the blocks.

    ``offset``/``limit`` count records (non-blank lines, unreadable ones included).
    """
    protocols = protocols or registered_protocol
    summary = ReplaySummary(file=str(path), protocol=protocol, release="", tool="", jobs=0)
    blocks: list[Block] = []
    records = RecordFile(Path(path))
    summary.warnings.extend(records.warnings)
    for entry in records.lines(offset, limit):
        summary.records += 1
        try:
            if isinstance(entry.record, Invalid):
                raise BadRecord(entry.record.message)
            kind, found = record_blocks(entry.record, position=entry.position, line=entry.number,
                                        protocol=protocol, protocols=protocols)
        except BadRecord as exc:
            summary.errors.append(f"line {entry.number}: {exc}")
            continue
        summary.formats[kind] += 1
        blocks.extend(found)
    return summary, blocks


def replay_file(path: Path, *, release: str = "auto", protocol: str = "tora", tool: str | None = None,
                jobs: int | None = None, offset: int = 0, limit: int | None = None,
                on_start: Callable[[int], None] | None = None,
                on_done: Callable[[], None] | None = None) -> ReplaySummary:
    """Re-run every block of the JSONL file at ``path`` and compare with what it recorded.

    ``release``: "first", "current" or "auto". Auto formats each result both ways and
    keeps the release that reproduces more recorded blocks; on a tie, "first" for
    released ToRA output files (that release wrote them), "current" otherwise.
    mathsolve records keep their protocol's own formatting unless a release is named.
    ``protocol`` is the protocol of released and corpus records. ``on_start(n_blocks)``
    and ``on_done()`` (once per finished block) feed a progress display.
    """
    from mathsolve import registry

    if release not in ("auto", *RELEASES):
        raise UsageError(f"unknown release {release!r} (auto, {', '.join(RELEASES)})")
    if not hasattr(registry.protocol(protocol), "result_text"):
        raise UsageError(f"protocol {protocol!r} has no ToRA-style output blocks to replay")
    cache: dict[str, Protocol] = {}

    def lookup(name: str) -> Protocol:
        if name not in cache:
            cache[name] = registered_protocol(name)
        return cache[name]

    summary, blocks = read_blocks(Path(path), protocol=protocol, offset=offset, limit=limit, protocols=lookup)
    router = ToolRouter(registry.tools(), explicit=tool)
    summary.jobs = jobs or default_jobs()
    summary.tool = tool or lookup(protocol).tool or ""
    if on_start is not None:
        on_start(len(blocks))
    started = time.monotonic()
    results = run_blocks(blocks, router=router, protocols=lookup, jobs=summary.jobs, on_done=on_done)
    summary.elapsed_s = time.monotonic() - started

    # mathsolve records were formatted by their protocol as registered: a release
    # applies to them only when named.
    recorded_release = None if release == "auto" else release
    text_release = release
    if release == "auto":
        summary.release_scores = release_scores(blocks, results, lookup)
        default = "first" if summary.formats.get("tora-release") else "current"
        best = max(summary.release_scores.values())
        text_release = default if summary.release_scores[default] == best else \
            max(summary.release_scores, key=summary.release_scores.__getitem__)
    summary.release = text_release if summary.formats.keys() - {"mathsolve"} else recorded_release or "as recorded"

    def protocol_of(block: Block) -> Protocol:
        return configured(lookup(block.protocol), text_release if block.result_only else recorded_release)

    _compare(summary, blocks, results, protocol_of)
    return summary


def _compare(summary: ReplaySummary, blocks: list[Block], results: list[ToolResult],
             protocol_of: Callable[[Block], Protocol]) -> None:
    summary.blocks = len(blocks)
    for block, result in zip(blocks, results):
        ours, recorded = render(block, protocol_of(block), result), block.recorded.strip()
        if ours == recorded:
            summary.matched += 1
            continue
        # A whole observation is classified by what differs inside its wrapping lines.
        kind = classify(recorded, ours) if block.result_only else classify(*inner_lines(recorded, ours))
        summary.mismatches.append(Mismatch(block.record, block.line, block.number, kind, recorded, ours,
                                           result.status, block.code))
