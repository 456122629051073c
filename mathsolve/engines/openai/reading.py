"""Reading a server's answer so that it always ends: against a deadline, within size bounds.

Whatever the server does (trickles bytes, sends keep-alive comments forever, one endless
line), a read ends: `request_timeout` bounds every wait for progress, and answers, stream lines
and stream events have byte limits, past which the answer is malformed.
"""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any, Iterator

MAX_LINE = 1 << 20  # bytes in one line (or event) of a stream: a piece of text is far shorter
MAX_JSON = 16 << 20  # bytes in an answer other than a completion (/models, /props, an error)
READ_SIZE = 1 << 16  # bytes asked of the socket per read


class Body:
    """A response body read against a deadline: `timeout` seconds for the whole body, or, in a
    stream, from one `moved()` (progress) to the next.

    A socket's time-out bounds each read alone: keep-alive comments, or a byte now and then,
    would keep a request alive forever. So the deadline is checked before every read, and the
    socket's time-out is set to the time left, so that no single read waits past it either.
    Reads take what has arrived (`read1`), never waiting to fill a buffer."""

    def __init__(self, response: Any, timeout: float) -> None:
        self.response = response
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.sock = _socket_of(response)
        self._read = getattr(response, "read1", None) or response.read

    def moved(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def chunk(self) -> bytes:
        """What has arrived (up to READ_SIZE bytes), b"" at the end; TimeoutError past the deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        if self.sock is not None:
            try:
                self.sock.settimeout(left)
            except OSError:  # closed under us: the read below says how
                self.sock = None
        data = self._read(READ_SIZE)
        length = getattr(self.response, "length", None)  # http.client: bytes still due
        if not data and isinstance(length, int) and length > 0:
            raise http.client.IncompleteRead(b"", length)
        return data

    def all(self, limit: int) -> bytes | None:
        """The whole body, or None when it is longer than `limit` bytes."""
        length = getattr(self.response, "length", None)
        if isinstance(length, int) and length > limit:
            return None
        parts: list[bytes] = []
        size = 0
        while data := self.chunk():
            parts.append(data)
            size += len(data)
            if size > limit:
                return None
        return b"".join(parts)

    def lines(self, limit: int) -> Iterator[bytes]:
        """The body's lines without their `\n`; ValueError for a line longer than `limit` bytes."""
        parts: list[bytes] = []  # the start of a line that spans reads
        size = 0
        while data := self.chunk():
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                if size + end - start > limit:
                    raise ValueError(f"a line of the stream is longer than {limit_text(limit)}")
                yield b"".join([*parts, data[start:end]]) if parts else data[start:end]
                parts, size, start = [], 0, end + 1
            if start < len(data):
                parts.append(data[start:])
                size += len(data) - start
                if size > limit:
                    raise ValueError(f"a line of the stream is longer than {limit_text(limit)}")
        if parts:
            yield b"".join(parts)


def sse_events(body: Body) -> Iterator[str]:
    """The `data:` payloads of a server-sent event stream (comments and pings skipped)."""
    data: list[str] = []
    size = 0  # bytes of the event so far: many short data lines must not add up without end
    for raw in body.lines(MAX_LINE):
        line = raw.decode("utf-8").rstrip("\r")
        if not line:
            if data:
                yield "\n".join(data)
                data, size = [], 0
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            size += len(raw)
            if size > MAX_LINE:
                raise ValueError(f"an event of the stream is longer than {limit_text(MAX_LINE)}")
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def limit_text(n: int) -> str:
    """A size limit as docs/remote.md states it: "1 MiB" (the limits are powers of two)."""
    return f"{n / (1 << 20):g} MiB" if n % (1 << 20) == 0 else f"{n:,} bytes"


def _socket_of(response: Any) -> socket.socket | None:
    """The socket under an http.client response (`response.fp.raw._sock`). Other responses
    (or another Python's internals) have none: then the deadline is checked between reads only."""
    raw = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if callable(getattr(sock, "settimeout", None)) else None
