"""OpenMath-Nemotron (`openmath-tir`, `openmath-cot`), as NVIDIA's NeMo-Skills harness runs it.

Primary source: repository NVIDIA-NeMo/Skills (earlier Kipok/NeMo-Skills). The strings below
are quoted from it, each with its path; docs/protocols.md lists every rule and quirk.

- Prompt: the Qwen chat template as the released evaluation and the SFT data built it (prompt
  templates `openmath-instruct` / `qwen-instruct`: an EMPTY system message is still written),
  with the user turn of `prompt/config/openmath/tir.yaml` (TIR) or `generic/math.yaml` (CoT).
- Code calls: `<tool_call>` ... `</tool_call>` (`prompt/code_tags/openmath.yaml`); the stop
  string is put back, the block runs in one stateful Python session per solution, and
  `format_code_output` (`code_execution/utils.py`) appends the output block and the
  remaining-executions notice (`inference/model/code_execution.py` has the loop).
- The executor's text: `code_execution/sandbox.py` as released with the models (April 2025):
  IPython's output with "Out[1]: " removed, stripped, cut at 1000 characters, "Timed out".
"""

from __future__ import annotations

import re

from mathsolve.formats.base import Execute, Finish, Generation, Protocol, Step
from mathsolve.tools import ToolResult

# prompt/code_tags/openmath.yaml: code_begin, code_end, code_output_begin, code_output_end.
CODE_BEGIN = "<tool_call>"
CODE_END = "</tool_call>"
OUTPUT_BEGIN = "\n```output\n"
OUTPUT_END = "```\n"

# code_execution/utils.py, format_code_output: the notices after the output block.
REMAINING_NOTICE = (
    "```system\n"
    "Remaining code executions: {n}. "
    "You will not be able to call code when you run out of executions, so use it wisely. "
    "Note that you can still continue solving the problem without code after that.\n"
    "```\n"
)
OUT_OF_EXECUTIONS_NOTICE = (
    "```system\n"
    "You have run out of code executions! You can no longer write or execute code. "
    "Now you should continue solving the problem by relying on your mathematical reasoning "
    "and analytical skills.\n"
    "```\n"
)

# prompt/config/openmath/tir.yaml and generic/math.yaml (their `\boxed{{}}` is format-escaped).
TIR_USER = (
    "Solve the following math problem, integrating natural language reasoning with Python code executions.\n"
    "You may perform up to {calls} Python code calls to assist your reasoning.\n"
    "Make sure to put the answer (and only answer) inside \\boxed{{}}.\n\n"
)
COT_USER = "Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{}.\n\n"

# The released executor ran `warnings.filterwarnings('ignore')` before every call, so no
# warning ever reached the model; each block gets the same filter on a first line of its own
# (tracebacks and syntax-error messages are told about it: PRELUDE_LINES).
WARNINGS_OFF = "import warnings; warnings.filterwarnings('ignore')\n"
PRELUDE_LINES = 1
TIMED_OUT = "Timed out\n"  # sandbox.py: {"process_status": "timeout", "stdout": "", "stderr": "Timed out\n"}
OUTPUT_CUT = "<output cut>"

# Terminal escape sequences, and the traceback lines naming a notebook cell's file: the
# executor's `simplify_errors` removed both from what the model saw.
_ANSI = re.compile(r"\x1b(?:[@-Z\-_]|\[[0-?]*[ -/]*[@-~])")
_FRAME = re.compile(r'  File "(.*)", line (\d+), in (.*)$')
_SYNTAX_AT = re.compile(r'  File "(.*)", line (\d+)$')
_CARETS = re.compile(r"^ *[~^]+ *$")
_LINE_NUMBER = re.compile(r"\bline (\d+)")
# How IPython named a cell's file: "<ipython-input-{count}-{sha1[:12]}>". The executor dropped
# every line naming it, after cutting the output to 1000 characters, so only its length counts.
_CELL_NAME = "<ipython-input-1-000000000000>"
_CHAIN_MESSAGES = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)


def format_code_output(output: str, remaining: int | None) -> str:
    """`format_code_output` in the "qwen" format with the openmath tags: the output block,
    then the countdown (`remaining` > 0), the out-of-executions notice (0 or less) or nothing."""
    notice = ""
    if remaining is not None:
        notice = REMAINING_NOTICE.format(n=remaining) if remaining > 0 else OUT_OF_EXECUTIONS_NOTICE
    return OUTPUT_BEGIN + output + OUTPUT_END + notice


