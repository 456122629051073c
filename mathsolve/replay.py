"""Replaying saved solutions: re-run every recorded code block, compare the observations.

A released output file records, after each code block, the text its executor returned.
Running the same programs here through the protocol's executor and formatter and getting
the same text back is how a user checks that the installation reproduces the reference
environment (see docs/fidelity.md, "Replay").

Three record formats are recognised, line by line (JSONL):

(a) released ToRA outputs (``idx, question, code, ...``): each ``code`` entry is a whole
    solution with ```python blocks, each followed by a "```output" block;
(b) the ToRA corpus (``messages``): the same text, in the assistant messages;
(c) mathsolve's own records (``protocol, transcript, tool_calls``): each tool call's
    ``code`` and ``observation``.

For (a) and (b) the program of an output block is what the ToRA loop would have run at
that point: the last python block of the text before it. Its recorded text is compared
with ``ToraProtocol.result_text`` of a configured copy of the protocol; the first public
release formatted results differently from the current code (see RELEASES).
"""

from __future__ import annotations

import copy
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mathsolve.errors import UsageError
from mathsolve.formats.base import Protocol, last_fenced_block
from mathsolve.jsonsafe import JSONInputError, loads
from mathsolve.outfile import check_replaceable, write_jsonl
from mathsolve.sandbox import Limits
from mathsolve.textdecode import split_lines
from mathsolve.tools import ToolResult, ToolRouter

__all__ = [
    "RELEASES",
    "BadRecord",
    "Block",
    "MISMATCH_KEYS",
    "Mismatch",
    "ReplaySummary",
    "check_mismatches_destination",
    "classify",
    "configured",
    "default_jobs",
    "print_summary",
    "progress_callbacks",
    "rate_threshold",
    "read_blocks",
    "record_blocks",
    "replay_file",
    "run_blocks",
    "text_blocks",
    "write_mismatches",
]

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
# "```output" opens a recorded result at a line start; the next line of three backticks
# closes it (the loop appends "\n```output\n" + result + "\n```\n").
_OUTPUT_BLOCK = re.compile(r"^```output\n(.*?)\n```", re.MULTILINE | re.DOTALL)


class BadRecord(ValueError):
    """A line that cannot be replayed; its message goes into the summary."""


@dataclass(frozen=True)
class Block:
    """One recorded execution: the program and the text its executor returned."""

    record: Any  # the record's own id (idx, corpus id) or its 0-based position
    line: int  # 1-based line of the file
    number: int  # 1-based within the record
    code: str
    recorded: str
    protocol: str
    # (a)/(b): `recorded` is the result text and the release switches apply;
    # (c): it is the protocol's whole observation, formatted as the record's protocol did.
    result_only: bool = True
    tool: str | None = None  # the recorded tool name, if any: preferred backend
    index: int = 0  # 0-based tool call of the record (the observation may depend on it)


@dataclass
class Mismatch:
    record: Any
    line: int
    block: int
    kind: str
    recorded: str
    ours: str
    status: str  # our run's ToolResult.status
    code: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReplaySummary:
    file: str
    protocol: str
    release: str  # "first", "current", or "as recorded" (mathsolve records only)
    tool: str
    jobs: int
    records: int = 0
    blocks: int = 0
    matched: int = 0
    elapsed_s: float = 0.0
    formats: Counter = field(default_factory=Counter)
    mismatches: list[Mismatch] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "line N: why"
    warnings: list[str] = field(default_factory=list)  # how the file was decoded: replaced bytes
    release_scores: dict[str, int] = field(default_factory=dict)  # --release auto: matches per release

    @property
    def rate(self) -> float:
        return self.matched / self.blocks if self.blocks else 0.0

    @property
    def blocks_per_s(self) -> float:
        return self.blocks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def classes(self) -> dict[str, int]:
        return dict(Counter(m.kind for m in self.mismatches).most_common())

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "formats": dict(self.formats),
            "protocol": self.protocol,
            "release": self.release,
            "release_scores": self.release_scores,
            "tool": self.tool,
            "jobs": self.jobs,
            "records": self.records,
            "blocks": self.blocks,
            "matched": self.matched,
            "mismatched": len(self.mismatches),
            "rate": self.rate,
            "elapsed_s": round(self.elapsed_s, 3),
            "blocks_per_s": round(self.blocks_per_s, 3),
            "classes": self.classes,
            "errors": len(self.errors),
            "error_messages": self.errors,
        }


