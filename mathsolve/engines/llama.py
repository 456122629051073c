"""The llama.cpp engine (llama-cpp-python): load once, stream, re-use the KV cache.

Prefix reuse: a session keeps the token ids of its whole context. After a round the
loop pushes the text to keep (the round, right-stripped, plus the tool output). The
session re-uses the tokens the model generated as long as their bytes are a prefix
of that text, and tokenizes only the remainder, checked to detokenize to exactly
those bytes. llama.cpp then evaluates just the new tokens. The TEXT the model sees
is byte-identical to what the reference pipelines fed (they re-tokenized whole
strings); only token boundaries at the seam may differ. When a remainder cannot
be tokenized verifiably on its own, the session tokenizes it plainly (the text may
then differ by a leading space on SentencePiece vocabularies) and counts it in
`stats.retokenized`. A protocol's markers (MathCoder's `<|execution|>`) in pushed
text are tokenized as the special tokens they are.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import time
from typing import Callable

from mathsolve.engines.base import EngineInfo, Generation, ModelInfo, Sampling, TokenStats, find_stop, held_back
from mathsolve.engines.repack import Verdict, decide
from mathsolve.errors import EngineError, UsageError
from mathsolve.ggufinfo import read_gguf
from mathsolve.settings import available_cores


# Tokens per llama_decode call when evaluating a prompt or an appended observation; the
# tool loop's appends are far shorter, so it only matters for long prompts (measured by
# `python -m bench --only settings`, see docs/performance.md). On the CPU 256 and 512
# evaluate prompts alike; on a GPU 2048 was at most a few percent faster than 512 in the
# one measurement so far, not enough to pay for larger buffers.
N_BATCH = 512


def gpu_offload_supported() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


@contextlib.contextmanager
def model_params(extra_buffers: bool):
    """Set `use_extra_bufts` for one `Llama(...)` construction.

    `Llama()` exposes no keyword for it; it builds its struct from
    `llama_model_default_params()`, so that factory is wrapped while loading.
    """
    import llama_cpp.llama as llama_module

    original = llama_module.llama_cpp.llama_model_default_params

    def params():
        p = original()
        p.use_extra_bufts = extra_buffers
        return p

    llama_module.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        llama_module.llama_cpp.llama_model_default_params = original


def resolve_flash_attn(setting: str | bool, kv_cache: str, *, on_gpu: bool) -> bool:
    """Flash attention on or off. `auto` turns it on where it pays: on a GPU (faster
    attention, less memory at long contexts) and for a quantized KV cache, which
    llama.cpp only supports with it (a quantized V cache needs it). On the CPU it
    stays off: measured there, it did not speed decoding (docs/performance.md)."""
    if isinstance(setting, bool):
        setting = "on" if setting else "off"
    quantized = kv_cache != "f16"
    if setting == "off" and quantized:
        raise UsageError(f"kv_cache {kv_cache} needs flash attention (llama.cpp quantizes the KV cache "
                         "only with it): set flash_attn to auto or on")
    return setting == "on" or (setting == "auto" and (on_gpu or quantized))


# Bytes per stored number of each KV cache type (ggml blocks of 32: 34 bytes for q8_0, 18 for q4_0).
_KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def available_memory() -> int | None:
    """Bytes of memory a new allocation can still get: MemAvailable on Linux, else the
    physical memory; None when the OS does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_kv_memory(info, n_ctx: int, kv_cache: str) -> None:
    """Refuse a context whose KV cache cannot fit in this machine's memory, before llama.cpp
    tries: on the CPU the allocation may seem to succeed (memory is overcommitted) and the
    process is then killed when the cache fills, losing the run."""
    per_token = info.kv_values_per_token()
    free = available_memory()
    if per_token is None or free is None:
        return
    need = per_token * n_ctx * _KV_BYTES.get(kv_cache, 2.0)
    if need > free:
        raise UsageError(f"a context of {n_ctx:,} tokens needs {need / 2**30:.1f} GiB for the KV cache, more than "
                         f"the {free / 2**30:.1f} GiB of memory available; lower n_ctx (or use --kv-cache q8_0)")


