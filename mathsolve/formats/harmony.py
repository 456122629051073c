"""gpt-oss (`harmony`): OpenAI's harmony format with its built-in, stateful python tool.

The prompt is rendered here as text, as the `openai-harmony` renderer writes it: a system
message (identity, knowledge cutoff, date, `Reasoning: <effort>`, the python tool under
`# Tools`, the valid channels), the user message, then `<|start|>assistant`. The model
writes messages of its own (`<|channel|>analysis<|message|>...<|end|>`,
`<|start|>assistant...`), and each round ends on one of the two stop tokens of
harmony's `stop_tokens_for_assistant_actions`: `<|call|>` (a tool call: run it) or
`<|return|>` (the final answer is done). `<|end|>` only ends one message: the model
goes on with the next `<|start|>assistant` header itself, as in the reference.

A message addressed `to=python` (the recipient may sit before or after the channel in
the header; both spellings occur) runs in one Python session per problem, and the
reply goes back as a message from `python`, followed by `<|start|>assistant` for the
model to continue. Everything the model wrote stays in the context, analysis included:
within a turn that calls tools the reference keeps its chain of thought.

Sources: openai/harmony `docs/format.md`, `src/encoding.rs` (rendering), `src/chat.rs`
(the python tool's description, the system message defaults), `src/registry.rs` (stop
tokens); openai/gpt-oss `gpt_oss/tools/python_docker/docker_tool.py` (the tool's replies),
`gpt_oss/evals/aime_eval.py` (the math prompt), README (sampling). See docs/protocols.md.
"""

from __future__ import annotations

import re

from mathsolve.formats.base import Execute, Finish, Generation, Protocol, Step, middle_truncate
from mathsolve.tools import ToolResult

START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
CONSTRAIN, RETURN, CALL = "<|constrain|>", "<|return|>", "<|call|>"
MARKERS = (START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL)

# The system message's parts, byte for byte as openai/harmony renders them (src/encoding.rs,
# SystemContent defaults in src/chat.rs).
IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"
# The date the harmony docs and test data use; fixed so a run's prompt never changes (see
# docs/protocols.md: the reference harnesses write today's date, which no math problem needs).
CURRENT_DATE = "2025-06-28"
# openai/harmony src/chat.rs ToolNamespaceConfig::python(): the stateful tool the model was
# trained with (gpt-oss's own docker tool overrides it only because it runs stateless).
PYTHON_TOOL_DESCRIPTION = (
    "Use this tool to execute Python code in your chain of thought. The code will not be shown to the "
    "user. This tool should be used for internal reasoning, but not for code that is intended to be "
    "visible to the user (e.g. when creating plots, tables, or files).\n\nWhen you send a message "
    "containing Python code to python, it will be executed in a stateful Jupyter notebook environment. "
    "python will respond with the output of the execution or time out after 120.0 seconds. The drive at "
    "'/mnt/data' can be used to save and persist user files. Internet access for this session is "
    "UNKNOWN. Depends on the cluster."
)
CHANNELS_LINE = "# Valid channels: analysis, commentary, final. Channel must be included for every message."
# openai/gpt-oss gpt_oss/evals/aime_eval.py AIME_TEMPLATE (its leading and trailing newlines too).
USER_TEMPLATE = "\n{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}.\n"

# What gpt-oss's stateful python tool (LocalJupyterSession.execute in docker_tool.py) answers
# when a cell prints nothing, and when the kernel does not answer in time.
NO_OUTPUT = "[WARN] No output available. Use print() to output anything to stdout to receive the output"
TIMED_OUT = "[ERROR] Timed out waiting for Jupyter kernel output."
# The reference tool has no memory or output cap; these are mathsolve's words for its limits.
_LIMIT_TEXT = {
    "memory": "[ERROR] The execution ran out of memory.",
    "output-limit": "[ERROR] The output exceeded the output limit; the execution was stopped.",
}

