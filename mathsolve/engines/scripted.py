"""A scripted engine: replays fixed model outputs. For tests of the loop and for replay.

Each script entry is what the model "writes" in one round, stop string included; the
session cuts it at the first stop string exactly as a real engine would and records
the full context it was shown, so tests can check the text fed back byte for byte.
"""

from __future__ import annotations

from typing import Callable, Sequence

from mathsolve.engines.base import EngineInfo, Generation, Sampling, TokenStats, find_stop


class ScriptedSession:
    def __init__(self, prompt: str, outputs: list[str]) -> None:
        self.context = prompt
        self.outputs = outputs
        self.stats = TokenStats(prompt=len(prompt))
        self.contexts_seen: list[str] = []

    def generate(
        self,
        *,
        stops: tuple[str, ...],
        max_tokens: int,
        sampling: Sampling,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        self.contexts_seen.append(self.context)
        if not self.outputs:
            return Generation(text="", finish_reason="eos")
        raw = self.outputs.pop(0)
        hit = find_stop(raw, stops)
        text, reason, stop = (raw[: hit[0]], "stop", hit[1]) if hit else (raw, "eos", None)
        if len(text) > max_tokens:  # one character stands for one token here
            text, reason, stop = text[:max_tokens], "length", None
        if on_text and text:
            on_text(text)
        self.stats.generated += len(text)
        return Generation(text=text, finish_reason=reason, stop=stop, n_tokens=len(text))

    def push(self, text: str) -> None:
        self.context += text
        self.stats.injected += len(text)

    def close(self) -> None:
        pass


class ScriptedEngine:
    """Engine whose every session replays `outputs` (a list per session, or one list)."""

    def __init__(self, outputs: Sequence[str] | Sequence[Sequence[str]]) -> None:
        self.info = EngineInfo(name="scripted")
        nested = bool(outputs) and not isinstance(outputs[0], str)
        self._scripts = [list(o) for o in outputs] if nested else [list(outputs)]  # type: ignore[arg-type]
        self.sessions: list[ScriptedSession] = []

    def session(
        self,
        prompt: str,
        *,
        special: bool = False,
        render_special: bool = False,
        literal: str | None = None,
        markers: tuple[str, ...] = (),
    ) -> ScriptedSession:
        script = self._scripts.pop(0) if len(self._scripts) > 1 else list(self._scripts[0])
        s = ScriptedSession(prompt, script)
        self.sessions.append(s)
        return s

    def close(self) -> None:
        pass
