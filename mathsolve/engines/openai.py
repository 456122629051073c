"""The `openai` engine: an OpenAI-compatible server's raw `/v1/completions` endpoint.

For vLLM, llama.cpp's `llama-server` and `llama_cpp.server` (llama-cpp-python). It is raw
completion, never chat: the protocols need byte-exact prompts and their own stop strings.

- A session keeps its whole context as TEXT (the prompt plus everything pushed) and sends it
  as the prompt of every round; the server re-uses its KV cache for the common prefix (vLLM's
  automatic prefix caching, llama-server's `cache_prompt`, llama_cpp.server's last-sequence
  reuse), so a round costs about the tool output plus what is generated.
- The server tokenizes the prompt itself, special tokens included (vLLM, llama-server and
  llama_cpp.server all parse special-token text in a completion prompt).
- Stop vs EOS: the API says `finish_reason: "stop"` for both. The answer is read, in order,
  from vLLM's `stop_reason` (the stop string, or null for EOS), llama-server's
  `stop_type`/`stopping_word` when present, a stop string left at the end of the text; when
  none of these says (llama-server's and llama_cpp.server's OpenAI endpoints strip the stop
  string and say nothing more), a short greedy "probe" asks the server how the text goes on
  (see `OpenAISession._probe`).
- Errors end as one-line `EngineError`s (exit code 6). Transient failures (connection refused
  or reset, time-outs, HTTP 429 and 5xx) are retried `RETRIES` times with exponential backoff.
- Whatever the server does, a request ends: `request_timeout` bounds every wait for progress
  (see `_Body`), a generation is cut once the server sends more than `max_tokens` pieces or
  `CHARS_PER_TOKEN` characters a token, and answers and stream lines have size bounds.
- Sessions are independent (no shared mutable state), so a batch runs many at once
  (`concurrent = True`).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from mathsolve.engines.base import EngineInfo, Generation, ModelInfo, Sampling, TokenStats, find_stop, held_back
from mathsolve.errors import EngineError, UsageError

RETRIES = 3  # extra attempts after a transient failure
BACKOFF_S = 0.5  # first wait; doubled each attempt (0.5, 1, 2 s), plus up to 50 % jitter
PROPS_TIMEOUT_S = 10.0  # llama-server's /props, asked once at start-up
# The most text one token can stand for. Real vocabularies' longest pieces (runs of spaces,
# `=` or `-` in code models) are a few dozen characters, so more than this per token means a
# server running past max_tokens, whose text is then cut as if max_tokens was reached.
CHARS_PER_TOKEN = 128
MAX_LINE = 1 << 20  # bytes in one line (or event) of a stream: a piece of text is far shorter
MAX_JSON = 16 << 20  # bytes in an answer other than a completion (/models, /props, an error)
READ_SIZE = 1 << 16  # bytes asked of the socket per read
_TRANSIENT_HTTP = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class _ShowFailed(Exception):
    """The `on_text` callback failed; carries its exception through the network handling."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class _Transient(Exception):
    """A failure worth retrying; the message says what happened."""


class _Rejected(EngineError):
    """HTTP 400/422: the server refused a parameter."""


class _ContextFull(Exception):
    """HTTP 400: the prompt plus max_tokens does not fit the server's context."""

    def __init__(self, message: str, error: dict[str, Any]) -> None:
        super().__init__(message)
        self.error = error


@dataclass
class _Reply:
    text: str
    finish_reason: str | None
    choice: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    chunks: int = 0  # streamed pieces with text (an estimate of tokens when usage is missing)


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
    if not name:
        return None
    key = os.environ.get(name, "").strip()
    if not key:
        raise UsageError(f"--api-key-env {name}: the environment variable {name} is not set")
    return key