def default_jobs() -> int:
    """The CPUs, at most 4: each block is its own sandboxed interpreter importing sympy."""
    return max(1, min(4, os.cpu_count() or 1))


# ---------------------------------------------------------------------------
# Reading blocks
# ---------------------------------------------------------------------------


def text_blocks(text: str) -> list[tuple[str, str]]:
    """(program, recorded result) of every output block of a ToRA-style solution text."""
    found = []
    for match in _OUTPUT_BLOCK.finditer(text):
        # What the loop ran: the last python block of everything before this output.
        found.append((last_fenced_block(text[: match.start()]), match.group(1)))
    return found


def _solution_texts(record: dict[str, Any]) -> tuple[str, list[str]]:
    """The format name and the solution texts of a ToRA release or corpus record."""
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise BadRecord("field 'messages' must be a list of objects")
        contents = [m.get("content") for m in messages if m.get("role") == "assistant"]
        if not all(isinstance(c, str) for c in contents):
            raise BadRecord("assistant message content must be a string")
        # The assistant turns are consecutive pieces of one solution.
        return "tora-corpus", ["".join(contents)]
    code = record["code"]
    if not isinstance(code, list) or not all(isinstance(c, str) for c in code):
        raise BadRecord("field 'code' must be a list of strings")
    return "tora-release", code  # several entries when the file holds several samples


def _mathsolve_blocks(record: dict[str, Any], position: int, line: int,
                      protocols: Callable[[str], Protocol]) -> list[Block]:
    name = record["protocol"]
    calls = record["tool_calls"]
    if not isinstance(name, str):
        raise BadRecord("field 'protocol' must be a string")
    if not isinstance(calls, list):
        raise BadRecord("field 'tool_calls' must be a list")
    protocols(name)  # an unknown protocol makes the record unreadable here, not mid-run
    blocks = []
    for index, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("code"), str) \
                or not isinstance(call.get("observation"), str):
            raise BadRecord(f"tool call {index} must have 'code' and 'observation' strings")
        tool = call.get("tool") if isinstance(call.get("tool"), str) else None
        blocks.append(Block(record.get("id", position), line, index + 1, call["code"], call["observation"],
                            name, result_only=False, tool=tool, index=index))
    return blocks


def record_blocks(record: object, *, position: int = 0, line: int = 0, protocol: str = "tora",
                  protocols: Callable[[str], Protocol] | None = None) -> tuple[str, list[Block]]:
    """The format name and blocks of one decoded record; raises BadRecord.

    ``protocols`` looks up the protocol of a mathsolve record (default: the registry).
    """
    protocols = protocols or _registered_protocol
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    if {"protocol", "tool_calls"} <= record.keys():
        return "mathsolve", _mathsolve_blocks(record, position, line, protocols)
    if "messages" in record or "code" in record:
        kind, texts = _solution_texts(record)
        ident = record.get("idx", record.get("id", position))
        pairs = [pair for text in texts for pair in text_blocks(text)]
        return kind, [Block(ident, line, n, code, recorded, protocol)
                      for n, (code, recorded) in enumerate(pairs, start=1)]
    raise BadRecord(f"unrecognised record (fields: {', '.join(sorted(record)[:8])})")


def read_blocks(path: Path, *, protocol: str = "tora", offset: int = 0, limit: int | None = None,
                protocols: Callable[[str], Protocol] | None = None) -> tuple[ReplaySummary, list[Block]]:
    """Parse the file: a summary counting records, formats and bad lines, and the blocks.

    ``offset``/``limit`` count records (non-blank lines, unreadable ones included).
    """
    protocols = protocols or _registered_protocol
    summary = ReplaySummary(file=str(path), protocol=protocol, release="", tool="", jobs=0)
    blocks: list[Block] = []
    for position, line, record in _lines(Path(path), offset, limit, summary.warnings):
        summary.records += 1
        try:
            if isinstance(record, _Invalid):
                raise BadRecord(record.message)
            kind, found = record_blocks(record, position=position, line=line, protocol=protocol,
                                        protocols=protocols)
        except BadRecord as exc:
            summary.errors.append(f"line {line}: {exc}")
            continue
        summary.formats[kind] += 1
        blocks.extend(found)
    return summary, blocks