class LlamaEngine:
    """One loaded GGUF model; sessions share it one at a time."""

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int,
        n_gpu_layers: int | None = None,
        threads: int | None = None,
        extra_buffers: str = "auto",
        flash_attn: str | bool = "auto",
        kv_cache: str = "f16",
        verbose: bool = False,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        info = read_gguf(model_path)
        import llama_cpp

        gpu = gpu_offload_supported()
        if n_gpu_layers is None:
            n_gpu_layers = -1 if gpu else 0
        threads = threads or available_cores()
        flash_attn = resolve_flash_attn(flash_attn, kv_cache, on_gpu=gpu and n_gpu_layers != 0)
        if not (gpu and n_gpu_layers != 0):
            check_kv_memory(info, n_ctx, kv_cache)
        kv_type = getattr(llama_cpp, f"GGML_TYPE_{kv_cache.upper()}")
        self.verdict: Verdict = decide(
            model_path,
            setting=extra_buffers,
            file_type=info.file_type,
            weights_on_gpu=gpu and n_gpu_layers == -1,
            notify=notify,
        )
        started = time.perf_counter()
        try:
            with model_params(self.verdict.extra_buffers):
                self.llm = llama_cpp.Llama(
                    model_path,
                    n_ctx=n_ctx,
                    n_batch=N_BATCH,
                    n_gpu_layers=n_gpu_layers,
                    n_threads=threads,
                    n_threads_batch=threads,
                    flash_attn=flash_attn,
                    type_k=kv_type,
                    type_v=kv_type,
                    verbose=verbose,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise EngineError(f"llama.cpp could not load {model_path}: {exc}") from None
        self.load_s = time.perf_counter() - started
        # llama.cpp may round a small context up, but llama-cpp-python's token buffer keeps
        # the size asked for: the smaller of the two is what fits (beyond it, eval fails).
        self.n_ctx = min(self.llm.n_ctx(), len(self.llm.input_ids))
        self._vocab = self.llm._model.vocab
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._eog: dict[int, bool] = {}
        self.evaluated = 0
        self._count_evaluations()
        self.info = EngineInfo(
            name="llama.cpp",
            model_path=str(model_path),
            details={
                "llama_cpp_version": llama_cpp.__version__,
                "n_ctx": self.n_ctx,
                "n_gpu_layers": n_gpu_layers,
                "gpu_offload_supported": gpu,
                "threads": threads,
                "n_batch": N_BATCH,
                "extra_buffers": self.verdict.extra_buffers,
                "extra_buffers_reason": self.verdict.reason,
                "flash_attn": flash_attn,
                "kv_cache": kv_cache,
                "load_s": round(self.load_s, 3),
                "architecture": info.architecture,
                "file_type": info.file_type,
            },
            model=self._model_info(os.path.basename(str(model_path))),
        )

    def _model_info(self, name: str) -> ModelInfo:
        model = self.llm._model
        return ModelInfo(
            chat_template=self.llm.metadata.get("tokenizer.chat_template"),
            bos_token=self.piece(model.token_bos(), True).decode("utf-8", "replace") if model.token_bos() >= 0 else "",
            eos_token=self.piece(model.token_eos(), True).decode("utf-8", "replace") if model.token_eos() >= 0 else "",
            add_bos=bool(model.add_bos_token()),
            name=name,
        )

    def marker_problems(self, markers: tuple[str, ...]) -> list[str]:
        """The markers that are not exactly one token rendering back to their own text.

        A conversion that dropped the added tokens splits `<|code|>` into several
        ordinary pieces; the model then never sees the markers it was trained on.
        """
        bad = []
        for marker in markers:
            tokens = self.tokenize(marker.encode("utf-8"), add_bos=False, special=True)
            if len(tokens) != 1 or self.piece(tokens[0], True) != marker.encode("utf-8"):
                bad.append(marker)
        return bad

    def _count_evaluations(self) -> None:
        # Every token llama.cpp runs through the model passes Llama.eval; counting
        # there measures prefix reuse exactly.
        original = self.llm.eval

        def counted(tokens):
            self.evaluated += len(tokens)
            return original(tokens)

        self.llm.eval = counted  # type: ignore[method-assign]

    # -- tokens <-> bytes ------------------------------------------------------
    def piece(self, token: int, special: bool) -> bytes:
        key = (token, special)
        cached = self._pieces.get(key)
        if cached is None:
            import llama_cpp

            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, size, 0, special)
                if n >= 0:
                    cached = buf.raw[:n]
                    break
                size = -n  # negative: the size needed
            self._pieces[key] = cached
        return cached

    def detokenize(self, tokens: list[int], special: bool) -> bytes:
        return b"".join(self.piece(t, special) for t in tokens)

    def tokenize(self, data: bytes, *, add_bos: bool, special: bool) -> list[int]:
        return self.llm.tokenize(data, add_bos=add_bos, special=special)

    def is_eog(self, token: int) -> bool:
        eog = self._eog.get(token)
        if eog is None:
            import llama_cpp

            eog = self._eog[token] = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        return eog

    def session(
        self,
        prompt: str,
        *,
        special: bool = False,
        render_special: bool = False,
        literal: str | None = None,
        markers: tuple[str, ...] = (),
    ) -> LlamaSession:
        return LlamaSession(
            self, prompt, special=special, render_special=render_special, literal=literal, markers=markers
        )

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None  # type: ignore[assignment]


