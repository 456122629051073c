"""The tool loop: generate, let the protocol decide, run code, feed the observation back.

It knows nothing of llama.cpp, terminals or plugins: it talks to a Session, a
Protocol, a ToolRouter and an Events sink, so each can be swapped in tests.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Protocol as TypingProtocol

from mathsolve.engines.base import Sampling, Session
from mathsolve.formats.base import Execute, Protocol
from mathsolve.sandbox import Limits
from mathsolve.tools import ToolResult, ToolRouter


@dataclass
class Segment:
    """A piece of the context. Joining every segment's text gives exactly what the model saw."""

    role: str  # "prompt" | "model" | "tool" | "note"
    text: str
    round: int | None = None


@dataclass
class ToolCall:
    index: int
    round: int
    tool: str
    code: str
    observation: str = ""  # the text appended to the context, exactly
    status: str = ""
    error: str | None = None
    stdout: str = ""
    duration_s: float = 0.0


@dataclass
class LoopResult:
    status: str  # finished | max_rounds | length | interrupted
    segments: list[Segment] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    rounds: int = 0
    generation_s: float = 0.0
    tool_s: float = 0.0
    first_token_s: float | None = None

    @property
    def solution(self) -> str:
        """Everything after the prompt: what answer extraction and graders read."""
        return "".join(s.text for s in self.segments if s.role != "prompt")

    def tool_calls_dicts(self) -> list[dict]:
        return [asdict(c) for c in self.tool_calls]


class Events(TypingProtocol):
    def on_text(self, text: str) -> None: ...
    def on_round_end(self, round_index: int) -> None: ...
    def on_tool_start(self, call: ToolCall) -> None: ...
    def on_tool_end(self, call: ToolCall) -> None: ...


class NoEvents:
    def on_text(self, text: str) -> None:
        pass

    def on_round_end(self, round_index: int) -> None:
        pass

    def on_tool_start(self, call: ToolCall) -> None:
        pass

    def on_tool_end(self, call: ToolCall) -> None:
        pass


def run_loop(
    *,
    prompt: str,
    protocol: Protocol,
    session: Session,
    router: ToolRouter | None,
    sampling: Sampling,
    limits: Limits,
    max_rounds: int | None = None,
    max_new_tokens: int | None = None,
    events: Events | None = None,
) -> LoopResult:
    events = events or NoEvents()
    max_rounds = max_rounds or protocol.max_rounds
    max_new_tokens = max_new_tokens or protocol.max_new_tokens
    result = LoopResult(status="finished", segments=[Segment("prompt", prompt)])
    solution = ""  # text after the prompt, as the protocol's rules read it
    started = time.perf_counter()

    def on_text(text: str) -> None:
        if result.first_token_s is None:
            result.first_token_s = time.perf_counter() - started
        events.on_text(text)

    try:
        for round_index in range(max_rounds):
            result.rounds = round_index + 1
            t0 = time.perf_counter()
            gen = session.generate(
                stops=protocol.stops, max_tokens=max_new_tokens, sampling=sampling, on_text=on_text
            )
            result.generation_s += time.perf_counter() - t0
            events.on_round_end(round_index)
            step = protocol.step(prompt + solution, gen, round_index)
            result.segments.append(Segment("model", step.keep, round_index))
            solution += step.keep
            if not isinstance(step, Execute) or router is None or protocol.tool is None:
                result.status = "finished" if gen.finish_reason != "length" else "length"
                break
            call = _run_tool(step, protocol, router, limits, round_index, len(result.tool_calls), events)
            result.tool_calls.append(call)
            result.tool_s += call.duration_s
            appended = call.observation
            if round_index == max_rounds - 1:
                appended += protocol.after_last_round()
                result.status = "max_rounds"
            result.segments.append(Segment("tool", call.observation, round_index))
            if appended != call.observation:
                result.segments.append(Segment("note", appended[len(call.observation):], round_index))
            solution += appended
            session.push(step.keep + appended)
    except KeyboardInterrupt:
        result.status = "interrupted"
    return result


def _run_tool(
    step: Execute,
    protocol: Protocol,
    router: ToolRouter,
    limits: Limits,
    round_index: int,
    index: int,
    events: Events,
) -> ToolCall:
    tool = router.choose(fence_language=step.language, default=protocol.tool)
    call = ToolCall(index=index, round=round_index, tool=tool.name, code=step.code)
    events.on_tool_start(call)
    t0 = time.perf_counter()
    outcome: ToolResult = tool.run(step.code, limits=limits)
    call.duration_s = time.perf_counter() - t0
    call.status, call.error, call.stdout = outcome.status, outcome.error, outcome.stdout
    call.observation = protocol.observation(outcome)
    events.on_tool_end(call)
    return call