_RECIPIENT = re.compile(r"to=([^\s<]+)")
_CHANNEL_NAME = re.compile(r"<\|channel\|>\s*([^\s<]+)")
# How markup reads in a terminal (see display_text).
_SHOWN = {START: "", CHANNEL: " [", MESSAGE: "]\n", END: "\n\n", CONSTRAIN: " ", RETURN: "\n", CALL: "\n"}
_HEADER = re.compile(r"(?:<\|start\|>[^<]*)?(?:<\|channel\|>[^<]*)?(?:<\|constrain\|>[^<]*)?<\|message\|>")


def system_message(reasoning: str, date: str = CURRENT_DATE) -> str:
    """The system message with the python tool declared, as harmony renders it."""
    body = "\n\n".join([
        f"{IDENTITY}\nKnowledge cutoff: {KNOWLEDGE_CUTOFF}\nCurrent date: {date}",
        f"Reasoning: {reasoning}",
        "# Tools\n\n## python\n\n" + PYTHON_TOOL_DESCRIPTION,
        CHANNELS_LINE,
    ])
    return START + "system" + MESSAGE + body + END


def current_message(text: str) -> tuple[str, str]:
    """(header, body so far) of the last message in `text`: the header runs from the last
    `<|start|>` to `<|message|>`; without a `<|message|>` yet the body is empty."""
    start = text.rfind(START)
    message = text[start + len(START):] if start != -1 else text
    header, sep, body = message.partition(MESSAGE)
    return (header, body) if sep else (message, "")


def recipient(header: str) -> str | None:
    """The `to=` recipient of a message header, wherever it sits (before or after the channel)."""
    match = _RECIPIENT.search(header)
    return match.group(1) if match else None


def channel(header: str) -> str | None:
    match = _CHANNEL_NAME.search(header)
    return match.group(1) if match else None


def is_python(name: str | None) -> bool:
    # gpt-oss's chat.py sends every recipient starting with "python" to the tool; its
    # Responses server can also treat "functions.python" as the built-in tool.
    return name is not None and name.removeprefix("functions.").startswith("python")


def _shown_header(match: re.Match[str]) -> str:
    header = match.group(0)
    return "\n```python\n" if is_python(recipient(header)) else header


