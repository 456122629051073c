"""The tool loop: generate, let the protocol decide, run code, feed the observation back.

It knows nothing of llama.cpp, terminals or plugins: it talks to a Session, a
Protocol, a ToolRouter and an Events sink, so each can be swapped in tests.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING
from typing import Protocol as TypingProtocol

from mathsolve.engines.base import Generation, Sampling, Session
from mathsolve.errors import UsageError
from mathsolve.formats.base import Continue, Execute, Protocol
from mathsolve.tools.base import Limits
from mathsolve.tools.router import ToolRouter

if TYPE_CHECKING:
    from mathsolve.tools import Tool, ToolSession


@dataclass
class Segment:
    """A piece of the context. Joining every segment's text gives exactly what the model saw."""

    role: str  # "prompt" | "model" | "thinking" (reasoning, see Protocol.think_tags) | "tool" | "note"
    text: str
    round: int | None = None


@dataclass
class ToolCall:
    index: int
    round: int
    tool: str
    code: str
    route: str = "default"  # which router rule chose the tool (see mathsolve.tools.ToolRouter)
    observation: str = ""  # the text appended to the context, exactly
    status: str = ""
    error: str | None = None
    stdout: str = ""
    duration_s: float = 0.0


@dataclass
class LoopResult:
    # finished | max_rounds | length | interrupted | cancelled (voting stopped early, or the
    # time budget ran out: see run_loop's `cancel`)
    status: str
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
    def on_start(self, protocol: Protocol) -> None: ...
    def on_text(self, text: str) -> None: ...
    def on_round_end(self, round_index: int) -> None: ...
    def on_tool_start(self, call: ToolCall) -> None: ...
    def on_tool_end(self, call: ToolCall) -> None: ...


class NoEvents:
    def on_start(self, protocol: Protocol) -> None:
        pass

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
    tool_slots: threading.Semaphore | None = None,
    cancel: threading.Event | None = None,
) -> LoopResult:
    """`tool_slots`: when problems run in threads, a semaphore bounding the code blocks
    running at once across all of them (a block waits for a slot; its duration_s counts
    from when it got one).

    `cancel`: set from another thread, it ends the solve with status "cancelled": between
    rounds, or within a round at the next piece of streamed text (a session watching the
    event itself, the batched llama.cpp engine's, ends the round at its next token with
    finish_reason "cancelled"; a round that ended first keeps its result, and a solution that
    ends with it is finished, not cancelled). The round's text so far is kept in the
    transcript; no code block starts once it is set. A block already running finishes first:
    tools have their own time-out."""
    events = events or NoEvents()
    events.on_start(protocol)  # a renderer learns how this protocol's text is shown
    max_rounds = max_rounds or protocol.max_rounds
    max_new_tokens = max_new_tokens or protocol.max_new_tokens
    result = LoopResult(status="finished", segments=[Segment("prompt", prompt)])
    solution = ""  # text after the prompt, as the protocol's rules read it
    started = time.perf_counter()
    tools = _ToolRunner(protocol, router, limits, events, tool_slots)

    streamed: list[str] = []  # this round's text so far: kept when a cancel cuts the round
    # A session given this very event (the batched engine's) ends its round itself, at its next
    # token; a round it finished first keeps its result. Others are stopped from on_text.
    cut_from_text = cancel is not None and getattr(session, "cancel_event", None) is not cancel

    def on_text(text: str) -> None:
        if cut_from_text and cancel.is_set():
            raise _Cancelled  # ends the engine's round; caught below
        if result.first_token_s is None:
            result.first_token_s = time.perf_counter() - started
        streamed.append(text)
        events.on_text(text)

    try:
        for round_index in range(max_rounds):
            if cancel is not None and cancel.is_set():
                result.status = "cancelled"
                break
            result.rounds = round_index + 1
            last = round_index == max_rounds - 1
            t0 = time.perf_counter()
            streamed.clear()
            try:
                gen = session.generate(
                    stops=protocol.stops, max_tokens=max_new_tokens, sampling=sampling, on_text=on_text
                )
            except _Cancelled:
                gen = Generation(text="".join(streamed), finish_reason="cancelled")
            result.generation_s += time.perf_counter() - t0
            events.on_round_end(round_index)
            if gen.finish_reason == "cancelled":
                # The text so far, as written (the protocol's rules read whole rounds only).
                for role, piece in protocol.split_thinking(prompt + solution, gen.text):
                    result.segments.append(Segment(role, piece, round_index))
                solution += gen.text
                result.status = "cancelled"
                break
            step = protocol.step(prompt + solution, gen, round_index)
            for role, piece in protocol.split_thinking(prompt + solution, step.keep):
                result.segments.append(Segment(role, piece, round_index))
            solution += step.keep
            if gen.finish_reason == "length" and gen.n_tokens == 0:
                result.status = "length"  # the context is full: nothing more can be generated
                break
            if isinstance(step, Continue):
                result.status = "max_rounds"  # stays so only if this was the last round
                session.push(step.keep)
                continue
            if not isinstance(step, Execute) or router is None or protocol.tool is None:
                result.status = "finished" if gen.finish_reason != "length" else "length"
                break
            if last and not protocol.code_in_last_round:
                result.status = "max_rounds"
                break
            if cancel is not None and cancel.is_set():  # no code runs once cancelled
                result.status = "cancelled"
                break
            call = tools.run(step, round_index, len(result.tool_calls))
            result.tool_calls.append(call)
            result.tool_s += call.duration_s
            appended = call.observation
            result.status = "max_rounds"  # overwritten by a later round that finishes
            if last:
                appended += protocol.after_last_round()
            result.segments.append(Segment("tool", call.observation, round_index))
            if appended != call.observation:
                result.segments.append(Segment("note", appended[len(call.observation):], round_index))
            solution += appended
            session.push(step.keep + appended)
    except KeyboardInterrupt:
        result.status = "interrupted"
    finally:
        tools.close()
    return result


