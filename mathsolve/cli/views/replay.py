"""`mathsolve replay` on the terminal: the progress bar while blocks run, then the summary.

The replay core (mathsolve.replay) reports progress through plain callbacks and returns a
ReplaySummary; this module turns both into rich output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mathsolve.replay.summary import ReplaySummary

__all__ = ["one_line", "print_summary", "progress_callbacks"]


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
