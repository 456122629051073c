"""The llama.cpp engine (llama-cpp-python): one loaded GGUF model whose sessions (one per
problem, mathsolve.engines.llama.session) share it one at a time."""

from __future__ import annotations

import ctypes
import os
import time
from typing import Callable

from mathsolve.engines.base import EngineInfo, ModelInfo
from mathsolve.engines.llama.params import (
    N_BATCH,
    check_kv_memory,
    gpu_offload_supported,
    model_params,
    quiet_logs,
    resolve_flash_attn,
)
from mathsolve.engines.llama.repack import Verdict, decide
from mathsolve.engines.llama.session import LlamaSession
from mathsolve.errors import EngineError
from mathsolve.ggufinfo import read_gguf
from mathsolve.settings import available_cores


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

        quiet_logs()

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
