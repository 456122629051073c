"""Renderers: how a solve looks on stdout. Rich for terminals, plain text for pipes, JSON.

All three receive the loop's events (mathsolve.core.loop.Events) and the final record.
Rich output streams the model's prose as it is generated, shows each code block as
a syntax-highlighted panel (live while it is written), each tool output as its own
panel, and the answer emphasised with timings. NO_COLOR is honoured by rich itself.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from mathsolve.core.loop import NoEvents, ToolCall


# What a reader must know about an answer that did not come from a finished solution.
STATUS_NOTES = {
    "length": "the solution was cut off at the token or context limit (status length); the answer may be incomplete",
    "max_rounds": "the solution stopped at the tool-round limit (status max_rounds); the answer may be incomplete",
}


class PlainRenderer(NoEvents):
    """The solution text exactly as the model saw it, then `Answer: ...`."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self._ends_with_newline = True

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self._ends_with_newline = text.endswith("\n")

    def on_text(self, text: str) -> None:
        self._write(text)

    def on_tool_end(self, call: ToolCall) -> None:
        self._write(call.observation)

    def on_finish(self, record: dict[str, Any]) -> None:
        if not self._ends_with_newline:
            self._write("\n")
        status = record.get("status")
        if status == "interrupted":
            return  # no answer to claim: the CLI says "interrupted" on stderr
        self._write(f"Answer: {record['answer'] or ''}\n")
        note = STATUS_NOTES.get(status)
        if note:  # stdout stays one parseable `Answer:` line; the caveat goes beside it
            print(f"note: {note}", file=sys.stderr, flush=True)


