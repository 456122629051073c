"""A conversation with a served model: its context as text, and telling a stop string from EOS.

A session keeps its whole context as TEXT (the prompt plus everything pushed) and sends it as
the prompt of every round; the server re-uses its KV cache for the common prefix (vLLM's
automatic prefix caching, llama-server's `cache_prompt`, llama_cpp.server's last-sequence
reuse), so a round costs about the tool output plus what is generated.

Stop vs EOS: the API says `finish_reason: "stop"` for both. The answer is read, in order, from
vLLM's `stop_reason` (the stop string, or null for EOS), llama-server's `stop_type` /
`stopping_word` when present, a stop string left at the end of the text; when none of these
says (llama-server's and llama_cpp.server's OpenAI endpoints strip the stop string and say
nothing more), a short greedy "probe" asks the server how the text goes on (see `_probe`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from mathsolve.engines.base import Generation, Sampling, TokenStats, find_stop, held_back
from mathsolve.engines.openai.transport import ContextFull, Rejected
from mathsolve.engines.openai.wire import Reply, as_int, budget_from_error
from mathsolve.errors import EngineError

if TYPE_CHECKING:
    from mathsolve.engines.openai.engine import OpenAIEngine


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
        except ContextFull as exc:
            budget = budget_from_error(str(exc), exc.error)
            if budget is None or budget <= 0 or budget >= max_tokens:
                return Generation(text="", finish_reason="length")  # the context is full
            body["max_tokens"] = budget
            try:
                reply = self._complete(body, sink.feed if sink else None)
            except ContextFull:
                return Generation(text="", finish_reason="length")
        text, reason, stop = self._finish(reply, stops, sampling)
        self._count(reply)
        if sink is not None:
            sink.finish(text)
        elif on_text is not None and text:
            on_text(text)
        return Generation(text=text, finish_reason=reason, stop=stop, n_tokens=self._n_tokens(reply))

    def _complete(self, body: dict[str, Any], on_text: Callable[[str], None] | None = None) -> Reply:
        try:
            return self.engine.complete(body, on_text)
        except Rejected as exc:
            if body.get("top_k") != 0 or "top_k" not in str(exc):
                raise
            self.engine.top_k_off = body["top_k"] = -1  # an older vLLM: -1 means off
            return self.engine.complete(body, on_text)

    def _finish(self, reply: Reply, stops: tuple[str, ...], sampling: Sampling) -> tuple[str, str, str | None]:
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
        except ContextFull:
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

    def _count(self, reply: Reply) -> None:
        usage = reply.usage
        if not usage:  # llama_cpp.server's streams carry no usage: count the pieces
            self.stats.generated += reply.chunks
            return
        prompt = as_int(usage.get("prompt_tokens")) or 0
        completion = as_int(usage.get("completion_tokens")) or 0
        details = usage.get("prompt_tokens_details")
        cached = as_int(details.get("cached_tokens")) if isinstance(details, dict) else None
        if self._last_total is None:
            self.stats.prompt = prompt
        else:
            self.stats.injected += max(0, prompt - self._last_total)
        self._last_total = prompt + completion
        self.stats.generated += completion
        self.stats.evaluated += (prompt - cached if cached is not None else prompt) + completion

    @staticmethod
    def _n_tokens(reply: Reply) -> int:
        if reply.usage:
            return as_int(reply.usage.get("completion_tokens")) or 0
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