class OpenAIEngine:
    """A model served over HTTP. Sessions may run in parallel threads."""

    concurrent = True

    def __init__(
        self,
        *,
        base_url: str | None,
        model: str | None,
        api_key_env: str | None = None,
        request_timeout: float = 600.0,
        n_ctx: int | None = None,
        stream: bool = True,
        notify: Callable[[str], None] | None = None,
        **_: Any,
    ) -> None:
        if not base_url:
            raise UsageError("--base-url is required with --engine openai (e.g. http://HOST:8000/v1)")
        if request_timeout <= 0:
            raise UsageError("--request-timeout must be positive")
        self.base_url = normalize_base_url(base_url)
        self.api_key = api_key_from_env(api_key_env)
        self.timeout = float(request_timeout)
        self.stream = stream  # batches turn it off: one JSON answer per round
        host = urllib.parse.urlparse(self.base_url).hostname or ""
        # A server on this machine is never reached through the environment's HTTP proxy.
        local = host in ("localhost", "127.0.0.1", "::1")
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if local else []))
        self._lock = threading.Lock()
        self.probes = 0  # stop-vs-EOS probes sent (see OpenAISession._probe)
        # top_k "off": 0 for llama.cpp (which refuses -1 in llama_cpp.server) and recent vLLM;
        # vLLM before 0.7 wants -1, learnt from its first refusal.
        self.top_k_off = 0
        started = time.perf_counter()
        served = self._served_models()
        ids = [str(m.get("id")) for m in served]
        if model is None:
            raise UsageError(f"--model is required with --engine openai: the server at {self.base_url} serves "
                             + (", ".join(ids) or "no models"))
        if model not in ids:
            raise EngineError(f"the server at {self.base_url} does not serve model {model!r}; it serves: "
                              + (", ".join(ids) or "no models (GET /models is empty)"))
        self.model = model
        entry = next(m for m in served if str(m.get("id")) == model)
        props = self._props()
        # Each server names the repetition penalty its own way; unknown fields only make
        # vLLM log a warning per request, so a known server gets just its own name.
        owner = entry.get("owned_by") if isinstance(entry.get("owned_by"), str) else ""
        self.penalty_fields = (("repetition_penalty",) if owner == "vllm"
                               else ("repeat_penalty",) if owner in ("llamacpp", "me") or props
                               else ("repetition_penalty", "repeat_penalty"))
        self.n_ctx = n_ctx or _int(entry.get("max_model_len")) or _server_n_ctx(props)
        template = _str(props.get("chat_template")) or None
        bos = _str(props.get("bos_token"))
        self.load_s = time.perf_counter() - started
        self.info = EngineInfo(
            name="openai",
            model_path=None,
            details={
                "base_url": self.base_url,
                "model": model,
                "owned_by": owner or None,
                "n_ctx": self.n_ctx,
                "request_timeout": self.timeout,
                "chat_template": "from /props" if template else "not exposed by the server",
                "load_s": round(self.load_s, 3),
            },
            # The server adds BOS itself when its tokenizer wants one.
            model=ModelInfo(chat_template=template, bos_token=bos, eos_token=_str(props.get("eos_token")),
                            add_bos=bool(bos), name=model),
        )

    # -- HTTP ------------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        """The server root (for llama-server's /props), without the /v1 suffix."""
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def _request(self, url: str, body: dict[str, Any] | None, timeout: float):
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
            raise _Transient(self._network_reason(exc)) from None

    def _http_error(self, url: str, exc: urllib.error.HTTPError) -> Exception:
        try:
            data = _Body(getattr(exc, "fp", None) or exc, self.timeout).all(MAX_JSON)
            payload = _json(data.decode("utf-8", "replace")) if data else {}
        except (ValueError, OSError, http.client.HTTPException):
            payload = {}  # the status alone tells what happened
        if not isinstance(payload, dict):
            payload = {}
        # OpenAI and llama.cpp nest {"error": {...}}; vLLM answers {"message", "type", ...} flat.
        error = payload["error"] if isinstance(payload.get("error"), dict) else payload
        message = _clip(error.get("message") or error.get("detail") or exc.reason or "")
        if exc.code == 400 and _is_context_error(error, message):
            return _ContextFull(message, error)
        if exc.code in _TRANSIENT_HTTP:
            return _Transient(f"HTTP {exc.code}" + (f": {message}" if message else ""))
        if exc.code in (401, 403):
            return EngineError(f"the server at {self.base_url} refused the request (HTTP {exc.code}: {message or 'unauthorized'}); "
                               "give its API key with --api-key-env VAR")
        path = urllib.parse.urlparse(url).path
        hint = " (is --base-url the server's OpenAI API root, e.g. http://HOST:8000/v1?)" if exc.code == 404 else ""
        return (_Rejected if exc.code in (400, 422) else EngineError)(f"the server at {self.base_url} answered HTTP {exc.code} to {path}"
                           + (f": {message}" if message else "") + hint)

    def _network_reason(self, exc: BaseException) -> str:
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

    def _with_retries(self, attempt: Callable[[], Any], what: str) -> Any:
        """Run `attempt`, retrying transient failures with exponential backoff."""
        for n in range(RETRIES + 1):
            try:
                return attempt()
            except _Transient as exc:
                if n == RETRIES:
                    tries = f" (tried {RETRIES + 1} times)" if RETRIES else ""
                    raise EngineError(f"{what} at {self.base_url} failed: {exc}{tries}") from None
                delay = BACKOFF_S * 2**n
                time.sleep(delay + random.uniform(0, delay / 2))
        raise AssertionError("unreachable")

    def _get_json(self, url: str, timeout: float) -> Any:
        with self._request(url, None, timeout) as response:
            try:
                return self._read_json(_Body(response, timeout), MAX_JSON)
            except (OSError, http.client.HTTPException) as exc:  # mid-read failures
                raise _Transient(self._network_reason(exc)) from None

    def _read_json(self, body: _Body, limit: int) -> Any:
        data = body.all(limit)
        if data is None:
            raise EngineError(f"the server at {self.base_url} sent an answer larger than {_size(limit)}")
        return _json(data.decode("utf-8"))

    def _served_models(self) -> list[dict[str, Any]]:
        try:
            # The full request timeout: llama_cpp.server answers /models only between generations.
            payload = self._get_json(self.base_url + "/models", self.timeout)
        except _Transient as exc:  # not retried: a wrong URL or a stopped server should fail at once
            raise EngineError(f"cannot reach the server at {self.base_url}: {exc} (is it running? check --base-url)") from None
        except ValueError:
            raise EngineError(f"{self.base_url}/models did not answer JSON: is --base-url an OpenAI-compatible server?") from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise EngineError(f"{self.base_url}/models did not list models: is --base-url an OpenAI-compatible server?")
        # Ids are strings in the API; anything else would only reach messages and records.
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def _props(self) -> dict[str, Any]:
        """llama-server's /props (chat template, context size); other servers have none."""
        try:
            payload = self._get_json(self.root_url + "/props", min(self.timeout, PROPS_TIMEOUT_S))
        except (_Transient, EngineError, ValueError, _ContextFull):
            return {}
        return payload if isinstance(payload, dict) else {}

    def complete(self, body: dict[str, Any], on_text: Callable[[str], None] | None = None) -> _Reply:
        """One /completions call (streamed when `on_text` is given), with retries.

        A stream is retried only while nothing of it was shown: text already printed cannot
        be taken back.
        """
        shown = [False]

        def show(piece: str) -> None:
            # A failure of the display (stdout closed, a broken pipe) is the caller's, not a
            # network error: it must not be retried or reported as the stream breaking off.
            try:
                on_text(piece)  # type: ignore[misc]
            except BaseException as exc:  # noqa: BLE001 - re-raised unchanged below
                raise _ShowFailed(exc) from exc

        def attempt() -> _Reply:
            try:
                if on_text is None:
                    with self._request(self.base_url + "/completions", body, self.timeout) as response:
                        return self._whole_reply(response, _max_tokens(body))
                return self._stream(body, show, shown)
            except _ShowFailed as failed:
                raise failed.original from None
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSON errors are ValueErrors
                raise EngineError(f"the server at {self.base_url} sent a malformed answer: {_clip(exc)}") from None
            except _Transient as exc:
                if shown[0]:
                    raise EngineError(f"the stream from {self.base_url} broke off mid-answer: {exc}") from None
                raise
            except (OSError, http.client.HTTPException) as exc:  # mid-read failures, time-outs included
                if shown[0]:
                    raise EngineError(f"the stream from {self.base_url} broke off mid-answer: "
                                      f"{self._network_reason(exc)}") from None
                raise _Transient(self._network_reason(exc)) from None

        return self._with_retries(attempt, "generation")

    def _whole_reply(self, response: Any, max_tokens: int) -> _Reply:
        """A non-streamed answer, read within the time-out and a size bound that a text of
        `max_tokens` tokens at CHARS_PER_TOKEN fits twice over (non-ASCII and JSON escapes take
        several bytes a character), plus room for the rest of the JSON."""
        chars = max_tokens * CHARS_PER_TOKEN
        reply = _parse_reply(self._read_json(_Body(response, self.timeout), 2 * chars + MAX_LINE))
        return _cut(reply, chars) if len(reply.text) > chars else reply

    def _stream(self, body: dict[str, Any], on_text: Callable[[str], None], shown: list[bool]) -> _Reply:
        max_tokens = _max_tokens(body)
        reply = _Reply(text="", finish_reason=None)
        # Leaving the `with` closes the connection, which is how a runaway stream is stopped.
        with self._request(self.base_url + "/completions", dict(body, stream=True), self.timeout) as response:
            if response.headers.get_content_type() == "application/json":  # a server that does not stream
                reply = self._whole_reply(response, max_tokens)
                if reply.text:
                    shown[0] = True
                    on_text(reply.text)
                return reply
            progress = _Body(response, self.timeout)
            try:
                self._read_stream(progress, reply, max_tokens, on_text, shown)
            except TimeoutError:
                if reply.finish_reason is None:
                    raise
                # The answer is complete; only the usage chunk or `[DONE]` did not come.
        if reply.finish_reason is None:
            if shown[0]:
                raise EngineError(
                    f"the server at {self.base_url} ended the stream without a finish reason (llama_cpp.server does "
                    "this when another request arrives: start it with --interrupt_requests False)"
                )
            raise _Transient("the stream ended before any text")
        return reply

    def _read_stream(self, progress: _Body, reply: _Reply, max_tokens: int, on_text: Callable[[str], None],
                     shown: list[bool]) -> None:
        """Fill `reply` from the stream's events, cut (finish `length`) if the server runs past
        max_tokens pieces or CHARS_PER_TOKEN characters a token."""
        chars = max_tokens * CHARS_PER_TOKEN
        for event in _sse_events(progress):
            if event == "[DONE]":
                return
            chunk = _json(event)
            if not isinstance(chunk, dict):
                raise ValueError("an event of the stream is not a JSON object")
            if "error" in chunk:
                error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
                raise EngineError(f"the server at {self.base_url} failed mid-stream: {_clip(error.get('message'))}")
            if isinstance(chunk.get("usage"), dict) and chunk["usage"]:
                reply.usage = chunk["usage"]
            for choice in _choices(chunk):
                piece, finish = _text_of(choice), _finish_of(choice)
                # Progress is new text or the end; pings, role-only and empty chunks are not.
                if piece or (finish is not None and reply.finish_reason is None):
                    progress.moved()
                if piece:
                    # One piece past max_tokens may end the generation (text a server held
                    # back, sent with the finish reason); any other means a runaway server.
                    if reply.chunks >= max_tokens and (finish is None or reply.finish_reason is not None):
                        _cut(reply, chars)
                        return
                    kept = piece[: chars - len(reply.text)]
                    reply.text += kept
                    reply.chunks += 1
                    if kept:
                        shown[0] = True
                        on_text(kept)
                    if len(kept) < len(piece):
                        _cut(reply, chars)
                        return
                if finish is not None:
                    reply.finish_reason = finish
                    reply.choice = choice

    # -- the Engine protocol -----------------------------------------------------------------
    def session(
        self,
        prompt: str,
        *,
        special: bool = False,
        render_special: bool = False,
        literal: str | None = None,
        markers: tuple[str, ...] = (),
    ) -> OpenAISession:
        return OpenAISession(self, prompt, render_special=render_special)

    def close(self) -> None:
        pass  # no connection is kept open between requests