class _Cancelled(Exception):
    """Raised through the engine from the loop's on_text to end a round when cancelled."""


class _ToolRunner:
    """Runs the blocks of one problem: picks the backend, and for stateful protocols
    keeps one session per backend open until the problem ends."""

    def __init__(
        self,
        protocol: Protocol,
        router: ToolRouter | None,
        limits: Limits,
        events: Events,
        slots: threading.Semaphore | None = None,
    ) -> None:
        self.protocol, self.router, self.limits, self.events = protocol, router, limits, events
        self.slots = slots if slots is not None else contextlib.nullcontext()
        self.sessions: dict[str, ToolSession] = {}

    def run(self, step: Execute, round_index: int, index: int) -> ToolCall:
        assert self.router is not None
        route = self.router.route(
            step.code, fence_language=step.language, default=self.protocol.tool, stateful=self.protocol.stateful_tool
        )
        tool = route.tool
        call = ToolCall(index=index, round=round_index, tool=tool.name, code=step.code, route=route.reason)
        self.events.on_tool_start(call)
        with self.slots:
            t0 = time.perf_counter()
            if self.protocol.stateful_tool:
                outcome = self._session(tool).run(step.code)
            else:
                outcome = tool.run(step.code, limits=self.limits)
            call.duration_s = time.perf_counter() - t0
        call.status, call.error, call.stdout = outcome.status, outcome.error, outcome.stdout
        call.observation = self.protocol.observation(outcome, index=index)
        self.events.on_tool_end(call)
        return call

    def _session(self, tool: Tool) -> ToolSession:
        session = self.sessions.get(tool.name)
        if session is None:
            opener = getattr(tool, "open_session", None)
            if opener is None:
                raise UsageError(
                    f"the {self.protocol.name} protocol needs a tool that keeps state across blocks, "
                    f"and the {tool.name!r} backend cannot (it has no open_session)"
                )
            session = self.sessions[tool.name] = opener(self.limits)
        return session

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()
