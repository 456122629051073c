"""Comparing a block's recorded text with ours: release formats, rendering, mismatch classes."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import Any

from mathsolve.formats.base import Protocol
from mathsolve.scoring.records import Block
from mathsolve.tools import ToolResult

__all__ = ["RELEASES", "TIMEOUT_TEXT", "classify", "configured", "inner_lines", "release_scores", "render"]

# How each ToRA release formatted an executor result (ToraProtocol switches). The first
# public release, which wrote the released output files, kept only the last line of
# stdout and cut results to 50 + "..." + 50; the current code keeps all of stdout.
RELEASES: dict[str, dict[str, Any]] = {
    "first": {"last_line_only": True, "truncate_at": 100},
    "current": {"last_line_only": False, "truncate_at": 400},
}

TIMEOUT_TEXT = "Timeout Error"
# The last traceback line: "NameError: ...", "sympy.core.sympify.SympifyError: ...", "SystemExit".
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Iteration|Warning)(?::|$)")
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")


def configured(protocol: Protocol, release: str | None) -> Protocol:
    """A copy with one release's formatting; the registry's shared instance is never touched."""
    if release is None or not all(hasattr(protocol, name) for name in RELEASES[release]):
        return protocol
    copied = copy.copy(protocol)
    for name, value in RELEASES[release].items():
        setattr(copied, name, value)
    return copied


def render(block: Block, protocol: Protocol, result: ToolResult) -> str:
    """Our text for the block, stripped as the recorded text is compared."""
    if block.result_only:
        return protocol.result_text(result).strip()
    return protocol.observation(result, index=block.index).strip()


def release_scores(blocks: list[Block], results: list[ToolResult],
                   protocols: Callable[[str], Protocol]) -> dict[str, int]:
    """How many result-text blocks each release's formatting reproduces."""
    return {
        release: sum(render(b, configured(protocols(b.protocol), release), r) == b.recorded.strip()
                     for b, r in zip(blocks, results) if b.result_only)
        for release in RELEASES
    }


def classify(recorded: str, ours: str) -> str:
    """Why two texts differ, in a few classes that point at the cause."""
    if TIMEOUT_TEXT in (recorded, ours):
        return "timeout"  # machine speed, or a program that ran near the limit
    recorded_error, our_error = bool(_ERROR_LINE.match(recorded)), bool(_ERROR_LINE.match(ours))
    if recorded_error and our_error:
        return "error-message"  # both raised; library/Python versions word errors differently
    if recorded_error or our_error:
        return "error-vs-value"
    if _same_numbers(recorded, ours):
        return "float-format"  # same values, other digits: float repr or evalf precision
    if "\n" in ours and recorded.strip() == ours.splitlines()[-1].strip():
        return "last-line"  # the recorded release kept only stdout's last line
    if "..." in recorded or "..." in ours:
        return "truncation"
    if sorted(_WORD.findall(recorded)) == sorted(_WORD.findall(ours)):
        return "term-order"  # the same names and numbers in another order: sympy's printing order
    return "value"


def _same_numbers(a: str, b: str) -> bool:
    """Equal up to the digits of their numbers (relative 1e-6), text around them identical."""
    numbers_a, numbers_b = _NUMBER.findall(a), _NUMBER.findall(b)
    if not numbers_a or len(numbers_a) != len(numbers_b) or _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return False
    return all(math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-12) for x, y in zip(numbers_a, numbers_b))


def inner_lines(a: str, b: str) -> tuple[str, str]:
    """The two texts without the first and last lines they share ("```output" ... "```")."""
    lines_a, lines_b = a.split("\n"), b.split("\n")
    while len(lines_a) > 1 and len(lines_b) > 1 and lines_a[0] == lines_b[0]:
        lines_a, lines_b = lines_a[1:], lines_b[1:]
    while len(lines_a) > 1 and len(lines_b) > 1 and lines_a[-1] == lines_b[-1]:
        lines_a, lines_b = lines_a[:-1], lines_b[:-1]
    return "\n".join(lines_a), "\n".join(lines_b)