class OpenAISession:
    def __init__(self, engine: OpenAIEngine, prompt: str, *, render_special: bool = False) -> None:
        self.engine = engine
        self.context = prompt
        self.render_special = render_special
        self.stats = TokenStats()
        self._last_total: int | None = None  # prompt + completion tokens of the previous request

    def _body(self, max_tokens: int, sampling: Sampling, stops: tuple[str, ...]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.engine.model,
            "prompt": self.context,
            "max_tokens": max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k if sampling.top_k > 0 else self.engine.top_k_off,
            "min_p": sampling.min_p,
            "seed": sampling.seed,
            **{name: sampling.repeat_penalty for name in self.engine.penalty_fields},
            "n": 1,
            "echo": False,
            "stream": False,
        }
        if stops:
            body["stop"] = list(stops)
        if self.render_special:  # MathCoder's markers are special tokens that must come back as text
            body["skip_special_tokens"] = False
            body["spaces_between_special_tokens"] = False
        return body

    def generate(
        self,
        *,
        stops: tuple[str, ...],
        max_tokens: int,
        sampling: Sampling,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        engine = self.engine
        body = self._body(max_tokens, sampling, stops)
        streaming = engine.stream and on_text is not None
        if streaming:
            body["stream_options"] = {"include_usage": True}
        sink = _HoldBack(stops, on_text) if streaming else None
        try:
            reply = self._complete(body, sink.feed if sink else None)
        except _ContextFull as exc:
            budget = _budget_from_error(str(exc), exc.error)
            if budget is None or budget <= 0 or budget >= max_tokens:
                return Generation(text="", finish_reason="length")  # the context is full
            body["max_tokens"] = budget
            try:
                reply = self._complete(body, sink.feed if sink else None)
            except _ContextFull:
                return Generation(text="", finish_reason="length")
        text, reason, stop = self._finish(reply, stops, sampling)
        self._count(reply)
        if sink is not None:
            sink.finish(text)
        elif on_text is not None and text:
            on_text(text)
        return Generation(text=text, finish_reason=reason, stop=stop, n_tokens=self._n_tokens(reply))

    def _complete(self, body: dict[str, Any], on_text: Callable[[str], None] | None = None) -> _Reply:
        try:
            return self.engine.complete(body, on_text)
        except _Rejected as exc:
            if body.get("top_k") != 0 or "top_k" not in str(exc):
                raise
            self.engine.top_k_off = body["top_k"] = -1  # an older vLLM: -1 means off
            return self.engine.complete(body, on_text)

    def _finish(self, reply: _Reply, stops: tuple[str, ...], sampling: Sampling) -> tuple[str, str, str | None]:
        text, reason = reply.text, reply.finish_reason
        hit = find_stop(text, stops)
        if hit is not None:  # the server kept the stop string in the text
            return text[: hit[0]], "stop", hit[1]
        if reason == "length":
            return text, "length", None
        if reason not in ("stop", "eos", "stop_sequence", "eos_token"):
            raise EngineError(f"the server at {self.engine.base_url} ended a generation with finish_reason {reason!r}")
        choice = reply.choice
        if "stop_reason" in choice:  # vLLM: the stop string, or null (EOS) / a token id
            said = choice["stop_reason"]
            return (text, "stop", said) if isinstance(said, str) and said in stops else (text, "eos", None)
        if choice.get("stop_type") in ("eos", "word"):  # llama-server's own fields, when it sends them
            word = choice.get("stopping_word")
            if choice["stop_type"] == "word" and word in stops:
                return text, "stop", word
            return text, "eos", None
        if not stops or reason in ("eos", "eos_token"):
            return text, "eos", None
        return self._probe(text, stops, sampling)

    def _probe(self, text: str, stops: tuple[str, ...], sampling: Sampling) -> tuple[str, str, str | None]:
        """Stop string or EOS, when the server said only "stop": ask it, greedily and without
        stop strings, for the few tokens that follow `text`. The continuation starts with the
        stop string the generation ended on, or is empty (EOS). Exact under greedy decoding
        (the published setting); when sampling, it names the most likely of the two. A
        continuation that starts with neither counts as EOS."""
        engine = self.engine
        with engine._lock:
            engine.probes += 1
        body = self._body(max(len(s) for s in stops), Sampling(seed=sampling.seed), ())
        body["prompt"] = self.context + text
        try:
            reply = self._complete(body)
        except _ContextFull:
            return text, "eos", None
        after = reply.text
        hit = find_stop(after, stops)
        if hit is not None and hit[0] == 0:
            return text, "stop", hit[1]
        if after and reply.finish_reason == "length":
            for stop in stops:  # the continuation was cut inside a stop string
                if stop.startswith(after):
                    return text, "stop", stop
        return text, "eos", None

    def _count(self, reply: _Reply) -> None:
        usage = reply.usage
        if not usage:  # llama_cpp.server's streams carry no usage: count the pieces
            self.stats.generated += reply.chunks
            return
        prompt = _int(usage.get("prompt_tokens")) or 0
        completion = _int(usage.get("completion_tokens")) or 0
        details = usage.get("prompt_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else None
        if self._last_total is None:
            self.stats.prompt = prompt
        else:
            self.stats.injected += max(0, prompt - self._last_total)
        self._last_total = prompt + completion
        self.stats.generated += completion
        self.stats.evaluated += (prompt - cached if cached is not None else prompt) + completion

    @staticmethod
    def _n_tokens(reply: _Reply) -> int:
        if reply.usage:
            return _int(reply.usage.get("completion_tokens")) or 0
        return reply.chunks or (1 if reply.text else 0)

    def push(self, text: str) -> None:
        self.context += text

    def close(self) -> None:
        pass


class _HoldBack:
    """Streamed text to the screen, never half of a stop string (a server that keeps stop
    strings in its text would otherwise show them)."""

    def __init__(self, stops: tuple[str, ...], on_text: Callable[[str], None] | None) -> None:
        self.stops, self.on_text = stops, on_text
        self.text, self.emitted, self.done = "", 0, False

    def feed(self, piece: str) -> None:
        if self.done or self.on_text is None:
            return
        self.text += piece
        hit = find_stop(self.text, self.stops)
        if hit is not None:
            self.done = True
            self._emit(hit[0])
            return
        self._emit(len(self.text) - held_back(self.text, self.stops))

    def _emit(self, end: int) -> None:
        if self.on_text is not None and end > self.emitted:
            self.on_text(self.text[self.emitted : end])
            self.emitted = end

    def finish(self, final: str) -> None:
        """Show the rest of the final text (what was held back and turned out not to be a stop)."""
        self.text = final
        self._emit(len(final))


class _Body:
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
                    raise ValueError(f"a line of the stream is longer than {_size(limit)}")
                yield b"".join([*parts, data[start:end]]) if parts else data[start:end]
                parts, size, start = [], 0, end + 1
            if start < len(data):
                parts.append(data[start:])
                size += len(data) - start
                if size > limit:
                    raise ValueError(f"a line of the stream is longer than {_size(limit)}")
        if parts:
            yield b"".join(parts)


def _socket_of(response: Any) -> socket.socket | None:
    """The socket under an http.client response (`response.fp.raw._sock`). Other responses
    (or another Python's internals) have none: then the deadline is checked between reads only."""
    raw = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if callable(getattr(sock, "settimeout", None)) else None


def _sse_events(body: _Body) -> Iterator[str]:
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
                raise ValueError(f"an event of the stream is longer than {_size(MAX_LINE)}")
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _json(text: str) -> Any:
    """JSON from the server; nesting deep enough to exhaust the stack is malformed too (ValueError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _parse_reply(payload: Any) -> _Reply:
    choices = _choices(payload)
    if not choices:
        message = payload.get("error") if isinstance(payload, dict) else None
        raise ValueError(f"no choices in the answer{': ' + _clip(message) if message else ''}")
    choice = choices[0]
    usage = payload.get("usage")
    return _Reply(text=_text_of(choice), finish_reason=_finish_of(choice), choice=choice,
                  usage=usage if isinstance(usage, dict) else None)


def _choices(payload: Any) -> list[dict[str, Any]]:
    choices = payload.get("choices") if isinstance(payload, dict) else None
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def _text_of(choice: dict[str, Any]) -> str:
    text = choice.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError("a choice's text is not a string")
    return text or ""


def _finish_of(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError("a choice's finish_reason is not a string")
    return reason


def _cut(reply: _Reply, chars: int) -> _Reply:
    """A generation the server ran past its bounds ends as if max_tokens was reached."""
    reply.text = reply.text[:chars]
    reply.finish_reason = "length"
    reply.choice = {}
    return reply


def _max_tokens(body: dict[str, Any]) -> int:
    return max(1, _int(body.get("max_tokens")) or 1)


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n % (1 << 20) == 0 else f"{n:,} bytes"


def _clip(value: Any) -> str:
    """A server's value for a one-line message: whitespace folded, 300 characters at most."""
    try:
        text = value if isinstance(value, str) else str(value)
    except (RecursionError, ValueError):  # nested deep, or an integer too long to print
        text = type(value).__name__
    return " ".join(text[:2000].split())[:300]


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's 1e999 is infinity
        return None


def _server_n_ctx(props: dict[str, Any]) -> int | None:
    settings = props.get("default_generation_settings")
    return _int(settings.get("n_ctx")) if isinstance(settings, dict) else None


_CONTEXT_WORDS = re.compile(r"context (length|size|window)|maximum context|too long|exceeds? the", re.I)


def _is_context_error(error: dict[str, Any], message: str) -> bool:
    code = str(error.get("code") or "") + " " + str(error.get("type") or "")
    return "context_length" in code or "exceed_context" in code or bool(_CONTEXT_WORDS.search(message))


def _budget_from_error(message: str, error: dict[str, Any]) -> int | None:
    """New tokens that still fit, from a context-length error's numbers (vLLM, llama_cpp.server
    and llama-server phrase it differently)."""
    n_ctx = _int(error.get("n_ctx"))
    prompt = _int(error.get("n_prompt_tokens"))
    if n_ctx is None:
        m = re.search(r"maximum context length is (\d+)", message)
        n_ctx = int(m.group(1)) if m else None
    if prompt is None:
        m = re.search(r"(\d+) (?:in your prompt|in the messages|input tokens)|prompt contains (?:at least )?(\d+)", message)
        prompt = int(m.group(1) or m.group(2)) if m else None
    if n_ctx is None or prompt is None:
        return None
    return n_ctx - prompt
