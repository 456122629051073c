"""HTTP to an OpenAI-compatible server: requests, what a failure means, and retries.

Failures are sorted once, here: transient ones (connection refused or reset, time-outs, HTTP
429 and 5xx) become `Transient` and are retried `RETRIES` times with exponential backoff; a
context-length refusal becomes `ContextFull`, which the session answers by asking for fewer
tokens; everything else ends as a one-line `EngineError` (exit code 6).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from mathsolve.engines.openai.reading import MAX_JSON, Body, limit_text
from mathsolve.engines.openai.wire import clip, is_context_error, parse_json
from mathsolve.errors import EngineError, UsageError

RETRIES = 3  # extra attempts after a transient failure
BACKOFF_S = 0.5  # first wait; doubled each attempt (0.5, 1, 2 s), plus up to 50 % jitter
_TRANSIENT_HTTP = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class Transient(Exception):
    """A failure worth retrying; the message says what happened."""


class Rejected(EngineError):
    """HTTP 400/422: the server refused a parameter."""


class ContextFull(Exception):
    """HTTP 400: the prompt plus max_tokens does not fit the server's context."""

    def __init__(self, message: str, error: dict[str, Any]) -> None:
        super().__init__(message)
        self.error = error


def normalize_base_url(url: str) -> str:
    """`http://host:8000` and `http://host:8000/v1/` both become `http://host:8000/v1`."""
    url = url.strip().rstrip("/")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--base-url {url!r} is not an http(s) URL (e.g. http://HOST:8000/v1)")
    if parsed.path in ("", "/"):
        url += "/v1"
    return url


def api_key_from_env(name: str | None) -> str | None:
    """The API key held by the environment variable `name` (--api-key-env), if one is named."""
    if not name:
        return None
    key = os.environ.get(name, "").strip()
    if not key:
        raise UsageError(f"--api-key-env {name}: the environment variable {name} is not set")
    return key


class Transport:
    """Requests to one server: its API root, key and time-out. Holds no connection, so any
    number of threads may use it at once."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        host = urllib.parse.urlparse(base_url).hostname or ""
        # A server on this machine is never reached through the environment's HTTP proxy.
        local = host in ("localhost", "127.0.0.1", "::1")
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if local else []))

    def request(self, url: str, body: dict[str, Any] | None, timeout: float):
        """The open response to a GET (no `body`) or a JSON POST; failures sorted as above."""
        headers = {"Accept": "application/json, text/event-stream"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
        try:
            return self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise self._http_error(url, exc) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise Transient(self.network_reason(exc)) from None

    def get_json(self, url: str, timeout: float) -> Any:
        """A GET's JSON answer, at most MAX_JSON bytes."""
        with self.request(url, None, timeout) as response:
            try:
                return self.read_json(Body(response, timeout), MAX_JSON)
            except (OSError, http.client.HTTPException) as exc:  # mid-read failures
                raise Transient(self.network_reason(exc)) from None

    def read_json(self, body: Body, limit: int) -> Any:
        """A body's JSON; EngineError when it is longer than `limit` bytes."""
        data = body.all(limit)
        if data is None:
            raise EngineError(f"the server at {self.base_url} sent an answer larger than {limit_text(limit)}")
        return parse_json(data.decode("utf-8"))

    def with_retries(self, attempt: Callable[[], Any], what: str) -> Any:
        """Run `attempt`, retrying transient failures with exponential backoff."""
        for n in range(RETRIES + 1):
            try:
                return attempt()
            except Transient as exc:
                if n == RETRIES:
                    tries = f" (tried {RETRIES + 1} times)" if RETRIES else ""
                    raise EngineError(f"{what} at {self.base_url} failed: {exc}{tries}") from None
                delay = BACKOFF_S * 2**n
                time.sleep(delay + random.uniform(0, delay / 2))
        raise AssertionError("unreachable")

    def network_reason(self, exc: BaseException) -> str:
        """A network failure in a few words: 'connection refused', 'no answer within 600 s', ..."""
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
            return f"no answer within {self.timeout:g} s (--request-timeout)"
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        if isinstance(reason, ConnectionResetError):
            return "connection reset"
        if isinstance(reason, socket.gaierror):
            return f"unknown host ({reason.strerror or reason})"
        if isinstance(exc, http.client.RemoteDisconnected):
            return "the server closed the connection"
        return " ".join(str(reason).split()) or type(exc).__name__

    def _http_error(self, url: str, exc: urllib.error.HTTPError) -> Exception:
        try:
            data = Body(getattr(exc, "fp", None) or exc, self.timeout).all(MAX_JSON)
            payload = parse_json(data.decode("utf-8", "replace")) if data else {}
        except (ValueError, OSError, http.client.HTTPException):
            payload = {}  # the status alone tells what happened
        if not isinstance(payload, dict):
            payload = {}
        # OpenAI and llama.cpp nest {"error": {...}}; vLLM answers {"message", "type", ...} flat.
        error = payload["error"] if isinstance(payload.get("error"), dict) else payload
        message = clip(error.get("message") or error.get("detail") or exc.reason or "")
        if exc.code == 400 and is_context_error(error, message):
            return ContextFull(message, error)
        if exc.code in _TRANSIENT_HTTP:
            return Transient(f"HTTP {exc.code}" + (f": {message}" if message else ""))
        if exc.code in (401, 403):
            return EngineError(f"the server at {self.base_url} refused the request (HTTP {exc.code}: {message or 'unauthorized'}); "
                               "give its API key with --api-key-env VAR")
        path = urllib.parse.urlparse(url).path
        hint = " (is --base-url the server's OpenAI API root, e.g. http://HOST:8000/v1?)" if exc.code == 404 else ""
        return (Rejected if exc.code in (400, 422) else EngineError)(f"the server at {self.base_url} answered HTTP {exc.code} to {path}"
                           + (f": {message}" if message else "") + hint)
