"""ToRA / ToRA-Code / MuMath-Code (`tora`) and Qwen2.5-Math-Instruct (`qwen-tir`, `qwen-cot`).

Qwen's evaluation harness is a fork of ToRA's, so both share the tool loop: right-strip
the round, run the last python block when the round ends in a fence and does not
mention `boxed`, append "\\n```output\\n" + result + "\\n```\\n", at most 4 rounds.
"""

from __future__ import annotations

from mathsolve.formats.base import Execute, Finish, Generation, Protocol, Step, last_fenced_block, middle_truncate
from mathsolve.tools import ToolResult


class ToraProtocol(Protocol):
    name = "tora"
    description = "ToRA / MuMath-Code: <|user|>/<|assistant|> plain-text roles, ```output blocks"
    stops = ("```output", "</s>")
    max_rounds = 4
    max_new_tokens = 1024
    context = 4096
    tool = "python"
    tool_timeout_s = 5.0
    answer_style = "tora"
    # Reference quirk switches (faithful defaults; see docs/protocols.md).
    boxed_stops = True  # any round mentioning "boxed" ends the solution without running code
    truncate_at = 400  # current release: 200 + "..." + 200; first release: 100 (50 + 50)
    last_line_only = False  # first release kept only the last line of stdout

    def prompt(self, question: str) -> str:
        return "<|user|>\n" + question.strip() + "\n<|assistant|>\n"

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        text = generation.text.rstrip()
        mentions_boxed = self.boxed_stops and "boxed" in text
        if not mentions_boxed and text.endswith("```"):
            code = last_fenced_block(text_so_far + text)
            return Execute(keep=text, code=code)
        return Finish(keep=text)

    def result_text(self, result: ToolResult) -> str:
        """ToRA's executor result: stdout, else `Done`; last traceback line on error."""
        if result.status == "timeout":
            return "Timeout Error"
        if result.status in ("error", "memory") and result.error:
            return middle_truncate(result.error.strip(), self.truncate_at)
        out = result.stdout.strip()
        if self.last_line_only and out:
            out = out.split("\n")[-1].strip()
        return middle_truncate(out, self.truncate_at) if out else "Done"

    def observation(self, result: ToolResult, *, index: int = 0) -> str:
        return "\n```output\n" + self.result_text(result) + "\n```\n"

    def after_last_round(self) -> str:
        return "\nReach max function call limit."


QWEN_COT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_TIR_SYSTEM = (
    "Please integrate natural language reasoning with programs to solve the problem above, "
    "and put your final answer within \\boxed{}."
)


class QwenTirProtocol(ToraProtocol):
    name = "qwen-tir"
    description = "Qwen2.5-Math-Instruct tool-integrated reasoning: ChatML, ```output blocks"
    stops = ("<|im_end|>", "<|endoftext|>", "```output")
    max_new_tokens = 2048
    context = 4096
    special_prompt = True
    sampling = {"temperature": 0.7, "top_p": 0.8}
    system = QWEN_TIR_SYSTEM

    def prompt(self, question: str) -> str:
        return (
            "<|im_start|>system\n" + self.system + "<|im_end|>\n"
            "<|im_start|>user\n" + question + "<|im_end|>\n<|im_start|>assistant\n"
        )

    def after_last_round(self) -> str:
        return "\nReach max function call limit."


class QwenCotProtocol(QwenTirProtocol):
    name = "qwen-cot"
    description = "Qwen2.5-Math-Instruct chain of thought: ChatML, no tools"
    stops = ("<|im_end|>", "<|endoftext|>")
    max_rounds = 1
    tool = None
    system = QWEN_COT_SYSTEM

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        return Finish(keep=generation.text.rstrip())