class LlamaSession:
    def __init__(
        self,
        engine: LlamaEngine,
        prompt: str,
        *,
        special: bool,
        render_special: bool,
        literal: str | None = None,
        markers: tuple[str, ...] = (),
    ) -> None:
        self.engine = engine
        self.render_special = render_special
        self.markers = tuple(m.encode("utf-8") for m in markers)
        self.tokens = self._prompt_tokens(prompt, special, literal)
        self.stats = TokenStats(prompt=len(self.tokens))
        self._pending: list[int] = []

    def _prompt_tokens(self, prompt: str, special: bool, literal: str | None) -> list[int]:
        """Tokenize the prompt in one call, as the reference did, unless that would turn
        special-token text inside the user's `literal` (e.g. "<|im_end|>" in a question)
        into control tokens: then the literal part is tokenized as plain text."""
        tokenize = self.engine.tokenize
        data = prompt.encode("utf-8")
        lit = (literal or "").encode("utf-8")
        if not (special and lit and lit in data) or tokenize(lit, add_bos=False, special=True) == tokenize(
            lit, add_bos=False, special=False
        ):
            return tokenize(data, add_bos=True, special=special)
        at = data.index(lit)
        head = tokenize(data[:at], add_bos=True, special=True)
        body = tokenize(lit, add_bos=False, special=False)
        tail = tokenize(data[at + len(lit) :], add_bos=False, special=True)
        return head + body + tail

    # -- generation ----------------------------------------------------------------
    def generate(
        self,
        *,
        stops: tuple[str, ...],
        max_tokens: int,
        sampling: Sampling,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        engine = self.engine
        llm = engine.llm
        budget = engine.n_ctx - len(self.tokens)
        if budget <= 0:
            return Generation(text="", finish_reason="length")
        max_tokens = min(max_tokens, budget)
        llm.set_seed(sampling.seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, emitted, reason, stop = "", 0, "length", None
        pending: list[int] = []
        evaluated_before = engine.evaluated
        longest_stop = max((len(s) for s in stops), default=0)
        # Text can only be held back when its tail holds the first character of a stop
        # string; checking that first keeps held_back() off the per-token path in prose.
        stop_starts = "".join({s[0] for s in stops if s})
        generator = llm.generate(
            self.tokens,
            temp=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            reset=True,
        )
        try:
            for token in generator:
                if engine.is_eog(token):
                    reason = "eos"
                    break
                pending.append(token)
                # A stop string can only end in the new piece: search from just before it.
                search_from = max(0, len(text) - longest_stop + 1)
                text += decoder.decode(engine.piece(token, self.render_special))
                hit = find_stop(text, stops, search_from)
                if hit is not None:
                    text, reason, stop = text[: hit[0]], "stop", hit[1]
                    break
                if on_text is not None:
                    tail = text[len(text) - longest_stop + 1 :] if longest_stop > 1 else ""
                    hold = held_back(text, stops) if any(c in tail for c in stop_starts) else 0
                    safe_end = len(text) - hold
                    if safe_end > emitted:
                        on_text(text[emitted:safe_end])
                        emitted = safe_end
                if len(pending) >= max_tokens:
                    break
        finally:
            generator.close()
            self._pending = pending
            self.stats.generated += len(pending)
            # What llama.cpp ran: the context suffix not yet in its cache, plus
            # each generated token fed back.
            self.stats.evaluated += engine.evaluated - evaluated_before
        text += decoder.decode(b"", final=True) if reason != "stop" else ""
        if on_text is not None and len(text) > emitted:
            on_text(text[emitted:])
        return Generation(text=text, finish_reason=reason, stop=stop, n_tokens=len(pending))

    # -- appending text -------------------------------------------------------------
    def push(self, text: str) -> None:
        """Append `text` after the context: re-use generated tokens, tokenize the rest."""
        data = text.encode("utf-8")
        offset, reused = 0, 0
        for token in self._pending:
            piece = self.engine.piece(token, self.render_special)
            if not piece or not data.startswith(piece, offset):
                break
            offset += len(piece)
            reused += 1
        tail: list[int] = []
        for chunk, is_marker in self._split_markers(data[offset:]):
            if is_marker:
                tail += self.engine.tokenize(chunk, add_bos=False, special=True)
                continue
            tokens = self._tokenize_continuation(chunk)
            if tokens is None:  # no verifiable splice: tokenize the chunk plainly
                self.stats.retokenized += 1
                tokens = self.engine.tokenize(chunk, add_bos=False, special=False)
            tail += tokens
        self.tokens = self.tokens + self._pending[:reused] + tail
        self.stats.injected += len(tail)
        self._pending = []

    def _split_markers(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Cut `data` around the protocol's markers: (chunk, is_marker) in order.

        The reference re-tokenized its whole transcript with special tokens parsed, so a
        marker written by the loop (`<|execution|>`) became the marker token; plain text
        around it is tokenized with special parsing off.
        """
        chunks: list[tuple[bytes, bool]] = []
        start = 0
        while self.markers:
            hits = [(data.find(m, start), m) for m in self.markers]
            hits = [(i, m) for i, m in hits if i != -1]
            if not hits:
                break
            i, marker = min(hits)
            if i > start:
                chunks.append((data[start:i], False))
            chunks.append((marker, True))
            start = i + len(marker)
        if start < len(data):
            chunks.append((data[start:], False))
        return chunks

    def _tokenize_continuation(self, data: bytes) -> list[int] | None:
        """Tokens that detokenize to exactly `data` when appended mid-text.

        SentencePiece vocabularies prepend a space to a string tokenized on its own;
        tokenizing behind a short anchor and dropping the anchor's tokens avoids it.
        """
        if not data:
            return []
        engine = self.engine
        tokens = engine.tokenize(data, add_bos=False, special=False)
        if engine.detokenize(tokens, False) == data:
            return tokens
        for anchor in (b"\n", b"a", b"."):
            tokens = engine.tokenize(anchor + data, add_bos=False, special=False)
            prefix = b""
            for j, token in enumerate(tokens):
                prefix += engine.piece(token, False)
                if prefix in (anchor, b" " + anchor):
                    rest = tokens[j + 1 :]
                    if engine.detokenize(rest, False) == data:
                        return rest
                    break
                if len(prefix) > len(anchor) + 1:
                    break
        return None

    def close(self) -> None:
        self._pending = []
