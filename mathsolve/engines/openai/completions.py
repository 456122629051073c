"""One `/completions` call: a whole JSON answer, or a server-sent event stream shown as it comes.

A generation is bounded whatever the server does: it is cut (finish `length`) once the server
sends more than `max_tokens` pieces or `CHARS_PER_TOKEN` characters a token, and a whole answer
has a size bound. A stream is retried only while nothing of it was shown: text already printed
cannot be taken back.
"""

from __future__ import annotations

import http.client
from typing import Any, Callable

from mathsolve.engines.openai.reading import MAX_LINE, Body, sse_events
from mathsolve.engines.openai.transport import Transient, Transport
from mathsolve.engines.openai.wire import (
    Reply,
    choices,
    clip,
    cut,
    finish_of,
    max_tokens_of,
    parse_json,
    parse_reply,
    text_of,
)
from mathsolve.errors import EngineError

# The most text one token can stand for. Real vocabularies' longest pieces (runs of spaces,
# `=` or `-` in code models) are a few dozen characters, so more than this per token means a
# server running past max_tokens, whose text is then cut as if max_tokens was reached.
CHARS_PER_TOKEN = 128


class _ShowFailed(Exception):
    """The `on_text` callback failed; carries its exception through the network handling."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def complete(transport: Transport, body: dict[str, Any], on_text: Callable[[str], None] | None = None) -> Reply:
    """One /completions call (streamed when `on_text` is given), with retries."""
    base_url = transport.base_url
    shown = [False]

    def show(piece: str) -> None:
        # A failure of the display (stdout closed, a broken pipe) is the caller's, not a
        # network error: it must not be retried or reported as the stream breaking off.
        try:
            on_text(piece)  # type: ignore[misc]
        except BaseException as exc:  # noqa: BLE001 - re-raised unchanged below
            raise _ShowFailed(exc) from exc

    def attempt() -> Reply:
        try:
            if on_text is None:
                with transport.request(base_url + "/completions", body, transport.timeout) as response:
                    return _whole_reply(transport, response, max_tokens_of(body))
            return _stream(transport, body, show, shown)
        except _ShowFailed as failed:
            raise failed.original from None
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSON errors are ValueErrors
            raise EngineError(f"the server at {base_url} sent a malformed answer: {clip(exc)}") from None
        except Transient as exc:
            if shown[0]:
                raise EngineError(f"the stream from {base_url} broke off mid-answer: {exc}") from None
            raise
        except (OSError, http.client.HTTPException) as exc:  # mid-read failures, time-outs included
            if shown[0]:
                raise EngineError(f"the stream from {base_url} broke off mid-answer: "
                                  f"{transport.network_reason(exc)}") from None
            raise Transient(transport.network_reason(exc)) from None

    return transport.with_retries(attempt, "generation")


def _whole_reply(transport: Transport, response: Any, max_tokens: int) -> Reply:
    """A non-streamed answer, read within the time-out and a size bound that a text of
    `max_tokens` tokens at CHARS_PER_TOKEN fits twice over (non-ASCII and JSON escapes take
    several bytes a character), plus room for the rest of the JSON."""
    chars = max_tokens * CHARS_PER_TOKEN
    reply = parse_reply(transport.read_json(Body(response, transport.timeout), 2 * chars + MAX_LINE))
    return cut(reply, chars) if len(reply.text) > chars else reply


def _stream(transport: Transport, body: dict[str, Any], on_text: Callable[[str], None], shown: list[bool]) -> Reply:
    max_tokens = max_tokens_of(body)
    reply = Reply(text="", finish_reason=None)
    # Leaving the `with` closes the connection, which is how a runaway stream is stopped.
    with transport.request(transport.base_url + "/completions", dict(body, stream=True), transport.timeout) as response:
        if response.headers.get_content_type() == "application/json":  # a server that does not stream
            reply = _whole_reply(transport, response, max_tokens)
            if reply.text:
                shown[0] = True
                on_text(reply.text)
            return reply
        progress = Body(response, transport.timeout)
        try:
            _read_stream(transport, progress, reply, max_tokens, on_text, shown)
        except TimeoutError:
            if reply.finish_reason is None:
                raise
            # The answer is complete; only the usage chunk or `[DONE]` did not come.
    if reply.finish_reason is None:
        if shown[0]:
            raise EngineError(
                f"the server at {transport.base_url} ended the stream without a finish reason (llama_cpp.server does "
                "this when another request arrives: start it with --interrupt_requests False)"
            )
        raise Transient("the stream ended before any text")
    return reply


def _read_stream(transport: Transport, progress: Body, reply: Reply, max_tokens: int,
                 on_text: Callable[[str], None], shown: list[bool]) -> None:
    """Fill `reply` from the stream's events, cut (finish `length`) if the server runs past
    max_tokens pieces or CHARS_PER_TOKEN characters a token."""
    chars = max_tokens * CHARS_PER_TOKEN
    for event in sse_events(progress):
        if event == "[DONE]":
            return
        chunk = parse_json(event)
        if not isinstance(chunk, dict):
            raise ValueError("an event of the stream is not a JSON object")
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
            raise EngineError(f"the server at {transport.base_url} failed mid-stream: {clip(error.get('message'))}")
        if isinstance(chunk.get("usage"), dict) and chunk["usage"]:
            reply.usage = chunk["usage"]
        for choice in choices(chunk):
            piece, finish = text_of(choice), finish_of(choice)
            # Progress is new text or the end; pings, role-only and empty chunks are not.
            if piece or (finish is not None and reply.finish_reason is None):
                progress.moved()
            if piece:
                # One piece past max_tokens may end the generation (text a server held
                # back, sent with the finish reason); any other means a runaway server.
                if reply.chunks >= max_tokens and (finish is None or reply.finish_reason is not None):
                    cut(reply, chars)
                    return
                kept = piece[: chars - len(reply.text)]
                reply.text += kept
                reply.chunks += 1
                if kept:
                    shown[0] = True
                    on_text(kept)
                if len(kept) < len(piece):
                    cut(reply, chars)
                    return
            if finish is not None:
                reply.finish_reason = finish
                reply.choice = choice
