"""The K samples of `mathsolve "QUESTION" -n K` as they run, then the vote and the winning
solution.

In a terminal: a live table, one row per sample (waiting for a slot, writing, in a code
block, done, cancelled; its round, the text written so far, its answer), under a line
with the vote so far; when the vote ends, the answers and their votes, how it ended, and
the winning sample's solution drawn as a single solve draws it (cli/render.py), answer
panel last. Piped (plain): one line per sample as it ends, the vote, then the winning
solution as the plain renderer prints it, ending with `Answer: ...`.

The view is a mathsolve.core.voting.SampleObserver: `sample_events` is called in each
sample's thread, `sample_done` in the thread that runs the vote; the rows are shared
state behind one lock, drawn by rich's refresh thread.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from mathsolve.core.loop import NoEvents, ToolCall

STOPPED = {
    "agreed": "{n} samples agreed (--early-stop {n})",
    "unbeatable": "the leading answer could no longer be overtaken",
    "time_budget": "the time budget ran out (--time-budget {budget:g} s)",
}


@dataclass
class Row:
    state: str = "waiting"  # waiting (for a slot) | writing | tool | done | cancelled
    round: int = 0
    chars: int = 0
    answer: str | None = None
    status: str = ""
    tokens: int | None = None
    seconds: float | None = None


class _SampleEvents(NoEvents):
    """One sample's loop events, kept in its row."""

    def __init__(self, row: Row, lock: threading.Lock) -> None:
        self.row, self.lock = row, lock

    def on_start(self, protocol) -> None:
        with self.lock:
            self.row.state, self.row.round = "writing", 1

    def on_text(self, text: str) -> None:
        self.row.chars += len(text)  # one writer (this sample's thread); a torn read only misdraws once

    def on_round_end(self, round_index: int) -> None:
        with self.lock:
            self.row.round = round_index + 1

    def on_tool_start(self, call: ToolCall) -> None:
        with self.lock:
            self.row.state = "tool"

    def on_tool_end(self, call: ToolCall) -> None:
        with self.lock:
            self.row.state, self.row.round = "writing", call.round + 2


