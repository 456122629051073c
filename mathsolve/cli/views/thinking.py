"""Reasoning in a stream: which streamed text is the model's thinking, told apart as it arrives.

The loop splits each finished round with `Protocol.split_thinking` (the transcript's
"thinking" role). A renderer sees the same text in pieces of any size, a tag possibly cut
in two (`<thi` + `nk>`), and must decide as it goes. `ThinkingStream` holds back the tail
that may still grow into a tag or a header, and splits the rest exactly as
`split_thinking` would split the whole, so the terminal and the record agree.

Two paths:
- protocols that keep the base class's `split_thinking` (reasoning between `think_tags`):
  the stream keeps one bit, inside or not, and splits only the new text: O(new text) per
  piece, whatever the length of the trace;
- protocols that override it (harmony decides by channel): the stream hands the override
  everything seen so far as `before`, as the loop does.
"""

from __future__ import annotations

import time

from mathsolve.engines.base import held_back
from mathsolve.formats.base import Protocol

# A tail held back so that `display_text` and the split never see a tag cut in half:
# from an unclosed "<" with no whitespace after it (`<tool_call`, `<|end`), at most this long.
TAG_HOLD = 32
# A harmony message header, `<|start|>{header}<|message|>`, with `<|channel|>` marking its
# channel part (openai/harmony, docs/format.md, "Message format" and "Special Tokens"), is
# held whole, so the channel name and the recipient reach the protocol with their markers.
HEADER_OPENERS = ("<|start|>", "<|channel|>")
HEADER_END = "<|message|>"
HEADER_HOLD = 256


def has_thinking(protocol: Protocol) -> bool:
    """Whether the protocol's model writes reasoning a renderer should tell apart."""
    return protocol.think_tags is not None or overrides_split(protocol)


def overrides_split(protocol: Protocol) -> bool:
    return type(protocol).split_thinking is not Protocol.split_thinking


class ThinkingStream:
    """Streamed model text in, ("thinking" | "model", piece) pairs out, in order.

    `before`: the text ahead of the first piece (the prompt, when known: a template that
    opens the reasoning itself, `...<think>\\n`, starts the model inside it)."""

    def __init__(self, protocol: Protocol, before: str = "") -> None:
        self.protocol = protocol
        self.custom = overrides_split(protocol)
        self.tags = protocol.think_tags or ()
        self._tag_starts = "".join({tag[0] for tag in self.tags if tag})
        self._held = ""
        if self.custom:
            self._seen = before  # everything so far: the override reads it as `before`
            self.inside = False  # whether the last piece was reasoning
        else:
            opening, closing = self.tags
            self.inside = before.rfind(opening) > before.rfind(closing)

    @property
    def role(self) -> str:
        """The role text arriving now continues in."""
        return "thinking" if self.inside else "model"

    def feed(self, text: str) -> list[tuple[str, str]]:
        text = self._held + text
        hold = self._hold(text)
        self._held = text[len(text) - hold :] if hold else ""
        return self._split(text[: len(text) - hold])

    def flush(self) -> list[tuple[str, str]]:
        """The held tail as it stands (a round ended: nothing more will complete it)."""
        text, self._held = self._held, ""
        return self._split(text)

    def observe(self, text: str) -> None:
        """Text appended to the context that is not the model's (a tool observation): it
        moves no role of its own, but the split of what follows reads it, as in the loop."""
        if not text:
            return
        if self.custom:
            self._seen += text
        else:
            opening, closing = self.tags
            at_open, at_close = text.rfind(opening), text.rfind(closing)
            if at_open != -1 or at_close != -1:
                self.inside = at_open > at_close

    # -- internals --------------------------------------------------------------------
    def _hold(self, text: str) -> int:
        tail = text[-HEADER_HOLD:]
        if "<" not in tail:
            return 0
        hold = 0
        if self._tag_starts and any(c in tail[-TAG_HOLD:] for c in self._tag_starts):
            hold = held_back(text, self.tags)  # a think tag's beginning
        lt = tail.rfind("<")
        rest = tail[lt:]
        if len(rest) <= TAG_HOLD and ">" not in rest and not any(c.isspace() for c in rest):
            hold = max(hold, len(rest))  # an unclosed tag or special token
        if "<|" in tail:  # a header not yet ended: from its first marker after the last <|message|>
            after = tail.rfind(HEADER_END)
            after = 0 if after == -1 else after + len(HEADER_END)
            opened = min((i for i in (tail.find(o, after) for o in HEADER_OPENERS) if i != -1), default=-1)
            if opened != -1 and "\n" not in tail[opened:]:
                hold = max(hold, len(tail) - opened)
        return hold

    def _split(self, text: str) -> list[tuple[str, str]]:
        if not text:
            return []
        if self.custom:
            pieces = self.protocol.split_thinking(self._seen, text)
            self._seen += text
            if pieces:
                self.inside = pieces[-1][0] == "thinking"
            return pieces
        opening, closing = self.tags
        # The base rule reads only whether `before` ends inside the tags: an opening tag alone
        # says "inside", nothing says "outside", so the split costs O(text), not O(trace).
        pieces = self.protocol.split_thinking(opening if self.inside else "", text)
        role, piece = pieces[-1]
        self.inside = role == "thinking" and not piece.endswith(closing)
        return pieces


def words(n: int) -> str:
    return f"{n:,} word{'' if n == 1 else 's'}"


def count_words(text: str, in_word: bool) -> tuple[int, bool]:
    """Words that start in `text` (one already open when `in_word`), and whether `text`
    ends inside one: counting piece by piece gives the count of the whole."""
    if not text:
        return 0, in_word
    n = len(text.split())
    if in_word and not text[0].isspace():
        n -= 1  # the first word began in the previous piece
    return n, not text[-1].isspace()


class ReasoningLine:
    """One stretch of reasoning as the terminal shows it: its words and time, and while it
    streams collapsed on a terminal, a dim live line `thinking… N words · T s` redrawn at
    most every `interval_s` (the line is erased when the stretch ends)."""

    def __init__(self, console, *, live: bool, interval_s: float) -> None:
        self.console = console
        self.words = 0
        self.started = time.monotonic()
        self.interval_s = interval_s
        self._in_word = False
        self._live = None
        self._wants_live = live and console.is_terminal
        self._drawn = self.started

    def add(self, text: str) -> None:
        n, self._in_word = count_words(text, self._in_word)
        self.words += n
        if self._wants_live:  # drawn once there is a word to count
            from rich.live import Live

            self._wants_live = False
            self._live = Live(self._status(), console=self.console, auto_refresh=False, transient=True)
            self._live.start(refresh=True)
        elif self._live is not None:
            now = time.monotonic()
            if now - self._drawn >= self.interval_s:
                self._drawn = now
                self._live.update(self._status(), refresh=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _status(self):
        from rich.text import Text

        return Text(f"thinking… {words(self.words)} · {self.elapsed():.0f} s", style="dim")
