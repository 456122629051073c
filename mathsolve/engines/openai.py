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

from mathsolve.engines.base import EngineInfo, Sampling, TokenStats, find_stop, held_back
from mathsolve.errors import EngineError, UsageError
from mathsolve.formats.base import Generation, ModelInfo

RETRIES = 3  # extra attempts after a transient failure
BACKOFF_S = 0.5  # first wait; doubled each attempt (0.5, 1, 2 s), plus up to 50 % jitter
PROPS_TIMEOUT_S = 10.0  # llama-server's /props, asked once at start-up
_TRANSIENT_HTTP = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


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
        owner = str(entry.get("owned_by") or "")
        self.penalty_fields = (("repetition_penalty",) if owner == "vllm"
                               else ("repeat_penalty",) if owner in ("llamacpp", "me") or props
                               else ("repetition_penalty", "repeat_penalty"))
        self.n_ctx = n_ctx or _int(entry.get("max_model_len")) or _server_n_ctx(props)
        template = props.get("chat_template") or None
        bos = str(props.get("bos_token") or "")
        self.load_s = time.perf_counter() - started
        self.info = EngineInfo(
            name="openai",
            model_path=None,
            details={
                "base_url": self.base_url,
                "model": model,
                "owned_by": entry.get("owned_by"),
                "n_ctx": self.n_ctx,
                "request_timeout": self.timeout,
                "chat_template": "from /props" if template else "not exposed by the server",
                "load_s": round(self.load_s, 3),
            },
            # The server adds BOS itself when its tokenizer wants one.
            model=ModelInfo(chat_template=template, bos_token=bos, eos_token=str(props.get("eos_token") or ""),
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
            payload = json.loads(exc.read().decode("utf-8", "replace") or "{}")
        except (ValueError, OSError):
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        # OpenAI and llama.cpp nest {"error": {...}}; vLLM answers {"message", "type", ...} flat.
        error = payload["error"] if isinstance(payload.get("error"), dict) else payload
        message = " ".join(str(error.get("message") or error.get("detail") or exc.reason or "").split())[:300]
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

    def _get_json(self, path: str, timeout: float) -> Any:
        with self._request(self.base_url + path, None, timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def _served_models(self) -> list[dict[str, Any]]:
        try:
            # The full request timeout: llama_cpp.server answers /models only between generations.
            payload = self._get_json("/models", self.timeout)
        except _Transient as exc:  # not retried: a wrong URL or a stopped server should fail at once
            raise EngineError(f"cannot reach the server at {self.base_url}: {exc} (is it running? check --base-url)") from None
        except (ValueError, UnicodeDecodeError):
            raise EngineError(f"{self.base_url}/models did not answer JSON: is --base-url an OpenAI-compatible server?") from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise EngineError(f"{self.base_url}/models did not list models: is --base-url an OpenAI-compatible server?")
        return [m for m in data if isinstance(m, dict)]

    def _props(self) -> dict[str, Any]:
        """llama-server's /props (chat template, context size); other servers have none."""
        try:
            with self._request(self.root_url + "/props", None, min(self.timeout, PROPS_TIMEOUT_S)) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except (_Transient, EngineError, ValueError, UnicodeDecodeError, _ContextFull):
            return {}
        return payload if isinstance(payload, dict) else {}

    def complete(self, body: dict[str, Any], on_text: Callable[[str], None] | None = None) -> _Reply:
        """One /completions call (streamed when `on_text` is given), with retries.

        A stream is retried only while nothing of it was shown: text already printed cannot
        be taken back.
        """
        shown = [False]

        def attempt() -> _Reply:
            try:
                if on_text is None:
                    with self._request(self.base_url + "/completions", body, self.timeout) as response:
                        return _parse_reply(json.loads(response.read().decode("utf-8")))
                return self._stream(body, on_text, shown)
            except (ValueError, UnicodeDecodeError) as exc:
                raise EngineError(f"the server at {self.base_url} sent a malformed answer: {exc}") from None
            except _Transient:
                if shown[0]:
                    raise EngineError(f"the stream from {self.base_url} broke off mid-answer") from None
                raise
            except (OSError, http.client.HTTPException) as exc:  # mid-read failures
                if shown[0]:
                    raise EngineError(f"the stream from {self.base_url} broke off mid-answer: {exc}") from None
                raise _Transient(self._network_reason(exc)) from None

        return self._with_retries(attempt, "generation")

    def _stream(self, body: dict[str, Any], on_text: Callable[[str], None], shown: list[bool]) -> _Reply:
        reply = _Reply(text="", finish_reason=None)
        with self._request(self.base_url + "/completions", dict(body, stream=True), self.timeout) as response:
            if response.headers.get_content_type() == "application/json":  # a server that does not stream
                reply = _parse_reply(json.loads(response.read().decode("utf-8")))
                if reply.text:
                    shown[0] = True
                    on_text(reply.text)
                return reply
            for event in _sse_events(response):
                if event == "[DONE]":
                    break
                chunk = json.loads(event)
                if isinstance(chunk, dict) and "error" in chunk:
                    error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
                    raise EngineError(f"the server at {self.base_url} failed mid-stream: {error.get('message')}")
                if chunk.get("usage"):
                    reply.usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    piece = choice.get("text") or ""
                    if piece:
                        reply.text += piece
                        reply.chunks += 1
                        shown[0] = True
                        on_text(piece)
                    if choice.get("finish_reason") is not None:
                        reply.finish_reason = choice["finish_reason"]
                        reply.choice = choice
        if reply.finish_reason is None:
            if shown[0]:
                raise EngineError(
                    f"the server at {self.base_url} ended the stream without a finish reason (llama_cpp.server does "
                    "this when another request arrives: start it with --interrupt_requests False)"
                )
            raise _Transient("the stream ended before any text")
        return reply

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
        cached = _int((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
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


def _sse_events(response) -> Iterator[str]:
    """The `data:` payloads of a server-sent event stream (comments and pings skipped)."""
    data: list[str] = []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _parse_reply(payload: Any) -> _Reply:
    if not isinstance(payload, dict) or not payload.get("choices"):
        message = payload.get("error") if isinstance(payload, dict) else None
        raise ValueError(f"no choices in the answer{': ' + str(message) if message else ''}")
    choice = payload["choices"][0]
    return _Reply(text=choice.get("text") or "", finish_reason=choice.get("finish_reason"), choice=choice,
                  usage=payload.get("usage"))


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
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