def ipython_cell(code: str) -> str:
    """The cell IPython compiles for `code`: leading blank lines dropped, and the first
    line's indentation removed from every line that starts with it (its cleanup transforms
    `leading_empty_lines` and `leading_indent`), so line numbers and indented code behave
    as they did in the reference."""
    lines = code.splitlines(keepends=True)
    while lines and lines[0].isspace():
        lines.pop(0)
    indent = re.match(r"[ \t]+", lines[0]) if lines else None
    if indent:
        lines = [line[indent.end():] if line.startswith(indent.group(0)) else line for line in lines]
    return "".join(lines)


def ipython_plain_traceback(traceback_text: str, code_file: str, line_offset: int = 0) -> str:
    """A Python traceback as IPython 8 prints it in "Plain" mode for a cell compiled as
    `code_file` whose first `line_offset` lines were not the model's: a frame is
    `  File NAME:LINE in FUNC` (no " in <module>") plus its stripped source line, position
    carets under source lines are gone, and a syntax error keeps one `^` at its column (even
    where Python draws none). The cell's own file lines are written as IPython named them,
    `<ipython-input-1-...>`, for the executor to drop after its cut, as it did."""
    out: list[str] = []
    lines = traceback_text.rstrip("\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        frame, syntax = _FRAME.match(line), _SYNTAX_AT.match(line)
        if not (frame or syntax):
            out.append(line)
            # IPython writes no blank line between a chained exception's message and its traceback.
            if line in _CHAIN_MESSAGES and i + 1 < len(lines) and not lines[i + 1]:
                i += 1
            i += 1
            continue
        path, lineno = (frame or syntax).group(1), int((frame or syntax).group(2))
        in_cell = path == code_file
        if in_cell:
            path, lineno = _CELL_NAME, lineno - line_offset
        name = frame.group(3) if frame else "<module>"
        out.append(f"  File {path}:{lineno}" + ("" if name == "<module>" else f" in {name}"))
        i += 1
        if i < len(lines) and lines[i].startswith("    ") and not _CARETS.match(lines[i]):
            out.append(lines[i])  # the source line, already "    " + stripped
            i += 1
        carets = i < len(lines) and _CARETS.match(lines[i])
        if syntax:
            out.append(lines[i][: lines[i].index("^") + 1] if carets else "    ^")
        i += 1 if carets else 0
        if syntax and in_cell and line_offset and i < len(lines):
            # The message counts lines of the compiled text ("detected at line 3"): the model's.
            lines[i] = _LINE_NUMBER.sub(lambda m: f"line {max(1, int(m.group(1)) - line_offset)}", lines[i])
    return "\n".join(out)


def _executor_stream(text: str, limit: int) -> str:
    """One stream as the released executor returned it: "Out[1]: " removed, stripped, cut to
    `limit` characters plus "<output cut>", escape sequences and cell-file lines dropped, and
    a newline added when anything is left."""
    text = text.replace("Out[1]: ", "").strip()
    if len(text) > limit:
        text = text[:limit] + OUTPUT_CUT
    if not text:
        return ""
    text = _ANSI.sub("", text)
    text = "\n".join(line for line in text.split("\n") if not line.strip().startswith("File <ipython-"))
    return text + "\n"


def executor_output(result: ToolResult, limit: int = 1000) -> str:
    """stdout + stderr of one block as NeMo-Skills' executor returned them to the loop.

    IPython wrote everything to stdout in order: the block's prints, then the value of a final
    bare expression (a multi-line value on a line of its own), or the plain traceback of an
    exception. A timeout discarded the output: "Timed out" is all the model saw."""
    if result.status == "timeout":
        return TIMED_OUT
    from mathsolve.sandbox import CODE_FILENAME

    stdout = result.stdout
    if result.display is not None:
        stdout += ("\n" if "\n" in result.display else "") + result.display + "\n"
    if result.status != "ok" and (result.traceback or result.error):
        failure = (ipython_plain_traceback(result.traceback, CODE_FILENAME, PRELUDE_LINES) if result.traceback
                   else result.error)
        stdout += failure + "\n"
    return _executor_stream(stdout, limit) + _executor_stream(result.stderr, limit)


def _after_thinking(solution: str, opening: str, closing: str) -> str:
    """NeMo-Skills' `remove_thinking` (utils.py; evaluation default since June 2025): the text
    after the last closing tag, stripped; nothing when the reasoning never closed."""
    if closing in solution:
        return solution.split(closing)[-1].strip()
    return "" if opening in solution else solution


class _OpenMathProtocol(Protocol):
    """What both modes share: the chat prompt, the reasoning tags, sampling and grading."""

    user_prefix = COT_USER
    stops = ("<|im_end|>", "<|endoftext|>")  # the qwen-instruct template's stop_phrases
    max_rounds = 1
    # Their evaluations generate up to 32,768 tokens (`++inference.tokens_to_generate=32768`);
    # the context leaves room for the prompt and the tool outputs on top.
    max_new_tokens = 32768
    context = 40960
    tool = None
    special_prompt = True
    answer_style = "boxed"  # math_grader.extract_answer: the last \boxed{} (or \fbox{})
    grader = "math-verify"
    think_tags = ("<think>", "</think>")
    # `++inference.temperature=0.6`, with NeMo-Skills' default top_p 0.95 and top_k off. Every
    # published figure is sampled (pass@1 of 64 samples, `--skip_greedy`): no greedy default.
    sampling = {"temperature": 0.6, "top_p": 0.95}
    sampled = True
    # Quirk switch: True reads the answer after `</think>` (today's evaluation); False reads
    # the whole solution, as the April 2025 evaluation behind the published scores did.
    answer_after_thinking = True

    def user_message(self, question: str) -> str:
        return self.user_prefix + question

    def prompt(self, question: str) -> str:
        # templates openmath-instruct / qwen-instruct: system_begin + "" + system_end, then the turn.
        return (
            "<|im_start|>system\n<|im_end|>\n"
            "<|im_start|>user\n" + self.user_message(question) + "<|im_end|>\n"
            "<|im_start|>assistant\n"
        )

    def answer_text(self, solution: str) -> str:
        if not self.answer_after_thinking or self.think_tags is None:
            return solution
        return _after_thinking(solution, *self.think_tags)


class OpenMathCotProtocol(_OpenMathProtocol):
    name = "openmath-cot"
    description = "OpenMath-Nemotron chain of thought: Qwen chat prompt, <think> reasoning, no tools"

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        return Finish(keep=generation.text)


class OpenMathTirProtocol(_OpenMathProtocol):
    name = "openmath-tir"
    description = "OpenMath-Nemotron tool-integrated reasoning: <tool_call> code, 8 calls, stateful Python"
    stops = (CODE_END, "<|im_end|>", "<|endoftext|>")
    max_calls = 8  # `++total_code_executions_in_prompt=8`, also the executor's max_code_executions
    max_rounds = max_calls + 1  # one more generation after the last call, as the harness does
    tool = "python"
    stateful_tool = True
    tool_timeout_s = 10.0  # CodeExecutionConfig.code_execution_timeout
    output_limit = 1000  # CodeExecutionConfig.max_code_output_characters
    # Quirk switch: `++server.code_execution.add_remaining_code_executions=true` in their TIR
    # evaluation (the config's default is False; the 14B-Kaggle model was run without it).
    remaining_notice = True
    # The harness appends `</tool_call>` itself; in Qwen's vocabulary both tags are single tokens.
    markers = (CODE_BEGIN, CODE_END)
    render_special = True  # a conversion that typed the tags as control tokens still shows them

    def user_message(self, question: str) -> str:
        return TIR_USER.format(calls=self.max_calls) + question

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        text = generation.text
        # The harness puts `</tool_call>` back when the round left a call open: the stop
        # string (servers strip it), or an end of turn or token limit inside the call.
        if text.count(CODE_END) + 1 == text.count(CODE_BEGIN):
            text += CODE_END
        if round_index >= self.max_calls or generation.finish_reason == "length":
            # The extra round after the last allowed call, or the token budget spent:
            # the harness stops without running anything.
            return Finish(keep=text)
        # Run only a call that the round closed: its last `<tool_call>` comes after the
        # `</tool_call>` before the final one.
        if text.endswith(CODE_END) and text.rfind(CODE_BEGIN) > text.rfind(CODE_END, 0, len(text) - 1):
            code = text.split(CODE_BEGIN)[-1].split(CODE_END)[0]  # extract_code_to_execute
            return Execute(keep=text, code=WARNINGS_OFF + ipython_cell(code))
        return Finish(keep=text)

    def observation(self, result: ToolResult, *, index: int = 0) -> str:
        # The countdown after call `index` (from 0): max_code_executions - generation_index - 1.
        remaining = self.max_calls - index - 1 if self.remaining_notice else None
        return format_code_output(executor_output(result, self.output_limit), remaining)

    def display_text(self, text: str) -> str:
        # A call opens as a python fence; its closing tag is the stop, which ends the round.
        return text.replace(CODE_BEGIN, "```python") if CODE_BEGIN in text else text

    def display_observation(self, observation: str) -> str:
        # The output alone, then the budget in a few words instead of the notice's sentences.
        body, notice = observation, ""
        at = observation.rfind("```system\n")
        if at != -1:
            body, notice = observation[:at], observation[at:]
        body = body.removeprefix(OUTPUT_BEGIN).removesuffix(OUTPUT_END).rstrip("\n")
        count = re.match(r"```system\nRemaining code executions: (\d+)\.", notice)
        if count:
            return body + f"\n[{count.group(1)} code executions left]"
        return body + ("\n[no code executions left]" if notice else "")