class HarmonyProtocol(Protocol):
    name = "harmony"
    description = "gpt-oss: harmony format, analysis/final channels, stateful python tool (to=python)"
    stops = (CALL, RETURN)
    max_rounds = 64  # tool calls + the final round; the reference sets none (the context does)
    max_new_tokens = 32768  # per round
    context = 40960  # a 32,768-token trace and its prompt; gpt-oss was trained on 131,072 (--n-ctx)
    tool = "python"
    tool_timeout_s = 60.0  # gpt-oss PythonTool's local Jupyter timeout
    stateful_tool = True
    answer_style = "tora"  # the last \boxed{} first, as gpt-oss's AIME eval reads it (then ToRA's fallbacks)
    special_prompt = True
    render_special = True
    markers = MARKERS
    sampling = {"temperature": 1.0, "top_p": 1.0}  # gpt-oss README, "Recommended Sampling Parameters"
    # The published figures are sampled (gpt-oss's evals: temperature 1.0, AIME averaged over 8
    # samples): single solves sample too, unless the user sets the values.
    sampled = True
    grader = "math-verify"
    reasoning_efforts = ("medium", "low", "high")  # medium: harmony's SystemContent default
    reasoning = "medium"
    current_date = CURRENT_DATE
    output_limit = 20_000  # characters of a tool reply kept (head and tail); see docs/protocols.md

    def prompt(self, question: str) -> str:
        user = USER_TEMPLATE.format(question=question)
        return (
            system_message(self.reasoning or self.reasoning_efforts[0], self.current_date)
            + START + "user" + MESSAGE + user + END + START + "assistant"
        )

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        text = generation.text
        if generation.stop == CALL:
            keep = text + CALL
            header, body = current_message(text_so_far + text)
            if is_python(recipient(header)) and body.strip():
                return Execute(keep=keep, code=body)
            return Finish(keep=keep)  # a call to a tool that was never declared: the turn is over
        if generation.stop == RETURN:
            return Finish(keep=text + RETURN)
        return Finish(keep=text)  # another end-of-generation token, or the token limit

    def result_text(self, result: ToolResult) -> str:
        """The tool's reply as gpt-oss's stateful python tool builds it: printed output,
        then the cell's value (a notebook's Out), then the error after a newline; a hint
        to print when there is nothing at all."""
        if result.status == "timeout":
            return TIMED_OUT
        out = result.stdout
        if result.display is not None:
            out += result.display if result.display.endswith("\n") else result.display + "\n"
        err = ""
        if result.status != "ok":
            err = result.traceback or result.error or _LIMIT_TEXT.get(result.status, result.status)
        if err:
            out = f"{out.rstrip()}\n{err}" if out else err
        if not out.strip():
            return NO_OUTPUT
        return middle_truncate(out, self.output_limit)

    def observation(self, result: ToolResult, *, index: int = 0) -> str:
        # A message from `python` on the analysis channel, where built-in tools are called
        # (gpt-oss's tool answers on its call's channel), then the header the model continues.
        return (
            START + "python to=assistant" + CHANNEL + "analysis" + MESSAGE + self.result_text(result) + END
            + START + "assistant"
        )

    def split_thinking(self, before: str, text: str) -> list[tuple[str, str]]:
        """The text of analysis-channel messages is reasoning ("thinking"), that of the others
        (final, commentary) "model". Headers (`<|start|>assistant<|channel|>final<|message|>`)
        are markup and go with the reasoning, so a terminal shows the answer's text alone. A
        message may have begun in `before`: split between tokens (special tokens come whole),
        text gets the same roles however it is cut."""
        opened = before[max(before.rfind(START), 0):]  # the message open where `text` begins
        header, in_header = opened.partition(MESSAGE)[0], MESSAGE not in opened
        parts: list[tuple[str, str]] = []
        at = 0
        while at < len(text):
            if in_header:  # up to and with <|message|>
                found = text.find(MESSAGE, at)
                stop = len(text) if found == -1 else found + len(MESSAGE)
                header += text[at:stop]
                role, in_header = "thinking", found == -1
            else:  # the message's text, up to the next message
                found = text.find(START, at)
                stop = len(text) if found == -1 else found
                role = "thinking" if channel(header) == "analysis" else "model"
                if found != -1:
                    header, in_header = "", True
            if stop > at and parts and parts[-1][0] == role:
                parts[-1] = (role, parts[-1][1] + text[at:stop])
            elif stop > at:
                parts.append((role, text[at:stop]))
            at = stop
        return parts

    def answer_text(self, solution: str) -> str:
        """The last final-channel message's text ("" without one: the reference reads the
        final channel only, `output_text`)."""
        found = ""
        for message in solution.split(START):
            header, sep, body = message.partition(MESSAGE)
            if sep and channel(header) == "final":
                found = body
        for end in (RETURN, END, CALL):
            found = found.split(end, 1)[0]
        return found

    def display_text(self, text: str) -> str:
        # A whole call header opens a ```python block (the round's end closes it); other
        # headers read "assistant [final]" above their message's text. Markup cut into
        # pieces (a token at a time) still reads as brackets, never as raw tokens.
        if "<|" in text:
            text = _HEADER.sub(_shown_header, text)
            for marker, shown in _SHOWN.items():
                text = text.replace(marker, shown)
        return text

    def display_observation(self, observation: str) -> str:
        body = observation.partition(MESSAGE)[2] if MESSAGE in observation else observation
        return body.removesuffix(START + "assistant").removesuffix(END).strip("\n")
