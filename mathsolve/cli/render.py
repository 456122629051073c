"""Renderers: how a solve looks on stdout. Rich for terminals, plain text for pipes, JSON.

All three receive the loop's events (mathsolve.core.loop.Events) and the final record.
Rich output streams the model's prose as it is generated, shows each code block as
a syntax-highlighted panel (live while it is written), each tool output as its own
panel, and the answer emphasised with timings. NO_COLOR is honoured by rich itself.

Reasoning models (a protocol with `think_tags`, or its own `split_thinking`) write thousands
of tokens of reasoning first; it is told apart as it streams (cli/views/thinking.py) and
shown as the README's "Thinking" section says: in a terminal, collapsed to a dim live line
and a one-line summary (`--show-thinking`: streamed in full, dimmed), with the code written
while reasoning and its outputs still shown as panels and the answer last; in plain output,
each stretch of reasoning, tool calls included, becomes one bracketed line unless
`--show-thinking`, which prints the text exactly as the model saw it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from mathsolve.cli.views.thinking import ReasoningLine, ThinkingStream, count_words, has_thinking, words
from mathsolve.core.loop import NoEvents, ToolCall


def status_note(record: dict[str, Any], *, max_tokens: int | None, in_thinking: bool = False) -> str | None:
    """What a reader must know about an answer that did not come from a finished solution:
    which limit stopped it, with the value in effect and the flag that raises it.

    `length` has two causes the record tells apart: the context was full when prompt,
    generated tokens and tool output together reached the engine's n_ctx (a round gets at
    most the room left), else the round wrote its `max_tokens`."""
    status = record.get("status")
    if status == "max_rounds":
        return (f"the solution stopped at the tool-round limit, --max-rounds {record.get('rounds')} "
                "(status max_rounds); the answer may be incomplete")
    if status != "length":
        return None
    tokens = record.get("tokens") or {}
    prompt, generated, injected = (int(tokens.get(key) or 0) for key in ("prompt", "generated", "injected"))
    n_ctx = (record.get("engine") or {}).get("n_ctx")
    per_round = f"--max-tokens {max_tokens:,}" if max_tokens else "--max-tokens"
    if isinstance(n_ctx, int) and n_ctx > 0 and prompt + generated + injected >= n_ctx:
        where = (f"when the context filled up, --n-ctx {n_ctx:,} tokens (prompt {prompt:,} + generated "
                 f"{generated:,} + tool output {injected:,})")
        advice = "raise --n-ctx"
    elif isinstance(n_ctx, int):
        where, advice = f"at the round's token limit, {per_round} new tokens per round", "raise --max-tokens"
    else:  # the engine did not say its context size
        where = f"at the round's token limit ({per_round} new tokens per round) or the context's (--n-ctx)"
        advice = "raise --max-tokens or --n-ctx"
    what = "the reasoning was cut off before the answer" if in_thinking else "the solution was cut off"
    return f"{what} {where} (status length): {advice}; the answer may be incomplete"


def _reasoning_stream(protocol, question: str | None) -> ThinkingStream | None:
    """The stream splitter for a reasoning protocol; None for the others (no cost at all).
    Knowing the question, it starts from the prompt the loop built from it, which may
    itself open the reasoning."""
    if not has_thinking(protocol):
        return None
    return ThinkingStream(protocol, protocol.prompt(question) if question is not None else "")


class PlainRenderer(NoEvents):
    """The solution text exactly as the model saw it, then `Answer: ...`. A reasoning
    model's reasoning is one bracketed line per stretch unless `show_thinking`."""

    def __init__(self, out: TextIO | None = None, *, show_thinking: bool = False, max_tokens: int | None = None,
                 question: str | None = None) -> None:
        self.out = out or sys.stdout
        self.show_thinking = show_thinking
        self._max_tokens, self._question = max_tokens, question
        self._max_new_tokens: int | None = max_tokens
        self._ends_with_newline = True
        self._stream: ThinkingStream | None = None
        self._omitting = False  # inside a stretch of reasoning not shown
        self._omitted_words, self._omitted_calls, self._in_word = 0, 0, False

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self._ends_with_newline = text.endswith("\n")

    def on_start(self, protocol) -> None:
        self._stream = _reasoning_stream(protocol, self._question)
        self._max_new_tokens = self._max_tokens or protocol.max_new_tokens

    def on_text(self, text: str) -> None:
        if self._stream is None:
            self._write(text)
            return
        for role, piece in self._stream.feed(text):
            self._piece(role, piece)

    def _piece(self, role: str, piece: str) -> None:
        if self.show_thinking:
            self._write(piece)
        elif role == "thinking":
            if self._stream.tags:  # counted as the terminal counts: without the tags
                piece = piece.removeprefix(self._stream.tags[0]).removesuffix(self._stream.tags[1])
            n, self._in_word = count_words(piece, self._in_word)
            self._omitted_words += n
            self._omitting = True
        elif self._omitting and not piece.strip():
            pass  # the blank lines after reasoning: the note ends its own line
        else:
            if self._omitting:
                self._note()
                piece = piece.lstrip("\n")
            self._write(piece)

    def _note(self) -> None:
        calls = self._omitted_calls
        ran = f", {calls} tool call{'s' if calls != 1 else ''}" if calls else ""
        if not self._ends_with_newline:
            self._write("\n")
        self._write(f"[thinking not shown: {words(self._omitted_words)}{ran}; --show-thinking shows it]\n")
        self._omitting, self._omitted_words, self._omitted_calls, self._in_word = False, 0, 0, False

    def on_round_end(self, round_index: int) -> None:
        if self._stream is not None:
            for role, piece in self._stream.flush():
                self._piece(role, piece)

    def on_tool_end(self, call: ToolCall) -> None:
        if self._stream is not None:
            self._stream.observe(call.observation)
        if self._omitting:
            self._omitted_calls += 1  # run while reasoning: part of the stretch not shown
            return
        self._write(call.observation)

    def on_finish(self, record: dict[str, Any]) -> None:
        if self._omitting:
            self._note()
        if not self._ends_with_newline:
            self._write("\n")
        status = record.get("status")
        if status == "interrupted":
            return  # no answer to claim: the CLI says "interrupted" on stderr
        self._write(f"Answer: {record['answer'] or ''}\n")
        in_thinking = self._stream is not None and self._stream.inside
        note = status_note(record, max_tokens=self._max_new_tokens, in_thinking=in_thinking)
        if note:  # stdout stays one parseable `Answer:` line; the caveat goes beside it
            print(f"note: {note}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Nothing to release (the rich renderer stops its live displays)."""


class JsonRenderer(NoEvents):
    """Nothing while solving; one JSON object at the end."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def on_finish(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, ensure_ascii=False, indent=2) + "\n")
        self.out.flush()

    def close(self) -> None:
        """Nothing to release."""


# C0 controls but tab and newline, DEL, and the C1 range (0x9b is a one-byte CSI): what the
# model or its code prints must not move the cursor, clear the screen or retitle the terminal.
_CONTROL_CHARS = {c: None for c in [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]}


def _clean(text: str) -> str:
    return text.translate(_CONTROL_CHARS)


class RichRenderer(NoEvents):
    """Streams prose; fenced code becomes a live panel; outputs and answer get panels;
    reasoning is collapsed to a line (or, with `show_thinking`, streamed dimmed)."""

    FENCE = "```"
    # Output is batched: at GPU speeds a token arrives every ~2 ms, and each console.print
    # costs 60-120 us, a syntax-highlighted line ~0.5-1 ms (measured, docs/performance.md).
    # Prose is printed at most this often (complete lines included), and at once when a
    # round ends or anything else is shown; nobody sees a 30 ms delay.
    PROSE_INTERVAL_S = 0.03
    # The live code panel and the live "thinking…" line are redrawn at most this often
    # (rich's own default rate); the code panel shows the block as plain text, only the
    # lines that fit the terminal; the finished block is highlighted once, when it closes.
    LIVE_INTERVAL_S = 0.25

    def __init__(self, console=None, *, show_thinking: bool = False, max_tokens: int | None = None,
                 question: str | None = None) -> None:
        from rich.console import Console, ColorSystem
        from rich.style import Style

        self.console = console or Console()
        self.show_thinking = show_thinking
        self._max_tokens, self._question = max_tokens, question
        self._max_new_tokens: int | None = max_tokens
        self._line = ""  # the current, not yet complete line
        self._printed = 0  # characters of _line already passed on as prose
        self._pending: list[str] = []  # prose passed on but not yet printed
        self._prose_printed = 0.0  # time.monotonic() of the last prose print
        self._code: list[str] | None = None  # lines of the open code block
        self._language = "python"
        self._live = None
        self._live_drawn = 0.0  # time.monotonic() of the live panel's last redraw
        # Reasoning (see the module docstring): the splitter, the role of the text being
        # passed on, whitespace seen after reasoning and not yet placed, the stretch shown now.
        self._stream: ThinkingStream | None = None
        self._role = "model"
        self._gap = ""
        self._stretch: ReasoningLine | None = None
        self._stretches, self._thought_words = 0, 0
        self._after_summary = False  # newlines right after a summary line add nothing
        self._dim = False  # the pending prose is reasoning, printed dimmed
        colours = ColorSystem.STANDARD if self.console.color_system else None
        self._dim_on, self._dim_off = Style(dim=True).render("\0", color_system=colours).split("\0")
        from mathsolve.formats.base import Protocol

        self._protocol = Protocol()  # until on_start names the one in use: text shown as is

    # -- streaming text ---------------------------------------------------------
    def on_start(self, protocol) -> None:
        self._protocol = protocol  # it knows how its text and observations are shown
        self._stream = _reasoning_stream(protocol, self._question)
        self._max_new_tokens = self._max_tokens or protocol.max_new_tokens

    def on_text(self, text: str) -> None:
        if self._stream is None:
            self._text(self._protocol.display_text(text))
            return
        for role, piece in self._stream.feed(text):
            self._piece(role, piece)

    def _piece(self, role: str, piece: str) -> None:
        """One piece of one role, as the protocol shows it; the think tags themselves are
        markup, like fences, and not shown."""
        if role == "thinking" and self._stream is not None and self._stream.tags:
            opening, closing = self._stream.tags
            piece = piece.removeprefix(opening).removesuffix(closing)
        shown = self._protocol.display_text(piece)
        if role == "model" and self._role == "thinking" and not shown.strip():
            self._gap += shown  # reasoning may resume: do not end the stretch on whitespace
            return
        if role != self._role:
            self._switch(role)
        shown, self._gap = self._gap + shown, ""
        self._text(shown)

    def _switch(self, role: str) -> None:
        """The text changes role: the current line ends with the old role."""
        if self._code is None:
            if self._line[self._printed :]:
                self._pass(self._line[self._printed :])
            if self._line:
                self._pass("\n")
            self._line, self._printed = "", 0
        self._end_stretch()
        self._role = role

    def _text(self, text: str) -> None:
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
        self._pass(line[self._printed :] + "\n")

    def _partial_line(self) -> None:
        if self._code is not None:
            self._update_live(partial=self._line)
            return
        # Hold back what may become a fence line; pass the rest of the line on now.
        if self._printed == 0 and (self.FENCE.startswith(self._line) or self._line.startswith(self.FENCE)):
            pass
        elif len(self._line) > self._printed:
            self._pass(self._line[self._printed :])
            self._printed = len(self._line)
        if self._pending:
            now = time.monotonic()
            if now - self._prose_printed >= self.PROSE_INTERVAL_S:
                self._prose_printed = now
                self._flush()

    def _pass(self, text: str) -> None:
        """Prose passed on: the model's is printed; reasoning is counted into the stretch's
        line, and printed dimmed only with show_thinking."""
        if self._after_summary:
            text = text.lstrip("\n")
            if not text:
                return
            self._after_summary = False
        if self._role == "thinking":
            if self._stretch is None:
                text = text.lstrip("\n")  # the blank line after an opening tag
                if not text:
                    return
                self._flush()
                self._stretch = ReasoningLine(self.console, live=not self.show_thinking,
                                              interval_s=self.LIVE_INTERVAL_S)
            self._stretch.add(text)
            if not self.show_thinking:
                return
        if self._dim != (self._role == "thinking"):
            self._flush()
            self._dim = not self._dim
        self._pending.append(text)

    def _end_stretch(self) -> None:
        """The reasoning shown now ends (the answer follows, a code block opens, the round
        ends): its live line goes, a one-line summary stays."""
        if self._stretch is None:
            return
        stretch, self._stretch = self._stretch, None
        self._flush()
        stretch.close()
        if stretch.words == 0:
            return
        from rich.text import Text

        self._stretches += 1
        self._thought_words += stretch.words
        summary = f"thought for {stretch.elapsed():.1f} s · {words(stretch.words)}"
        if self._stretches > 1:
            summary += f" ({words(self._thought_words)} in all)"
        if self._stretches == 1 and not self.show_thinking:
            summary += " · --show-thinking shows it"
        self.console.print(Text(summary, style="dim italic"), highlight=False)
        self._after_summary = True

    def _flush(self) -> None:
        """Write the prose passed on so far, in one call. Prose is plain text, so it goes
        straight to the console's file (0.3 us instead of console.print's 60-120 us, which
        would also turn ":name:" into emoji), with terminal control characters removed:
        the text is the model's, and an escape sequence in it must not drive the terminal."""
        if self._pending:
            text = _clean("".join(self._pending))
            self._pending.clear()
            if self._dim and text:
                text = self._dim_on + text + self._dim_off
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

        self._end_stretch()  # code written while reasoning is shown all the same
        self._after_summary = False
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
        if self._stream is not None:
            for role, piece in self._stream.flush():
                self._piece(role, piece)
            self._gap = ""
        # A round may end inside a fence line ("```" then a stop string) or mid-block.
        if self._code is not None and self._line.startswith(self.FENCE):
            self._line = ""
            self._close_code()
        elif self._code is not None:
            self._code.append(self._line)
            self._line = ""
            self._close_code()
        elif self._line[self._printed :]:
            self._pass(self._line[self._printed :])
        if self._line:
            self._pass("\n")
        self._line, self._printed = "", 0
        self._end_stretch()  # a tool runs now, or the solution ends: not "thinking…"
        self._flush()

    # -- tools and the answer -----------------------------------------------------
    def on_tool_end(self, call: ToolCall) -> None:
        from rich.panel import Panel
        from rich.text import Text

        if self._stream is not None:
            self._stream.observe(call.observation)
        style = "green" if call.status == "ok" else "red"
        via = "" if call.route == "default" else f" ({call.route})"
        title = f"output · {call.tool}{via} · {call.status} · {call.duration_s:.2f} s"
        body = self._protocol.display_observation(call.observation)
        self._end_stretch()
        self._after_summary = False
        self._flush()
        self.console.print(Panel(Text(_clean(body)), title=title, title_align="left", border_style=style))

    def on_finish(self, record: dict[str, Any]) -> None:
        from rich.panel import Panel
        from rich.text import Text

        self._end_stretch()
        self._flush()
        if record.get("status") == "interrupted":
            return
        answer = _clean(record.get("answer") or "(no answer found)")
        self.console.print(Panel(Text(answer, style="bold"), title="answer", title_align="left", border_style="magenta", expand=False))
        in_thinking = self._stream is not None and self._stream.inside
        note = status_note(record, max_tokens=self._max_new_tokens, in_thinking=in_thinking)
        if note:
            self.console.print(Text(f"note: {note}", style="yellow"))
        t, k = record["timings"], record["tokens"]
        self.console.print(
            f"[dim]{record['status']} · {record['rounds']} round(s) · {k['generated']} tokens at "
            f"{t['tokens_per_s']:.1f} tok/s · tools {t['tool_s']:.2f} s · total {t['total_s']:.1f} s[/dim]",
            highlight=False,
        )

    def close(self) -> None:
        """Stop any live display (a solve that failed midway must not leave the terminal's
        cursor hidden)."""
        if self._stretch is not None:
            self._stretch.close()
            self._stretch = None
        if self._live is not None:
            self._live.stop()
            self._live = None


def make_renderer(mode: str, *, console=None, show_thinking: bool = False, max_tokens: int | None = None,
                  question: str | None = None):
    """`rich` for a terminal, `plain` for pipes and --plain, `json` for --json.
    `max_tokens`: the user's per-round limit (None: the protocol's), named when a solution
    is cut off; `question`: lets a reasoning model's renderer start from its prompt."""
    if mode == "json":
        return JsonRenderer()
    if mode == "plain":
        return PlainRenderer(show_thinking=show_thinking, max_tokens=max_tokens, question=question)
    return RichRenderer(console, show_thinking=show_thinking, max_tokens=max_tokens, question=question)
