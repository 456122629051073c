"""Running recorded blocks again: each through the tool backend its protocol routes it to."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from mathsolve.errors import UsageError
from mathsolve.formats.base import Protocol
from mathsolve.scoring.records import Block
from mathsolve.tools import Limits, ToolResult, ToolRouter

__all__ = ["default_jobs", "run_blocks"]


def default_jobs() -> int:
    """The CPUs, at most 4: each block is its own sandboxed interpreter importing sympy."""
    return max(1, min(4, os.cpu_count() or 1))


def run_blocks(blocks: list[Block], *, router: ToolRouter, protocols: Callable[[str], Protocol], jobs: int,
               on_done: Callable[[], None] | None = None) -> list[ToolResult]:
    """Run every block, ``jobs`` at a time; the results in block order.

    Each block runs alone in a fresh interpreter, except the blocks of a record whose
    protocol keeps one tool session per problem (``stateful_tool``): those run in
    order in one session, as they ran when recorded. Threads are enough: each run
    waits on a sandboxed subprocess. ``on_done()`` is called once per finished block.
    """
    def run_unit(unit: list[int]) -> list[ToolResult]:
        first = blocks[unit[0]]
        protocol = protocols(first.protocol)
        tool = router.route(first.code, fence_language=first.tool or "python", default=protocol.tool,
                            stateful=protocol.stateful_tool).tool
        limits = Limits(timeout_s=protocol.tool_timeout_s)
        if not protocol.stateful_tool:
            return [tool.run(first.code, limits=limits)]
        opener = getattr(tool, "open_session", None)
        if opener is None:
            raise UsageError(f"the {protocol.name} protocol needs a tool that keeps state across blocks, "
                             f"and the {tool.name!r} backend cannot (it has no open_session)")
        session = opener(limits)
        try:
            return [session.run(blocks[i].code) for i in unit]
        finally:
            session.close()

    results: list[ToolResult | None] = [None] * len(blocks)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_unit, unit): unit for unit in _units(blocks, protocols)}
        try:
            for future in as_completed(futures):
                for i, result in zip(futures[future], future.result()):
                    results[i] = result
                    if on_done is not None:
                        on_done()
        except BaseException:
            for future in futures:  # Ctrl-C or a sandbox failure: do not start the rest
                future.cancel()
            raise
    return results  # type: ignore[return-value]


def _units(blocks: list[Block], protocols: Callable[[str], Protocol]) -> list[list[int]]:
    """Block indices run together: a stateful protocol's record, else each block alone."""
    units: list[list[int]] = []
    for i, block in enumerate(blocks):
        stateful = getattr(protocols(block.protocol), "stateful_tool", False)
        if stateful and units and blocks[units[-1][0]].line == block.line:
            units[-1].append(i)
        else:
            units.append([i])
    return units