class JsonRenderer(NoEvents):
    """Nothing while solving; one JSON object at the end."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def on_finish(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, ensure_ascii=False, indent=2) + "\n")
        self.out.flush()


# C0 controls but tab and newline, DEL, and the C1 range (0x9b is a one-byte CSI): what the
# model or its code prints must not move the cursor, clear the screen or retitle the terminal.
_CONTROL_CHARS = {c: None for c in [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]}


def _clean(text: str) -> str:
    return text.translate(_CONTROL_CHARS)


class RichRenderer(NoEvents):
    """Streams prose; fenced code becomes a live panel; outputs and answer get panels."""

    FENCE = "```"
    # Output is batched: at GPU speeds a token arrives every ~2 ms, and each console.print
    # costs 60-120 us, a syntax-highlighted line ~0.5-1 ms (measured, docs/performance.md).
    # Prose is printed at most this often (complete lines included), and at once when a
    # round ends or anything else is shown; nobody sees a 30 ms delay.
    PROSE_INTERVAL_S = 0.03
    # The live code panel is redrawn at most this often (rich's own default rate) and
    # shows the block as plain text, only the lines that fit the terminal; the finished
    # block is highlighted once, in one pass, when it closes.
    LIVE_INTERVAL_S = 0.25

    def __init__(self, console=None) -> None:
        from rich.console import Console

        self.console = console or Console()
        self._line = ""  # the current, not yet complete line
        self._printed = 0  # characters of _line already passed on as prose
        self._pending: list[str] = []  # prose passed on but not yet printed
        self._prose_printed = 0.0  # time.monotonic() of the last prose print
        self._code: list[str] | None = None  # lines of the open code block
        self._language = "python"
        self._live = None
        self._live_drawn = 0.0  # time.monotonic() of the live panel's last redraw
        from mathsolve.formats.base import Protocol

        self._protocol = Protocol()  # until on_start names the one in use: text shown as is

    # -- streaming text ---------------------------------------------------------
    def on_start(self, protocol) -> None:
        self._protocol = protocol  # it knows how its text and observations are shown

    def on_text(self, text: str) -> None:
        text = self._protocol.display_text(text)
        self._line += text
        if "\n" in text:  # the line held none before: look only when this chunk brings one
            while "\n" in self._line:
                line, self._line = self._line.split("\n", 1)
                self._complete_line(line)
                self._printed = 0
        self._partial_line()

    def _complete_line(self, line: str) -> None:
        if self._code is not None:
            if line.startswith(self.FENCE):
                self._close_code()
            else:
                self._code.append(line)
                self._update_live()
            return
        if line.startswith(self.FENCE) and self._printed == 0:
            self._open_code(line[3:].strip() or "python")
            return
        self._pending.append(line[self._printed :] + "\n")

    def _partial_line(self) -> None:
        if self._code is not None:
            self._update_live(partial=self._line)
            return
        # Hold back what may become a fence line; pass the rest of the line on now.
        if self._printed == 0 and (self.FENCE.startswith(self._line) or self._line.startswith(self.FENCE)):
            pass
        elif len(self._line) > self._printed:
            self._pending.append(self._line[self._printed :])
            self._printed = len(self._line)
        if self._pending:
            now = time.monotonic()
            if now - self._prose_printed >= self.PROSE_INTERVAL_S:
                self._prose_printed = now
                self._flush()

    def _flush(self) -> None:
        """Write the prose passed on so far, in one call. Prose is plain text, so it goes
        straight to the console's file (0.3 us instead of console.print's 60-120 us, which
        would also turn ":name:" into emoji), with terminal control characters removed:
        the text is the model's, and an escape sequence in it must not drive the terminal."""
        if self._pending:
            text = _clean("".join(self._pending))
            self._pending.clear()
            self.console.file.write(text)
            self.console.file.flush()

    def _code_panel(self, code: str):
        from rich.panel import Panel
        from rich.syntax import Syntax

        syntax = Syntax(_clean(code).rstrip("\n") or " ", self._language, theme="ansi_dark", word_wrap=True)
        return Panel(syntax, title=self._language, title_align="left", border_style="blue")

    def _open_code(self, language: str) -> None:
        from rich.live import Live
        from rich.panel import Panel

        self._flush()
        self._code, self._language = [], language
        if self.console.is_terminal:
            self._live = Live(Panel(" ", title=language, title_align="left", border_style="blue"),
                              console=self.console, auto_refresh=False, transient=True)
            self._live.start()
            self._live_drawn = time.monotonic()

    def _update_live(self, partial: str = "") -> None:
        if self._live is None or self._code is None:
            return
        now = time.monotonic()
        if now - self._live_drawn < self.LIVE_INTERVAL_S:
            return  # the final panel is printed whole, highlighted, when the block closes
        self._live_drawn = now
        from rich.panel import Panel
        from rich.text import Text

        room = max(1, self.console.size.height - 3)  # the panel's borders and the cursor line
        shown = (self._code + [partial])[-room:]
        body = Text(_clean("\n".join(shown)), no_wrap=False)
        self._live.update(Panel(body, title=self._language, title_align="left", border_style="blue"), refresh=True)

    def _close_code(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        code = "\n".join(self._code or [])
        self._code = None
        self.console.print(self._code_panel(code))

    def on_round_end(self, round_index: int) -> None:
        # A round may end inside a fence line ("```" then a stop string) or mid-block.
        if self._code is not None and self._line.startswith(self.FENCE):
            self._line = ""
            self._close_code()
        elif self._code is not None:
            self._code.append(self._line)
            self._line = ""
            self._close_code()
        elif self._line[self._printed :]:
            self._pending.append(self._line[self._printed :])
        if self._line:
            self._pending.append("\n")
        self._flush()
        self._line, self._printed = "", 0

    # -- tools and the answer -----------------------------------------------------
    def on_tool_end(self, call: ToolCall) -> None:
        from rich.panel import Panel
        from rich.text import Text

        style = "green" if call.status == "ok" else "red"
        via = "" if call.route == "default" else f" ({call.route})"
        title = f"output · {call.tool}{via} · {call.status} · {call.duration_s:.2f} s"
        body = self._protocol.display_observation(call.observation)
        self._flush()
        self.console.print(Panel(Text(_clean(body)), title=title, title_align="left", border_style=style))

    def on_finish(self, record: dict[str, Any]) -> None:
        from rich.panel import Panel
        from rich.text import Text

        if record.get("status") == "interrupted":
            self._flush()
            return
        answer = _clean(record.get("answer") or "(no answer found)")
        self._flush()
        self.console.print(Panel(Text(answer, style="bold"), title="answer", title_align="left", border_style="magenta", expand=False))
        note = STATUS_NOTES.get(record.get("status"))
        if note:
            self.console.print(Text(f"note: {note}", style="yellow"))
        t, k = record["timings"], record["tokens"]
        self.console.print(
            f"[dim]{record['status']} · {record['rounds']} round(s) · {k['generated']} tokens at "
            f"{t['tokens_per_s']:.1f} tok/s · tools {t['tool_s']:.2f} s · total {t['total_s']:.1f} s[/dim]",
            highlight=False,
        )


def make_renderer(mode: str, *, console=None):
    """`rich` for a terminal, `plain` for pipes and --plain, `json` for --json."""
    if mode == "json":
        return JsonRenderer()
    if mode == "plain":
        return PlainRenderer()
    return RichRenderer(console)
