"""NuminaMath-7B-TIR (`numina`), as the AIMO-winning harness ran it.

Its loop differs from ToRA's in small ways that matter to the model: the stop string
"```output\\n" stays in the transcript, the output is appended as `output + "\\n```"`
with no trailing newline, the code runs with three imports prepended and its last line
wrapped in print(...), an error is fed back as a filtered traceback, and code written
in the last of the 4 steps is not run.
"""

from __future__ import annotations

import re

from mathsolve.formats.base import Execute, Finish, Generation, Protocol, Step
from mathsolve.tools import ToolResult

PRELUDE = "import math\nimport numpy as np\nimport sympy as sp\n"
_PYTHON_BLOCK = re.compile(r"```python(.*?)```", re.DOTALL)


def numina_program(code: str) -> str:
    """The program the reference REPL ran for one block: imports prepended, and the last
    line wrapped in print( ) unless it already mentions print( (its comment dropped first)."""
    lines = (PRELUDE + code).strip().split("\n")
    if "print(" not in lines[-1]:
        if "#" in lines[-1]:
            lines[-1] = lines[-1].split("#")[0]
        lines[-1] = "print(" + lines[-1] + ")"
    return "\n".join(lines)


def filter_traceback(traceback_text: str, code_file: str) -> str:
    """The reference's error text: lines mentioning "Traceback", the last line, and each
    frame line of the code's own file (its path cut off after `File "`, as the reference's
    path-stripping does) followed by the source line after it."""
    lines = traceback_text.strip().split("\n")
    kept: list[str] = []
    want_next = False
    for line in lines:
        if "Traceback" in line:
            kept.append(line)
        elif line == lines[-1]:
            kept.append(line)
        elif code_file in line:
            start = line.index('"') + 1 if '"' in line else 0
            kept.append(line[:start])
            want_next = True
        elif want_next:
            kept.append(line)
            want_next = False
    return "\n".join(kept).strip()


class NuminaProtocol(Protocol):
    name = "numina"
    description = "NuminaMath-7B-TIR: ### Problem/### Solution, ```output kept, 4 steps"
    stops = ("```output\n",)
    max_rounds = 4
    max_new_tokens = 2048
    context = 4096
    tool = "python"
    tool_timeout_s = 5.0
    answer_style = "tora"
    code_in_last_round = False
    sampling = {"temperature": 0.8, "top_p": 1.0}
    output_limit = 200  # characters kept; the rest replaced by " ... (output truncated)"

    def prompt(self, question: str) -> str:
        return "### Problem: " + question + "\n### Solution: "

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        if generation.stop is None:  # EOS or the token limit: the solution is over
            return Finish(keep=generation.text)
        keep = generation.text + generation.stop
        blocks = _PYTHON_BLOCK.findall(text_so_far + keep)
        if not blocks:  # an output block with no code: the reference prunes the sample
            return Finish(keep=keep)
        return Execute(keep=keep, code=numina_program(blocks[-1]))

    def result_text(self, result: ToolResult) -> str:
        if result.status == "timeout":
            return f"Timed out after {int(self.tool_timeout_s)} seconds."
        if result.status != "ok":
            from mathsolve.sandbox import CODE_FILENAME

            text = result.traceback or result.error or ""
            return filter_traceback(text, CODE_FILENAME) if result.traceback else text.strip()
        return result.stdout.strip()

    def observation(self, result: ToolResult, *, index: int = 0) -> str:
        text = self.result_text(result)
        if len(text) > self.output_limit:
            text = text[: self.output_limit] + " ... (output truncated)"
        return text + "\n```"