@dataclass
class _Invalid:
    message: str


def _lines(path: Path, offset: int, limit: int | None, warnings: list[str]) -> Iterator[tuple[int, int, object]]:
    """(0-based record position, 1-based line, decoded record or _Invalid) in the window.

    The bytes are decoded by textdecode's rules (its warnings go to ``warnings``) and
    each line is parsed by jsonsafe, so a hostile line is that record's error only.
    A whole file read without one JSON object in it is a UsageError.
    """
    from mathsolve.inputs import read_text

    decoded = read_text(path, "a records file")
    warnings.extend(decoded.warnings)
    position, objects = -1, 0
    for line_number, line in enumerate(split_lines(decoded.text), start=1):
        if not line.strip():
            continue
        position += 1
        if position < offset:
            continue
        if limit is not None and position >= offset + limit:
            return
        try:
            record = loads(line)
        except JSONInputError as exc:
            yield position, line_number, _Invalid(str(exc))
            continue
        objects += isinstance(record, dict)
        yield position, line_number, record
    # Only a window that started at the first record has seen every line of the file.
    if offset == 0 and not objects:
        raise UsageError(f"{path} has no readable records (is it JSONL?)")


def _registered_protocol(name: str) -> Protocol:
    from mathsolve import registry

    try:
        return registry.protocol(name)
    except UsageError as exc:
        raise BadRecord(exc.message) from None


# ---------------------------------------------------------------------------
# Running and comparing
# ---------------------------------------------------------------------------


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


def run_blocks(blocks: list[Block], *, router: ToolRouter, protocols: Callable[[str], Protocol], jobs: int,
               on_done: Callable[[], None] | None = None) -> list[ToolResult]:
    """Run every block, ``jobs`` at a time; the results in block order.

    Each block runs alone in a fresh interpreter, except the blocks of a record whose
    protocol keeps one tool session per problem (``stateful_tool``): those run in
    order in one session, as they ran when recorded. Threads are enough: each run
    waits on a sandboxed subprocess.
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


def _release_scores(blocks: list[Block], results: list[ToolResult],
                    protocols: Callable[[str], Protocol]) -> dict[str, int]:
    """How many result-text blocks each release's formatting reproduces."""
    return {
        release: sum(render(b, configured(protocols(b.protocol), release), r) == b.recorded.strip()
                     for b, r in zip(blocks, results) if b.result_only)
        for release in RELEASES
    }


def replay_file(path: Path, *, release: str = "auto", protocol: str = "tora", tool: str | None = None,
                jobs: int | None = None, offset: int = 0, limit: int | None = None,
                on_start: Callable[[int], None] | None = None,
                on_done: Callable[[], None] | None = None) -> ReplaySummary:
    """Re-run every block of the JSONL file at ``path`` and compare with what it recorded.

    ``release``: "first", "current" or "auto". Auto formats each result both ways and
    keeps the release that reproduces more recorded blocks; on a tie, "first" for
    released ToRA output files (that release wrote them), "current" otherwise.
    mathsolve records keep their protocol's own formatting unless a release is named.
    ``protocol`` is the protocol of formats (a) and (b). ``on_start(n_blocks)`` and
    ``on_done()`` (once per finished block) feed a progress display.
    """
    from mathsolve import registry

    if release not in ("auto", *RELEASES):
        raise UsageError(f"unknown release {release!r} (auto, {', '.join(RELEASES)})")
    if not hasattr(registry.protocol(protocol), "result_text"):
        raise UsageError(f"protocol {protocol!r} has no ToRA-style output blocks to replay")
    cache: dict[str, Protocol] = {}

    def lookup(name: str) -> Protocol:
        if name not in cache:
            cache[name] = _registered_protocol(name)
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
        summary.release_scores = _release_scores(blocks, results, lookup)
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
        kind = classify(recorded, ours) if block.result_only else classify(*_inner_lines(recorded, ours))
        summary.mismatches.append(Mismatch(block.record, block.line, block.number, kind, recorded, ours,
                                           result.status, block.code))


def _inner_lines(a: str, b: str) -> tuple[str, str]:
    """The two texts without the first and last lines they share ("```output" ... "```")."""
    lines_a, lines_b = a.split("\n"), b.split("\n")
    while len(lines_a) > 1 and len(lines_b) > 1 and lines_a[0] == lines_b[0]:
        lines_a, lines_b = lines_a[1:], lines_b[1:]
    while len(lines_a) > 1 and len(lines_b) > 1 and lines_a[-1] == lines_b[-1]:
        lines_a, lines_b = lines_a[:-1], lines_b[:-1]
    return "\n".join(lines_a), "\n".join(lines_b)


