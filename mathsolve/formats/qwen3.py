"""Qwen3 and Qwen3.5 (`qwen3-tir`): a `python` tool called through the model's own chat template.

Qwen3, Qwen3.5 and Qwen3-Coder were trained to call the functions their chat template
declares (`apply_chat_template(..., tools=[...])`). The model writes a call between
`<tool_call>` and `</tool_call>`: Qwen3 as JSON (`{"name": ..., "arguments": {...}}`),
Qwen3.5 and Qwen3-Coder as XML parameters (`<function=NAME>` / `<parameter=KEY>`); both
are read. The harness answers with a `tool` message, which the template wraps in
`<tool_response>` inside a user turn.

Nothing the loop appends is written here: the prompt is the template rendered with the
tool declared, and each observation is what the template renders after the assistant's
`</tool_call>` once a tool message follows (the turn's end, the tool turn, the next
generation prompt), found by rendering that conversation. So the context is, byte for
byte, the template's rendering of the conversation. Reasoning sits between `<think>` and
`</think>`; `--thinking off` renders the template with `enable_thinking=False`.

Sources: the chat templates of Qwen/Qwen3-0.6B and Qwen/Qwen3.5-4B (tests/fixtures), the
Qwen3 model card's best practices (sampling, output length, the math instruction),
NVIDIA-NeMo/Skills (the harness that runs Qwen3 with a stateful python tool: its tool
replies and error messages), vLLM's `qwen3coder_tool_parser.py` (reading XML parameters).
See docs/protocols.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mathsolve.errors import UsageError
from mathsolve.formats.base import Continue, Execute, Finish, Generation, ModelInfo, Protocol, Step, middle_truncate
from mathsolve.formats.chat_tir import bind_template, render_chat
from mathsolve.tools import ToolResult

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
TURN_END = "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
TOOL_NAME = "python"

# The one tool declared to the model, an OpenAI-style function schema (the shape the
# Qwen templates render with `tojson`). Our words: the sources name no python tool.
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": (
            "Run Python code in a stateful Python session: variables, imports and functions persist from "
            "one call to the next. Returns what the code prints, then the value of its last line when that "
            "is a bare expression, or the error it raised."
        ),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
}
# The Qwen3 model card's "Math Problems" prompt, appended to the question in the user turn.
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# NeMo-Skills' replies to a call it cannot run (nemo_skills/inference/model/tool_call.py):
# arguments that do not parse, and a call that fails (an unknown tool, a missing argument).
PARSE_ERROR = json.dumps({"error": "Tool argument parsing failed."})
CALL_ERROR = json.dumps({"error": "Tool execution failed."})
# NeMo-Skills' sandbox reply when the code overruns its time (its stderr "Timed out\n").
TIMED_OUT = "Timed out"

# Marks where the tool message's content lands in a rendering (private-use characters,
# which no template adds and no trimming removes).
_SENTINEL = "\ue000tool-output\ue001"
# The conversation observations are derived from: any question, any call.
_PLACEHOLDER_QUESTION = "What is 1 + 1?"
_PLACEHOLDER_CALL = {"type": "function", "function": {"name": TOOL_NAME, "arguments": {"code": "print(1 + 1)"}}}

_FUNCTION = re.compile(r"<function=([^>]*)>(.*?)(?:</function>|$)", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>]*)>(.*?)(?:</parameter>|(?=<parameter=)|$)", re.DOTALL)


@dataclass(frozen=True)
class Call:
    """A tool call read from the model's text: the code to run, or the tool message that
    answers a call that cannot run."""

    code: str | None = None
    error: str | None = None


def read_call(text: str) -> Call:
    """The call `text` ends in (the context up to a `</tool_call>` the model just wrote): what
    follows its last `<tool_call>`, as JSON (Qwen3) or XML parameters (Qwen3.5). A closing tag
    with no call open (the template's own example in the system turn is closed) reads as a
    call that does not parse."""
    at = text.rfind(CALL_OPEN)
    if at == -1 or text.rfind(CALL_CLOSE) > at:
        return Call(error=PARSE_ERROR)
    body = text[at + len(CALL_OPEN):]
    try:
        name, arguments = _xml_call(body) if "<function=" in body else _json_call(body)
    except ValueError:
        return Call(error=PARSE_ERROR)
    code = arguments.get("code")
    if name != TOOL_NAME or not isinstance(code, str):
        return Call(error=CALL_ERROR)
    return Call(code=code)


def _json_call(body: str) -> tuple[str, dict[str, Any]]:
    call = json.loads(body)  # json.JSONDecodeError is a ValueError
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ValueError("not a call")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # the OpenAI wire form: arguments as a JSON string
        arguments = json.loads(arguments)
    if not isinstance(arguments, dict):
        raise ValueError("arguments are not an object")
    return call["name"].strip(), arguments


def _xml_call(body: str) -> tuple[str, dict[str, Any]]:
    function = _FUNCTION.search(body)
    if function is None:
        raise ValueError("no <function=...>")
    arguments: dict[str, Any] = {}
    for key, value in _PARAMETER.findall(function.group(2)):
        # The template writes "<parameter=KEY>\n" + value + "\n</parameter>": one newline on
        # each side belongs to the markup (vLLM's qwen3_coder parser strips them too).
        value = value.removeprefix("\n")
        arguments[key.strip()] = value[:-1] if value.endswith("\n") else value
    return function.group(1).strip(), arguments


class Qwen3TirProtocol(Protocol):
    name = "qwen3-tir"
    description = "Qwen3 / Qwen3.5: the GGUF's chat template with a python tool, <tool_call> JSON or XML"
    stops = (CALL_CLOSE, TURN_END)
    max_rounds = 16  # a round per call: up to 15 calls and the final answer
    max_new_tokens = 32768  # the Qwen3 model card's output length
    context = 40960  # Qwen3's max_position_embeddings: 32,768 for the output + 8,192 for the prompt
    tool = "python"
    tool_timeout_s = 10.0  # NeMo-Skills' exec_timeout_s for its python tool
    stateful_tool = True
    answer_style = "boxed"
    grader = "math-verify"
    special_prompt = True
    render_special = True  # <think> and <tool_call> stay visible however a conversion typed them
    # Every special token the loop appends (tool turns) or re-tokenizes: each must be one
    # token of the model, which a Qwen3 / Qwen3.5 GGUF has.
    markers = ("<|im_start|>", TURN_END, CALL_OPEN, CALL_CLOSE, RESPONSE_OPEN, RESPONSE_CLOSE, THINK_OPEN, THINK_CLOSE)
    think_tags = (THINK_OPEN, THINK_CLOSE)
    thinking_switch = True
    thinking = True
    output_limit = 4000  # characters of a tool's output kept: the first and last 2,000
    template: str | None = None
    model = ModelInfo()

    # The Qwen3 model card's sampling for each mode. It advises against greedy decoding
    # ("can lead to performance degradation and endless repetitions"), so single solves
    # sample too (`sampled`), with seed --seed.
    sampled = True

    @property
    def sampling(self) -> dict[str, float]:  # type: ignore[override]
        if self.thinking:
            return {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0}
        return {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0}

    # -- the model's template --------------------------------------------------------------
    def bind(self, model: ModelInfo) -> Qwen3TirProtocol:
        bound = bind_template(self, model, "use a Qwen3 or Qwen3.5 GGUF")
        bound._check_template()
        return bound

    def _check_template(self) -> None:
        """Refuse, at load, a template that cannot declare the tool or answer a call."""
        fix = "use a Qwen3 or Qwen3.5 GGUF, or --protocol chat-tir for this model"
        user = [self._user(_PLACEHOLDER_QUESTION)]
        try:
            declared = self._render(user)
            plain = self._render(user, declare=False)
        except UsageError as exc:
            raise UsageError(f"{exc}; {fix}") from None
        if declared == plain or TOOL["function"]["description"] not in declared:
            raise UsageError(
                f"the qwen3-tir protocol declares a python tool through the model's chat template, and the "
                f"template of {self.model.name or 'this model'} ignores tools; {fix}"
            )
        self._tool_turn(TIMED_OUT, fix=fix)  # raises when a tool reply cannot be rendered

    def _render(self, messages: list[dict[str, Any]], *, declare: bool = True) -> str:
        """`messages` through the model's template with the generation prompt; `declare`: with
        the python tool declared."""
        if self.template is None:
            raise UsageError("the qwen3-tir protocol must be bound to a model first (Protocol.bind)")
        try:
            return render_chat(self.template, messages, self.model, tools=[TOOL] if declare else None,
                               enable_thinking=self.thinking)
        except Exception as exc:  # a template's raise_exception, a syntax or type error
            raise UsageError(f"the model's chat template cannot be rendered: {exc}") from None

    @staticmethod
    def _user(question: str) -> dict[str, Any]:
        # In the user turn, as the model card asks, and not in a system message: Qwen3's template
        # puts a system message before the tool block and Qwen3.5's after it; a user turn reads
        # the same in both.
        return {"role": "user", "content": question + "\n" + INSTRUCTION}

    def _exchange(self, content: str) -> list[dict[str, Any]]:
        return [
            self._user(_PLACEHOLDER_QUESTION),
            {"role": "assistant", "content": "", "tool_calls": [_PLACEHOLDER_CALL]},
            {"role": "tool", "name": TOOL_NAME, "content": content},
        ]

    def _tool_turn(self, content: str, *, fix: str = "") -> str:
        """What the template renders after the assistant's `</tool_call>` when a tool message
        with `content` follows, up to and with the next generation prompt. The conversation's
        earlier turns do not change it in the Qwen templates: a placeholder exchange is rendered,
        once with a sentinel to find where the assistant's call ends, once with the content."""
        marked = self._render(self._exchange(_SENTINEL))
        at = marked.rfind(_SENTINEL)
        end = marked.rfind(CALL_CLOSE, 0, at) if at != -1 else -1
        if end == -1:
            raise UsageError(
                f"the chat template of {self.model.name or 'this model'} does not render tool calls as "
                f"{CALL_OPEN}...{CALL_CLOSE} followed by the tool's reply" + (f"; {fix}" if fix else "")
            )
        end += len(CALL_CLOSE)
        rendered = self._render(self._exchange(content))
        if rendered[:end] != marked[:end]:
            raise UsageError("the model's chat template renders a tool call differently for different outputs")
        return rendered[end:]

    def _opens_thinking(self) -> bool:
        """Whether the generation prompt leaves a `<think>` block open (Qwen3.5 with thinking on)."""
        head = self._render([self._user(_PLACEHOLDER_QUESTION)])
        return head.rfind(THINK_OPEN) > head.rfind(THINK_CLOSE)

    # -- the loop ---------------------------------------------------------------------------
    def prompt(self, question: str) -> str:
        text = self._render([self._user(question)])
        if self.model.add_bos and self.model.bos_token and text.startswith(self.model.bos_token):
            text = text[len(self.model.bos_token):]  # the engine adds BOS itself
        return text

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        if generation.stop != CALL_CLOSE:  # the turn ended (<|im_end|>, EOS) or the token limit cut it
            return Finish(keep=generation.text)
        keep = generation.text + CALL_CLOSE
        call = read_call(text_so_far + generation.text)
        if call.code is None:
            # A call that cannot run is answered as a harness answers it, running nothing; the
            # reply is harness text after </tool_call> (split_thinking marks it "tool").
            return Continue(keep=keep + self._tool_turn(call.error or PARSE_ERROR))
        return Execute(keep=keep, code=call.code, language="python")

    def result_text(self, result: ToolResult) -> str:
        """The tool message's content: what the session printed, then the value of a final bare
        expression (a notebook's Out), then the error; one trailing newline dropped (as
        NeMo-Skills' python tool returns stdout + stderr)."""
        text = result.stdout + (result.display + "\n" if result.display is not None else "")
        if result.status == "timeout":
            text += TIMED_OUT + "\n"
        elif result.status != "ok":
            text += result.traceback or ((result.error or result.status) + "\n")
        return middle_truncate(text.removesuffix("\n"), self.output_limit)

    def observation(self, result: ToolResult, *, index: int = 0) -> str:
        return self._tool_turn(self.result_text(result))

    def split_thinking(self, before: str, text: str) -> list[tuple[str, str]]:
        """Reasoning and prose as the base class splits them; text after a round's `</tool_call>`
        is the harness's reply to a call that could not run (role "tool")."""
        end = text.find(CALL_CLOSE)
        if end == -1 or end + len(CALL_CLOSE) == len(text):
            return super().split_thinking(before, text)
        end += len(CALL_CLOSE)
        return super().split_thinking(before, text[:end]) + [("tool", text[end:])]

    def answer_text(self, solution: str) -> str:
        """What follows the last `</think>`: the final turn's answer, as reasoning parsers split
        it. A solution cut off while still thinking has no answer."""
        closing = solution.rfind(THINK_CLOSE)
        if closing != -1:
            return solution[closing + len(THINK_CLOSE):]
        if THINK_OPEN in solution or (self.template is not None and self._opens_thinking()):
            return ""
        return solution

    # -- how a renderer shows it -------------------------------------------------------------
    def display_text(self, text: str) -> str:
        # A call reads as a code panel (the renderer closes it when the round ends); the
        # stop string that closes it never reaches a renderer.
        return text.replace(CALL_OPEN, "```python")

    def display_observation(self, observation: str) -> str:
        start = observation.find(RESPONSE_OPEN)
        stop = observation.rfind(RESPONSE_CLOSE)
        if start == -1 or stop < start:
            return observation.strip("\n")
        return observation[start + len(RESPONSE_OPEN):stop].strip("\n")
