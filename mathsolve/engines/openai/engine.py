"""The `openai` engine itself: connecting to the server, learning what it serves, opening sessions.

At start-up the engine asks `/models` (the model must be served; its context size), and
llama-server's `/props` (chat template, BOS/EOS, context size; other servers have none), then
names the repetition penalty the way that server does. Sessions are independent (no shared
mutable state but a probe counter under a lock), so a batch runs many at once
(`concurrent = True`).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from mathsolve.engines.base import EngineInfo, ModelInfo
from mathsolve.engines.openai.completions import complete
from mathsolve.engines.openai.session import OpenAISession
from mathsolve.engines.openai.transport import (
    ContextFull,
    Transient,
    Transport,
    api_key_from_env,
    normalize_base_url,
)
from mathsolve.engines.openai.wire import Reply, as_int, as_str, server_n_ctx
from mathsolve.errors import EngineError, UsageError

PROPS_TIMEOUT_S = 10.0  # llama-server's /props, asked once at start-up


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
        self.transport = Transport(self.base_url, self.api_key, self.timeout)
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
        self.n_ctx = n_ctx or as_int(entry.get("max_model_len")) or server_n_ctx(props)
        template = as_str(props.get("chat_template")) or None
        bos = as_str(props.get("bos_token"))
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
            model=ModelInfo(chat_template=template, bos_token=bos, eos_token=as_str(props.get("eos_token")),
                            add_bos=bool(bos), name=model),
        )

    @property
    def root_url(self) -> str:
        """The server root (for llama-server's /props), without the /v1 suffix."""
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def _served_models(self) -> list[dict[str, Any]]:
        try:
            # The full request timeout: llama_cpp.server answers /models only between generations.
            payload = self.transport.get_json(self.base_url + "/models", self.timeout)
        except Transient as exc:  # not retried: a wrong URL or a stopped server should fail at once
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
            payload = self.transport.get_json(self.root_url + "/props", min(self.timeout, PROPS_TIMEOUT_S))
        except (Transient, EngineError, ValueError, ContextFull):
            return {}
        return payload if isinstance(payload, dict) else {}

    def complete(self, body: dict[str, Any], on_text: Callable[[str], None] | None = None) -> Reply:
        """One /completions call (streamed when `on_text` is given), with retries; see
        mathsolve.engines.openai.completions."""
        return complete(self.transport, body, on_text)

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