# The keys every --mismatches line holds (Mismatch.to_dict): how an earlier mismatches
# file is told from a file mathsolve must not overwrite.
MISMATCH_KEYS = frozenset({"record", "line", "block", "kind", "recorded", "ours", "status", "code"})


def check_mismatches_destination(destination: Path, source: Path) -> None:
    """Refuse a --mismatches path before replaying (see outfile.check_replaceable): UsageError."""
    check_replaceable(Path(destination), keys=MISMATCH_KEYS, sources=[Path(source)], option="--mismatches")


def write_mismatches(summary: ReplaySummary, destination: Path) -> None:
    """Every mismatch as one JSON line (record, line, block, kind, recorded, ours, status, code).

    The file is replaced atomically; it may not be the replayed file, a directory, or an
    existing file that is not an earlier mismatches file (UsageError). OSError -> IOFailure.
    """
    write_jsonl((mismatch.to_dict() for mismatch in summary.mismatches), Path(destination), keys=MISMATCH_KEYS,
                sources=[Path(summary.file)], option="--mismatches")


def rate_threshold(value: float | None) -> float | None:
    """--min-rate as a fraction: 0.98 and 98 both mean 98%."""
    if value is None:
        return None
    if not 0 <= value <= 100:
        raise UsageError(f"--min-rate must be a fraction (0.98) or a percentage (98), not {value}")
    return value / 100 if value > 1 else value


# ---------------------------------------------------------------------------
# Showing it
# ---------------------------------------------------------------------------


def one_line(text: str) -> str:
    """A recorded or produced text on one line: newlines shown as ⏎."""
    return text.replace("\n", "⏎")


@contextmanager
def progress_callbacks(enabled: bool) -> Iterator[tuple[Callable[[int], None] | None, Callable[[], None] | None]]:
    """(on_start, on_done) driving a transient progress bar on stderr, or (None, None)."""
    if not enabled:
        yield None, None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("replay", total=None)
        yield (lambda total: progress.update(task, total=total)), (lambda: progress.advance(task))


def print_summary(summary: ReplaySummary, console: Any, *, show: int = 50) -> None:
    """The rich summary, the per-class counts and up to ``show`` mismatches.

    Recorded and produced texts are shown as plain text (never as rich markup), one
    line each, cut at the console's width.
    """
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, title="replay", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    release = summary.release
    if summary.release_scores:
        release += " (auto: " + ", ".join(f"{k} {v}" for k, v in summary.release_scores.items()) + " matched)"
    rows = [
        ("file", summary.file),
        ("format", ", ".join(f"{k} ({v})" for k, v in summary.formats.items()) or "-"),
        ("protocol / release", f"{summary.protocol} / {release}"),
        ("tool", f"{summary.tool} ({summary.jobs} parallel)"),
        ("records", str(summary.records)),
        ("blocks", str(summary.blocks)),
        ("matched", f"{summary.matched} ({100 * summary.rate:.1f}%)"),
        ("elapsed", f"{summary.elapsed_s:.1f} s ({summary.blocks_per_s:.2f} blocks/s)"),
    ]
    if summary.errors:
        rows.append(("unreadable lines", f"{len(summary.errors)} (first: {summary.errors[0]})"))
    for name, value in rows:
        table.add_row(name, Text(value))
    console.print(table)
    if not summary.mismatches:
        return
    counts = ", ".join(f"{kind} {n}" for kind, n in summary.classes.items())
    console.print(Text(f"{len(summary.mismatches)} mismatches: {counts}", style="bold"))
    for m in summary.mismatches[:show]:
        console.print(Text(f"record {m.record} block {m.block}  {m.kind}", style="yellow"),
                      no_wrap=True, overflow="ellipsis")
        for label, text in (("recorded", m.recorded), ("ours", m.ours)):
            console.print(Text(f"  {label:<9}") + Text(one_line(text)), no_wrap=True, overflow="ellipsis")
    if len(summary.mismatches) > show:
        console.print(f"... and {len(summary.mismatches) - show} more (write them all with --mismatches FILE)")
