"""What every protocol provides, and the value types the loop exchanges with it."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from mathsolve.engines.base import Generation, ModelInfo
from mathsolve.errors import UsageError
from mathsolve.tools.base import ToolResult


@dataclass(frozen=True)
class Finish:
    """The solution ends; `keep` is this round's text as it stays in the transcript."""

    keep: str


@dataclass(frozen=True)
class Execute:
    """Run `code` and append the observation after `keep`."""

    keep: str
    code: str
    language: str | None = "python"


@dataclass(frozen=True)
class Continue:
    """Keep this round's text and generate again, running nothing (MathCoder's text blocks)."""

    keep: str


Step = Finish | Execute | Continue


class Protocol:
    """Base class. Subclasses set the class attributes and override the methods.

    The loop calls `prompt` once, then per round: generate until `stops`, `step`
    decides Finish, Execute or Continue, `observation` formats a tool result, and
    `after_last_round` is appended when the round limit cuts a solution short.
    A round is one generation call, so `max_rounds` bounds calls, not code blocks.

    Protocol objects are shared (the registry holds one of each): per-problem state
    never lives on them. `bind(model)` returns a copy adapted to one loaded model,
    for protocols that read something from the GGUF (chat-tir's template).
    """

    name: str = ""
    description: str = ""
    stops: tuple[str, ...] = ()
    max_rounds: int = 1
    max_new_tokens: int = 1024  # per round
    context: int = 4096  # used when neither the catalog nor the user sets one
    tool: str | None = None  # default tool backend; None: no code execution
    tool_timeout_s: float = 5.0
    answer_style: str = "tora"  # see mathsolve.scoring.answer.extract_answer
    special_prompt: bool = False  # tokenize the prompt template with special-token parsing
    render_special: bool = False  # keep special tokens' text when detokenizing
    # Temperature/top_p the reference used for sampled runs (majority voting).
    sampling: dict[str, float] = {}
    # True: the model is never decoded greedily (reasoning models repeat themselves when
    # they are; their cards say so): single solves use `sampling` too, unless the user
    # sets the values.
    sampled: bool = False
    # Special-token texts the protocol writes itself (MathCoder's <|code|> ...). Each must
    # be ONE token of the loaded model (checked at load), and text the loop appends is
    # tokenized with these parsed as special tokens, as the reference tokenizer did.
    markers: tuple[str, ...] = ()
    stateful_tool: bool = False  # one tool session per problem (variables persist)
    code_in_last_round: bool = True  # False: code written in the last round is not run
    truncated_is_wrong: bool = False  # a solution cut by the token limit has no answer
    # The grader `--grader auto` uses for this protocol's records: "reference" (the
    # 2023-2024 harnesses' rules) or "math-verify" (what today's harnesses grade with).
    grader: str = "reference"

    # Reasoning models. `think_tags`: the text between them is the model's reasoning
    # (role "thinking" in the transcript, dimmed in the terminal). `reasoning_efforts`:
    # the efforts `--reasoning` may choose (harmony's low/medium/high), the first listed
    # after `reasoning`, the default. `thinking_switch`: `--thinking off` is honoured.
    think_tags: tuple[str, str] | None = None
    reasoning_efforts: tuple[str, ...] = ()
    reasoning: str | None = None
    thinking_switch: bool = False
    thinking: bool = True

    def bind(self, model: ModelInfo) -> Protocol:
        """This protocol adapted to one loaded model; most protocols need nothing."""
        return self

    def configure(self, *, reasoning: str = "auto", thinking: str = "auto") -> Protocol:
        """This protocol with the user's `--reasoning` and `--thinking` applied ("auto":
        the protocol's own default). Asking a protocol for what it was not trained
        with is an error, not a silent no-op."""
        if reasoning == "auto" and thinking == "auto":
            return self
        if reasoning != "auto" and reasoning not in self.reasoning_efforts:
            raise UsageError(
                f"the {self.name} protocol has no reasoning effort {reasoning!r}"
                + (f" (it offers {', '.join(self.reasoning_efforts)})" if self.reasoning_efforts
                   else "; --reasoning is for protocols such as harmony")
            )
        if thinking != "auto" and not self.thinking_switch:
            raise UsageError(
                f"the {self.name} protocol cannot turn thinking {thinking}; "
                "--thinking is for protocols such as qwen3-tir"
            )
        configured = copy.copy(self)
        if reasoning != "auto":
            configured.reasoning = reasoning
        if thinking != "auto":
            configured.thinking = thinking == "on"
        return configured

    def split_thinking(self, before: str, text: str) -> list[tuple[str, str]]:
        """`text` (which follows `before` in the context) as (role, piece) pairs in order:
        "thinking" for reasoning, "model" for the rest. Joined, the pieces are `text`."""
        if self.think_tags is None or not text:
            return [("model", text)] if text else []
        opening, closing = self.think_tags
        inside = before.rfind(opening) > before.rfind(closing)
        parts: list[tuple[str, str]] = []
        at = 0
        while at < len(text):
            if inside:  # reasoning runs to its closing tag (kept with it) or the end
                end = text.find(closing, at)
                end = len(text) if end == -1 else end + len(closing)
                parts.append(("thinking", text[at:end]))
            else:  # plain text runs to the next opening tag
                end = text.find(opening, at)
                end = len(text) if end == -1 else end
                if end > at:
                    parts.append(("model", text[at:end]))
            inside, at = not inside, end
        return parts

    def prompt(self, question: str) -> str:
        raise NotImplementedError

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        raise NotImplementedError

    def observation(self, result: ToolResult, *, index: int = 0) -> str:
        """The text appended after a block ran; `index` counts the problem's tool calls from 0."""
        raise NotImplementedError

    def answer_text(self, solution: str) -> str:
        """The part of a solution its answer is read from (reasoning models: what follows
        the reasoning, as their harnesses read it); most protocols read all of it."""
        return solution

    def after_last_round(self) -> str:
        return ""

    # -- how a renderer shows this protocol's text (the loop and engines never use these) --
    def display_text(self, text: str) -> str:
        """Generated text as a reader should see it: the model's prose and ```python fences,
        with any protocol markup turned into them. The text itself is what the model saw."""
        return text

    def display_observation(self, observation: str) -> str:
        """A tool observation as a reader should see it: the output alone, without the
        fence or markers that wrap it for the model."""
        body = observation.strip("\n")
        if body.startswith("```output"):
            body = body[len("```output"):].strip("\n").removesuffix("```").rstrip("\n")
        return body


def last_fenced_block(text: str, language: str = "python") -> str:
    """The last ```python block of `text`, line based as the reference harnesses read it.

    A block opens on a line starting with three backticks + language and closes on the
    next line starting with three backticks; an unclosed last block runs to the end.
    """
    program: list[str] = []
    inside = False
    for line in text.split("\n"):
        if line.startswith("```" + language):
            program, inside = [], True
        elif line.startswith("```"):
            inside = False
        elif inside:
            program.append(line)
    return "".join(line + "\n" for line in program)


def middle_truncate(text: str, limit: int) -> str:
    """Keep the head and tail of an over-long observation: s[:h] + "..." + s[-h:]."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "..." + text[-half:]