class SamplesView:
    """The rows and the vote so far; `plain` prints a line per ended sample, else a live table."""

    def __init__(self, samples: int, *, plain: bool, console=None, out: TextIO | None = None,
                 time_budget: float | None = None, agree: int | None = None) -> None:
        self.samples, self.plain = samples, plain
        self.console, self.out = console, out or sys.stdout
        self.time_budget, self.agree = time_budget, agree
        self.rows = [Row() for _ in range(samples)]
        self.groups: list[Any] = []
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self._live = None

    # -- SampleObserver ------------------------------------------------------------------
    def sample_events(self, index: int) -> _SampleEvents:
        return _SampleEvents(self.rows[index], self.lock)

    def sample_done(self, index: int, record: dict[str, Any], groups: list[Any]) -> None:
        with self.lock:
            row = self.rows[index]
            row.status = record.get("status") or ""
            row.state = "cancelled" if row.status == "cancelled" else "done"
            row.answer = record.get("answer")
            row.round = record.get("rounds") or row.round
            row.tokens = (record.get("tokens") or {}).get("generated")
            row.seconds = (record.get("timings") or {}).get("total_s")
            self.groups = list(groups)
        if self.plain:
            self._write(sample_line(index, self.samples, record) + "\n")

    # -- drawing ------------------------------------------------------------------------
    def begin(self) -> None:
        if self.plain or self.console is None or not self.console.is_terminal:
            return
        from rich.live import Live

        self._live = Live(console=self.console, get_renderable=self.table, refresh_per_second=4, transient=True,
                          redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def end(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def table(self):
        """The live table: a line with the vote so far, then the rows that fit."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            rows = [Row(**vars(r)) for r in self.rows]
            groups = list(self.groups)
        counts = {state: sum(r.state == state for r in rows) for state in ("done", "writing", "tool", "waiting",
                                                                            "cancelled")}
        labels = {"done": "done", "writing": "writing", "tool": "in a code block", "waiting": "waiting",
                  "cancelled": "cancelled"}
        parts = [f"{n} {labels[state]}" for state, n in counts.items() if n or state == "done"]
        lead = f" · leading: {_clip(groups[0].answer)} ({_votes(groups[0].count)})" if groups else ""
        head = Text(f"{self.samples} samples, {time.monotonic() - self.started:.0f} s: " + ", ".join(parts) + lead,
                    style="bold")
        table = Table(box=None, padding=(0, 1), show_edge=False)
        for column, justify in (("#", "right"), ("state", "left"), ("round", "right"), ("written", "right"),
                                ("answer", "left")):
            table.add_column(column, justify=justify, style="dim" if column == "#" else None)
        room = max(3, (self.console.size.height if self.console is not None else 24) - 4)
        # Running samples first, then ended ones, then those still waiting for a slot.
        order = sorted(range(len(rows)), key=lambda i: ({"writing": 0, "tool": 0, "done": 1, "cancelled": 1,
                                                          "waiting": 2}[rows[i].state], i))
        for i in order[:room]:
            row = rows[i]
            style = {"tool": "yellow", "done": "green", "cancelled": "dim", "waiting": "dim"}.get(row.state)
            state = "code block" if row.state == "tool" else row.state
            table.add_row(str(i + 1), Text(state, style=style), str(row.round or ""), _chars(row.chars),
                          Text(_clip(row.answer) if row.answer else "", style="bold"))
        extra = [Text(f"… {len(order) - room} more", style="dim")] if len(order) > room else []
        return Group(head, table, *extra)

    def show(self, record: dict[str, Any], protocol, *, show_thinking: bool = False,
             max_tokens: int | None = None) -> None:
        """The vote, how it ended, and the winning solution."""
        from mathsolve.cli.render import PlainRenderer, RichRenderer

        vote = record.get("vote") or {}
        winner = _winner_index(record)
        line = vote_line(record, time_budget=self.time_budget, agree=self.agree)
        if self.plain:
            self._write(line + "\n")
            if winner is not None:
                self._write(f"winning solution: sample {winner + 1}\n")
            renderer = PlainRenderer(self.out, show_thinking=show_thinking, max_tokens=max_tokens,
                                     question=record.get("question"))
        else:
            self._print_votes(vote)
            self.console.print(_text(line, "dim"))
            if winner is not None:
                self.console.rule(_text(f"winning solution: sample {winner + 1}", ""), style="magenta")
            renderer = RichRenderer(self.console, show_thinking=show_thinking, max_tokens=max_tokens,
                                    question=record.get("question"))
        try:
            if winner is not None:
                replay(renderer, protocol, record)
            else:  # no sample answered: no solution to show, only the (empty) answer
                renderer.on_start(protocol)
                renderer.on_finish(record)
        finally:
            renderer.close()

    def _print_votes(self, vote: dict[str, Any]) -> None:
        from rich.table import Table
        from rich.text import Text

        groups = vote.get("groups") or []
        if not groups:
            return
        table = Table(title="votes", title_justify="left", box=None, padding=(0, 1), show_edge=False)
        for column in ("answer", "votes", "samples"):
            table.add_column(column)
        for group in groups:
            table.add_row(Text(_clip(group["answer"], 60), style="bold"), str(group["count"]),
                          ", ".join(str(i + 1) for i in group["samples"]))
        self.console.print(table)

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def sample_line(index: int, samples: int, record: dict[str, Any]) -> str:
    """`sample 3/8: 42 (finished, 2 rounds, 312 tokens, 4.1 s)`, or `... cancelled ...`."""
    tokens = (record.get("tokens") or {}).get("generated") or 0
    seconds = (record.get("timings") or {}).get("total_s") or 0.0
    status = record.get("status")
    if status == "cancelled":
        return f"sample {index + 1}/{samples}: cancelled after {tokens} tokens"
    rounds = record.get("rounds") or 0
    answer = _clip(record.get("answer")) if record.get("answer") else "(no answer)"
    return (f"sample {index + 1}/{samples}: {answer} ({status}, {rounds} round{'s' if rounds != 1 else ''}, "
            f"{tokens} tokens, {seconds:.1f} s)")


def vote_line(record: dict[str, Any], *, time_budget: float | None = None, agree: int | None = None) -> str:
    """`vote: 42 with 5 of 8 samples (6 answered) · ended early after 12.3 s: ...`."""
    vote = record.get("vote") or {}
    groups = vote.get("groups") or []
    samples = vote.get("samples") or len(record.get("samples") or [])
    if groups:
        line = f"vote: {_clip(groups[0]['answer'])} with {_votes(groups[0]['count'])} of {samples}"
    else:
        line = f"vote: no answer from any of the {samples} samples"
    line += f" ({vote.get('eligible', 0)} answered)"
    early = vote.get("early_stop")
    if early:
        cancelled = sum(s.get("status") == "cancelled" for s in record.get("samples") or [])
        reason = STOPPED.get(early["reason"], early["reason"]).format(
            n=agree or (groups[0]["count"] if groups else 0), budget=time_budget or 0.0)
        line += f" · ended after {early['after_s']:.1f} s: {reason}; {cancelled} cancelled"
    return line


def replay(renderer, protocol, record: dict[str, Any]) -> None:
    """Draw a recorded solution through a solve's renderer, as if it were being generated:
    each round's text, its end, then its code block's output."""
    renderer.on_start(protocol)
    calls: dict[int, list[dict[str, Any]]] = {}
    for call in record.get("tool_calls") or []:
        calls.setdefault(call["round"], []).append(call)
    segments = [s for s in record.get("transcript") or [] if s["role"] != "prompt"]
    rounds = sorted({s["round"] for s in segments if s.get("round") is not None} | set(calls))
    for number in rounds:
        for segment in segments:
            if segment.get("round") == number and segment["role"] in ("model", "thinking"):
                renderer.on_text(segment["text"])
        renderer.on_round_end(number)
        for call in calls.get(number, []):
            renderer.on_tool_end(ToolCall(**call))
    renderer.on_finish(record)


def _winner_index(record: dict[str, Any]) -> int | None:
    groups = (record.get("vote") or {}).get("groups") or []
    return groups[0]["samples"][0] if groups else None


def _votes(n: int) -> str:
    return f"{n} vote{'s' if n != 1 else ''}"


def _chars(n: int) -> str:
    return "" if not n else f"{n} chars" if n < 10_000 else f"{n / 1000:.0f}k chars"


def _clip(text: str | None, width: int = 30) -> str:
    """One line of the model's text, without terminal control characters."""
    from mathsolve.cli.render import _clean

    text = " ".join(_clean(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _text(message: str, style: str):
    from rich.text import Text

    return Text(message, style=style)
