"""The engine interface the loop talks to.

An engine loads a model once; `session(prompt)` starts one problem. A session keeps
its own context: `generate` continues it, and `push(text)` appends what the protocol
keeps of the round plus the tool observation, so an engine can re-use the tokens it
already evaluated (prefix reuse) instead of re-reading the whole transcript.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass(frozen=True)
class Generation:
    """One generation call: the text (without the stop string) and why it ended."""

    text: str
    # "stop" (a stop string), "eos", "length" (token limit or context full), "cancelled"
    # (the batched llama.cpp engine: the session was cancelled, see engines/llama/batched.py)
    finish_reason: str
    stop: str | None = None  # the stop string that ended it, if any
    n_tokens: int = 0


@dataclass(frozen=True)
class ModelInfo:
    """What a protocol may read from the loaded model (see Protocol.bind)."""

    chat_template: str | None = None  # the GGUF's tokenizer.chat_template
    bos_token: str = ""
    eos_token: str = ""
    add_bos: bool = False  # the engine adds BOS itself
    name: str = ""


@dataclass(frozen=True)
class EngineRequest:
    """What an engine factory gets, local and remote engines alike: `factory(request)`.

    A local engine (registered with `local=True`, the default) loads `model_path`, a GGUF
    mathsolve resolved (and downloaded) first; a remote one (`local=False`) gets the
    model as the server names it in `model` (None: the server's only model) and the
    server's address. Each reads the fields it needs and ignores the rest, so fields can
    be added without breaking engine plugins.
    """

    model: str | None = None  # the model as the user named it (a server's model id)
    model_path: str | None = None  # local engines: the GGUF to load
    n_ctx: int | None = None
    n_gpu_layers: int | None = None
    threads: int | None = None
    extra_buffers: str = "auto"
    flash_attn: str = "auto"
    kv_cache: str = "f16"
    base_url: str | None = None  # remote engines: the server's API root
    api_key_env: str | None = None
    request_timeout: float = 600.0
    verbose: bool = False
    notify: Callable[[str], None] | None = None  # one-line progress notes for the user


@dataclass(frozen=True)
class EngineEntry:
    """A registered engine: its factory, and whether it loads a local model file."""

    name: str
    factory: Callable[[EngineRequest], Engine]
    local: bool = True


@dataclass
class Sampling:
    temperature: float = 0.0  # 0: greedy, as the published numbers were measured
    top_p: float = 1.0
    top_k: int = 0  # 0: off (vLLM's default; llama.cpp's own default is 40)
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: int = 0


@dataclass
class TokenStats:
    prompt: int = 0  # tokens of the prompt
    generated: int = 0  # tokens the model sampled
    injected: int = 0  # tokens appended by the loop (tool observations, re-tokenized text)
    evaluated: int = 0  # tokens the engine actually ran through the model
    retokenized: int = 0  # appends that fell back to plain tokenization (see mathsolve/engines/llama/session.py)

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class EngineInfo:
    name: str
    model_path: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    model: ModelInfo = field(default_factory=ModelInfo)  # what protocols may read (Protocol.bind)


class Session(Protocol):
    stats: TokenStats

    def generate(
        self,
        *,
        stops: tuple[str, ...],
        max_tokens: int,
        sampling: Sampling,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation: ...

    def push(self, text: str) -> None: ...

    def close(self) -> None: ...


class Engine(Protocol):
    """An inference engine. It may also offer `marker_problems(markers) -> list[str]`,
    the markers that are not single special tokens of the model (checked at load for
    protocols that declare `markers`); engines that cannot tell leave it out."""

    info: EngineInfo

    def session(
        self,
        prompt: str,
        *,
        special: bool,
        render_special: bool,
        literal: str | None = None,
        markers: tuple[str, ...] = (),
    ) -> Session:
        """`literal`: the user's text inside `prompt`, never parsed for special tokens.
        `markers`: special-token texts to parse as such in text pushed later."""
        ...

    def close(self) -> None: ...


def find_stop(text: str, stops: tuple[str, ...], start: int = 0) -> tuple[int, str] | None:
    """Earliest occurrence of any stop string in text[start:]: (index, stop)."""
    best: tuple[int, str] | None = None
    for stop in stops:
        i = text.find(stop, start)
        if i != -1 and (best is None or i < best[0]):
            best = (i, stop)
    return best


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters could still grow into a stop string.

    Streaming must not print half of a stop string that is then cut off.
    """
    keep = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), keep, -1):
            if text.endswith(stop[:n]):
                keep = n
                break
    return keep
