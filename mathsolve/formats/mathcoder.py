"""MathCoder and MathGenie (`mathcoder`), as MathCoder's inference script ran them.

The model writes one block per generation call, framed by special tokens:
`<|text|>...<|endofblock|>` or `<|code|>...<|endofblock|>`, and ends its message with
`<|endofmessage|>`. Code blocks run in ONE Python session per problem (a Jupyter kernel
in the reference): variables persist and a final bare expression is shown like a
notebook's Out. The output goes back as `<|execution|>` + output + `<|endofblock|>`.
"""

from __future__ import annotations

import re

from mathsolve.formats.base import Continue, Execute, Finish, Generation, Protocol, Step
from mathsolve.tools import ToolResult

MARKERS = (
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|endofmessage|>",
    "<|text|>",
    "<|code|>",
    "<|execution|>",
    "<|endofblock|>",
)
SYSTEM_BOXED = 'Below is a math problem. Please solve it step by step and put your answer in "\\boxed{}".'
_DECIMAL = re.compile(r"\d+\.\d+")
_RULE = "-" * 75  # IPython's traceback header rule


def round_decimals(text: str, places: int = 6) -> str:
    """The reference's quirk: every decimal literal with more than `places` fractional
    digits in the model's block was rewritten as '{:.6f}' before anything else saw it."""

    def fix(match: re.Match[str]) -> str:
        value = match.group(0)
        if len(value.split(".")[1]) <= places:
            return value
        return f"{float(value):.{places}f}"

    return _DECIMAL.sub(fix, text)


def notebook_traceback(traceback_text: str, code_file: str, cell: int) -> str:
    """A Python traceback in the shape a Jupyter kernel reported it, with the parts the
    reference joined with spaces after stripping colours: the rule, the exception name
    with "Traceback (most recent call last)" right-aligned to 75 columns, each frame of
    the cell as "Cell In[N], line L" with the failing line, and "Type: message"."""
    lines = traceback_text.rstrip("\n").split("\n")
    last = lines[-1]
    exc_name = last.split(":", 1)[0]
    parts = [_RULE, exc_name + "Traceback (most recent call last)".rjust(75 - len(exc_name))]
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("File ") and f'"{code_file}"' in stripped:
            match = re.search(r"line (\d+)", stripped)
            number = match.group(1) if match else "?"
            source = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith("    ") else ""
            parts.append(f"Cell In[{cell}], line {number}\n----> {number} {source}\n")
    parts.append(last)
    return " ".join(parts)


_SHOWN_MARKERS = {"<|text|>": "", "<|code|>": "```python\n", "<|endofblock|>": "\n", "<|endofmessage|>": ""}


class MathCoderProtocol(Protocol):
    name = "mathcoder"
    description = "MathCoder / MathGenie: special-token blocks, one stateful Python session"
    stops = ("<|endofblock|>", "<|endofmessage|>")
    max_rounds = 16  # blocks
    max_new_tokens = 512  # per block
    context = 2048
    tool = "python"
    tool_timeout_s = 6.0
    answer_style = "boxed"
    special_prompt = True
    render_special = True
    markers = MARKERS
    stateful_tool = True
    # Reference quirk switches (faithful defaults; see docs/protocols.md).
    system = ""  # the optional system text is SYSTEM_BOXED
    decimal_places: int | None = 6  # None: feed the model's numbers back unrounded

    def prompt(self, question: str) -> str:
        # The reference appended "\n" (its empty chain-of-thought suffix) to every question.
        return (
            "<|system|><|text|>" + self.system + "<|endofblock|><|endofmessage|>"
            "<|user|><|text|>" + question + "\n<|endofblock|><|endofmessage|><|assistant|>"
        )

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        block = generation.text + (generation.stop or "")
        if self.decimal_places is not None:
            block = round_decimals(block, self.decimal_places)
        if block.startswith("<|code|>"):
            code = block.replace("<|code|>", "").replace("<|endofblock|>", "")
            return Execute(keep=block, code=code)
        if block.endswith("<|endofmessage|>") or generation.finish_reason == "eos":
            return Finish(keep=block)
        return Continue(keep=block)

    def result_text(self, result: ToolResult, *, cell: int = 1) -> str:
        """What the kernel reported: stream output, then the final expression's value,
        then the traceback; stripped; `<empty_execution>` when there was nothing at all."""
        if result.status == "timeout":
            # The reference's text when the kernel did not answer within 6 s.
            return f"{_RULE} Timeout waiting for reply{' ' * 32}Traceback (most recent call last) "
        text = result.stdout + (result.display or "")
        if result.status != "ok":
            from mathsolve.sandbox import CODE_FILENAME

            if result.traceback:
                text += notebook_traceback(result.traceback, CODE_FILENAME, cell)
            else:
                text += result.error or result.status
        if not text:
            return "<empty_execution>"
        return text.strip()

    def observation(self, result: ToolResult, *, index: int = 0) -> str:
        return "<|execution|>" + self.result_text(result, cell=index + 1) + "<|endofblock|>"

    def display_text(self, text: str) -> str:
        # The block markers, shown as the fences and line breaks they stand for. The stop
        # marker that ends a block never reaches a renderer: the round's end closes it.
        if "<|" in text:
            for marker, shown in _SHOWN_MARKERS.items():
                text = text.replace(marker, shown)
        return text

    def display_observation(self, observation: str) -> str:
        return observation.removeprefix("<|execution|>").removesuffix("<|endofblock|>").strip("\n")
