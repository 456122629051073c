"""`openmath-tir` and `openmath-cot` (OpenMath-Nemotron) against NVIDIA's NeMo-Skills harness.

Expected strings are built from the primary source, repository NVIDIA-NeMo/Skills (paths given
next to each); the executor's expected outputs come from that repository's own sandbox tests.
The loop rules run with the scripted engine, the executor through the real sandbox, and the
tokens through a real llama.cpp on a tiny generated GGUF with Qwen's special tokens.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mathsolve import registry
from mathsolve.api import Solver
from mathsolve.core.loop import run_loop
from mathsolve.engines.base import Sampling
from mathsolve.engines.scripted import ScriptedEngine
from mathsolve.errors import EXIT_BAD_MODEL_FILE, UsageError
from mathsolve.formats.base import Execute, Finish, Generation
from mathsolve.formats.openmath import (
    WARNINGS_OFF,
    OpenMathCotProtocol,
    OpenMathTirProtocol,
    executor_output,
    format_code_output,
    ipython_cell,
)
from mathsolve.sandbox import Limits
from mathsolve.tools import ToolResult, ToolRouter
from mathsolve.testkit import write_tiny_gguf
from tests.cli_run import run_cli

Q = "What is 2 + 3?"
TIR = OpenMathTirProtocol()
COT = OpenMathCotProtocol()

# prompt/template/openmath-instruct.yaml (and qwen-instruct.yaml) of the April 2025 release:
# text_begin "", system_begin "<|im_start|>system\n", system_end "<|im_end|>\n", user_begin
# "<|im_start|>user\n", user_end "<|im_end|>\n", assistant_begin "<|im_start|>assistant\n";
# prompt/config/openmath/tir.yaml: system "" and the user text below.
TIR_PROMPT = (
    "<|im_start|>system\n<|im_end|>\n"
    "<|im_start|>user\n"
    "Solve the following math problem, integrating natural language reasoning with Python code executions.\n"
    "You may perform up to 8 Python code calls to assist your reasoning.\n"
    "Make sure to put the answer (and only answer) inside \\boxed{}.\n"
    "\n"
    "What is 2 + 3?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
# prompt/config/generic/math.yaml (no examples), same template.
COT_PROMPT = (
    "<|im_start|>system\n<|im_end|>\n"
    "<|im_start|>user\n"
    "Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{}.\n"
    "\n"
    "What is 2 + 3?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def remaining(n: int) -> str:
    # code_execution/utils.py, format_code_output: remaining_ce_string for n > 0.
    return (
        "```system\n"
        f"Remaining code executions: {n}. You will not be able to call code when you run out of executions, "
        "so use it wisely. Note that you can still continue solving the problem without code after that.\n"
        "```\n"
    )


# code_execution/utils.py, format_code_output: remaining_ce_string at 0.
OUT_OF_EXECUTIONS = (
    "```system\n"
    "You have run out of code executions! You can no longer write or execute code. Now you should continue "
    "solving the problem by relying on your mathematical reasoning and analytical skills.\n"
    "```\n"
)


def block(output: str, notice: str) -> str:
    # prompt/code_tags/openmath.yaml: code_output_begin "\n```output\n", code_output_end "```\n";
    # format "qwen": code_output_begin + stdout + stderr + code_output_end + remaining_ce_string.
    return "\n```output\n" + output + "```\n" + notice


# -- the strings, byte for byte ------------------------------------------------------------

def test_tir_prompt_is_byte_exact() -> None:
    assert TIR.prompt(Q) == TIR_PROMPT


def test_cot_prompt_is_byte_exact() -> None:
    assert COT.prompt(Q) == COT_PROMPT


def test_the_question_is_not_stripped_or_formatted() -> None:
    # `{problem}` is filled with str.format: braces and surrounding spaces in the problem stay.
    assert TIR.prompt(" f(x) = {x} ").endswith("\n\n f(x) = {x} <|im_end|>\n<|im_start|>assistant\n")


def test_observation_blocks_are_byte_exact() -> None:
    assert format_code_output("5\n", 7) == "\n```output\n5\n```\n" + remaining(7)
    assert format_code_output("", 1) == "\n```output\n```\n" + remaining(1)
    assert format_code_output("5\n", 0) == "\n```output\n5\n```\n" + OUT_OF_EXECUTIONS
    assert format_code_output("5\n", -1).endswith(OUT_OF_EXECUTIONS)  # `else` branch: <= 0
    assert format_code_output("5\n", None) == "\n```output\n5\n```\n"


def test_observation_counts_down_from_the_budget() -> None:
    ok = ToolResult("python", "ok", stdout="5\n")
    # inference/model/code_execution.py: remaining = max_code_executions - generation_index - 1
    assert TIR.observation(ok, index=0) == block("5\n", remaining(7))
    assert TIR.observation(ok, index=6) == block("5\n", remaining(1))
    assert TIR.observation(ok, index=7) == block("5\n", OUT_OF_EXECUTIONS)
    quiet = OpenMathTirProtocol()
    quiet.remaining_notice = False  # the 14B-Kaggle evaluation ran without the notice
    assert quiet.observation(ok, index=0) == block("5\n", "")


def test_settings_follow_the_reference() -> None:
    assert TIR.stops == ("</tool_call>", "<|im_end|>", "<|endoftext|>")
    assert COT.stops == ("<|im_end|>", "<|endoftext|>")
    assert (TIR.max_calls, TIR.max_rounds, TIR.tool_timeout_s, TIR.output_limit) == (8, 9, 10.0, 1000)
    assert TIR.stateful_tool and TIR.tool == "python" and COT.tool is None and COT.max_rounds == 1
    for p in (TIR, COT):
        assert p.max_new_tokens == 32768 and p.context >= 32768 + 4096
        assert p.sampling == {"temperature": 0.6, "top_p": 0.95} and p.sampled
        assert (p.grader, p.answer_style, p.think_tags) == ("math-verify", "boxed", ("<think>", "</think>"))
        assert p.special_prompt
    assert TIR.markers == ("<tool_call>", "</tool_call>") and COT.markers == ()
    assert {"openmath-tir", "openmath-cot"} <= set(registry.protocols())


def test_no_reasoning_or_thinking_switches() -> None:
    with pytest.raises(UsageError, match="cannot turn thinking"):
        TIR.configure(thinking="off")
    with pytest.raises(UsageError, match="no reasoning effort"):
        COT.configure(reasoning="high")


# -- step: the loop's rules (inference/model/code_execution.py) ----------------------------

def test_a_call_closed_by_the_stop_string_runs_with_the_tag_put_back() -> None:
    step = TIR.step(TIR_PROMPT, Generation("Let me compute.\n<tool_call>\nx = 2 + 3\nprint(x)\n", "stop", "</tool_call>"), 0)
    assert isinstance(step, Execute)
    assert step.keep == "Let me compute.\n<tool_call>\nx = 2 + 3\nprint(x)\n</tool_call>"
    # extract_code_to_execute: between the last <tool_call> and </tool_call>; IPython's cell
    # cleanup drops the leading newline; the executor's warnings filter comes first.
    assert step.code == WARNINGS_OFF + "x = 2 + 3\nprint(x)\n"


def test_an_end_of_turn_inside_a_call_closes_and_runs_it() -> None:
    # The harness appends </tool_call> whenever the round left exactly one call open.
    step = TIR.step(TIR_PROMPT, Generation("<tool_call>\nprint(1)\n", "eos"), 2)
    assert isinstance(step, Execute) and step.keep.endswith("print(1)\n</tool_call>")


def test_only_the_last_call_of_a_round_runs() -> None:
    text = "<tool_call>\na = 1\n</tool_call> then <tool_call>\nb = 2\n"
    step = TIR.step(TIR_PROMPT, Generation(text, "stop", "</tool_call>"), 0)
    assert isinstance(step, Execute) and step.code == WARNINGS_OFF + "b = 2\n"


def test_a_stray_closing_tag_ends_the_solution_without_the_tag() -> None:
    step = TIR.step(TIR_PROMPT, Generation("No code here.\n", "stop", "</tool_call>"), 0)
    assert isinstance(step, Finish) and step.keep == "No code here.\n"


def test_a_call_after_the_budget_is_kept_but_not_run() -> None:
    step = TIR.step(TIR_PROMPT, Generation("<tool_call>\nprint(9)\n", "stop", "</tool_call>"), 8)
    assert isinstance(step, Finish) and step.keep == "<tool_call>\nprint(9)\n</tool_call>"


def test_a_call_cut_by_the_token_limit_is_closed_but_not_run() -> None:
    step = TIR.step(TIR_PROMPT, Generation("<tool_call>\nprint(", "length"), 0)
    assert isinstance(step, Finish) and step.keep == "<tool_call>\nprint(</tool_call>"


def test_ipython_cell_cleanup() -> None:
    assert ipython_cell("\n\n    x = 1\n    if x:\n        y = 2\n") == "x = 1\nif x:\n    y = 2\n"
    assert ipython_cell("\nprint(1)\n") == "print(1)\n"
    assert ipython_cell("\n  \n") == ""


# -- the loop, scripted (the model) + the real sandbox (the executor) ----------------------

def _solve(script: list[str], **overrides) -> tuple[dict, list[str]]:
    engine = ScriptedEngine(script)
    record = Solver(engine=engine, protocol="openmath-tir", model="scripted", **overrides).solve(Q)
    return record, engine.sessions[0].contexts_seen


def test_a_call_its_output_and_the_countdown_come_back_and_state_persists() -> None:
    first = "<think>\nLet me compute.\n<tool_call>\nx = 2 + 3\nx\n</tool_call>never generated"
    second = "So x is 5. Double it.\n<tool_call>\nprint(x * 2)\n</tool_call>"
    last = "Got 10.\n</think>\n\nThe answer is $\\boxed{10}$."
    record, contexts = _solve([first, second, last])
    kept1 = "<think>\nLet me compute.\n<tool_call>\nx = 2 + 3\nx\n</tool_call>"
    assert contexts[1] == TIR_PROMPT + kept1 + block("5\n", remaining(7))  # the last expression displayed
    kept2 = "So x is 5. Double it.\n<tool_call>\nprint(x * 2)\n</tool_call>"
    assert contexts[2] == contexts[1] + kept2 + block("10\n", remaining(6))  # x from call 1
    assert record["status"] == "finished" and record["rounds"] == 3 and record["answer"] == "10"
    roles = [segment["role"] for segment in record["transcript"]]
    assert roles == ["prompt", "thinking", "tool", "thinking", "tool", "thinking", "model"]
    assert record["transcript"][-1]["text"] == "\n\nThe answer is $\\boxed{10}$."


def test_the_budget_countdown_out_of_executions_and_a_call_after_the_budget() -> None:
    calls = [f"Step {k}.\n<tool_call>\nprint({k})\n</tool_call>" for k in range(1, 10)]
    record, contexts = _solve(calls + ["never asked for"])
    observations = [call["observation"] for call in record["tool_calls"]]
    assert len(observations) == 8 and len(contexts) == 9  # 8 calls run, then one more round only
    assert observations[:7] == [block(f"{k}\n", remaining(8 - k)) for k in range(1, 8)]
    assert observations[7] == block("8\n", OUT_OF_EXECUTIONS)
    assert contexts[8].endswith("Step 8.\n<tool_call>\nprint(8)\n</tool_call>" + block("8\n", OUT_OF_EXECUTIONS))
    # The 9th call is kept as written, nothing runs, and the solution ends there.
    assert record["transcript"][-1]["text"] == "Step 9.\n<tool_call>\nprint(9)\n</tool_call>"
    assert record["status"] == "finished" and record["rounds"] == 9


def test_a_solution_without_a_call() -> None:
    record, contexts = _solve(["<think>\n2 + 3 = 5.\n</think>\n\n$\\boxed{5}$<|im_end|>ignored", "unused"])
    assert record["tool_calls"] == [] and record["rounds"] == 1 and len(contexts) == 1
    assert record["status"] == "finished" and record["answer"] == "5"
    assert [s["role"] for s in record["transcript"]] == ["prompt", "thinking", "model"]


def test_a_solution_cut_by_the_token_limit() -> None:
    # The scripted engine counts one character as one token.
    record, _ = _solve(["<think>\nLong thoughts, and more thoughts, never closed " * 3], max_tokens=40)
    assert record["status"] == "length" and record["tool_calls"] == []
    assert not record["answer"]  # remove_thinking: an unclosed <think> leaves nothing to read
    call = "<tool_call>\nprint('cut inside the call')\n</tool_call>"
    record, _ = _solve([call], max_tokens=20)
    assert record["status"] == "length" and record["tool_calls"] == []
    assert record["transcript"][-1]["text"] == call[:20] + "</tool_call>"  # closed as the harness does


def test_the_executor_timeout_text() -> None:
    record, contexts = _solve(["<tool_call>\nimport time\nprint('partial')\ntime.sleep(30)\n</tool_call>", "done"],
                              tool_timeout=1)
    # sandbox.py: a timed-out call returns stdout "" and stderr "Timed out\n".
    assert record["tool_calls"][0]["observation"] == block("Timed out\n", remaining(7))
    assert record["tool_calls"][0]["status"] == "timeout"


def test_the_1000_character_cut() -> None:
    record, _ = _solve(["<tool_call>\nprint('ab' * 600)\n</tool_call>", "done"])
    # sandbox.py: stdout[:1000] + "<output cut>", then the newline every non-empty output gets.
    assert record["tool_calls"][0]["observation"] == block("ab" * 500 + "<output cut>\n", remaining(7))


def test_answer_text_follows_remove_thinking() -> None:
    # utils.py remove_thinking: after the last </think>, stripped; "" when <think> never closed.
    assert TIR.answer_text("<think>\n\\boxed{1}\n</think>\n\n\\boxed{2}\n") == "\\boxed{2}"
    assert COT.answer_text("<think>\n\\boxed{1} and on") == ""
    assert COT.answer_text("no tags \\boxed{3}") == "no tags \\boxed{3}"
    whole = OpenMathCotProtocol()
    whole.answer_after_thinking = False  # the April 2025 evaluation read the whole generation
    assert whole.answer_text("<think>\n\\boxed{1} and on") == "<think>\n\\boxed{1} and on"


def test_cot_is_one_round_without_tools() -> None:
    engine = ScriptedEngine(["<think>\nx\n</think>\n\nSo \\boxed{5}.<tool_call>\nprint(1)\n</tool_call>"])
    record = Solver(engine=engine, protocol="openmath-cot", model="scripted").solve(Q)
    assert record["tool_calls"] == [] and record["rounds"] == 1 and record["answer"] == "5"
    assert record["transcript"][0]["text"] == COT_PROMPT


def test_display_shows_calls_as_python_and_the_notice_apart() -> None:
    assert TIR.display_text("Compute.\n<tool_call>\nx = 1\n") == "Compute.\n```python\nx = 1\n"
    assert TIR.display_observation(block("5\n", remaining(7))) == "5\n[7 code executions left]"
    assert TIR.display_observation(block("a\n```\nb\n", OUT_OF_EXECUTIONS)) == "a\n```\nb\n[no code executions left]"
    assert TIR.display_observation(block("", "")) == ""


# -- the executor, against NeMo-Skills' own sandbox tests -----------------------------------

# tests/test_code_execution.py at the April 2025 release (code, then the expected
# stdout + stderr); each list is one session, blocks in order.
REFERENCE_CASES = {
    "multiple_code_blocks": [("\n    a = 1\n    a\n    ", "1\n"), ("a + 5", "6\n")],
    "triple_quotes": [('\n    def my_func():\n        """Test function"""\n        print("asdf")\n    my_func()\n', "asdf\n")],
    "multiple_prints": [('\n    print("1")\n    print("2x3")\n    ', "1\n2x3\n"), ("print(2)\n15", "2\n15\n")],
    "no_output": [("a = 2", "")],
    "execution_error": [("1 / 0", "Traceback (most recent call last):\n    1 / 0\nZeroDivisionError: division by zero\n")],
    "syntax_error": [("a = 2\n b = 3", "    b = 3\n    ^\nIndentationError: unexpected indent\n")],
    "real_generations": [(
        "\n# height of bamboo in inches\nheight_in_inches = 20 * 12\n# height of bamboo in inches after x days\n"
        "height_after_x_days = height_in_inches + 30 * x\n# solve for x\nx = (600 - height_in_inches) / 30\nx\n",
        "Traceback (most recent call last):\n    height_after_x_days = height_in_inches + 30 * x\n"
        "NameError: name 'x' is not defined\n",
    )],
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_executor_output_matches_the_references_sandbox_tests(case: str) -> None:
    session = registry.tools()["python"].open_session(Limits(timeout_s=10))
    try:
        for code, expected in REFERENCE_CASES[case]:
            assert executor_output(session.run(WARNINGS_OFF + ipython_cell(code))) == expected
    finally:
        session.close()


def test_executor_output_of_library_frames_warnings_and_long_values() -> None:
    # Checked against the released executor run with IPython 8: a library frame reads
    # `  File PATH:LINE in NAME`; warnings are filtered; a multi-line value starts on its own
    # line, so prints before it leave a blank line.
    session = registry.tools()["python"].open_session(Limits(timeout_s=10))
    try:
        out = executor_output(session.run(WARNINGS_OFF + "import fractions\nfractions.Fraction(1, 0)"))
        lines = out.split("\n")
        assert lines[:2] == ["Traceback (most recent call last):", "    fractions.Fraction(1, 0)"]
        assert re.fullmatch(r"  File /\S+/fractions\.py:\d+ in __new__", lines[2]), lines[2]
        assert lines[3].startswith("    raise ZeroDivisionError(")  # the library's source line
        assert lines[-2] == "ZeroDivisionError: Fraction(1, 0)"
        assert executor_output(session.run(WARNINGS_OFF + "import warnings\nwarnings.warn('w')\nprint(2)")) == "2\n"
        value = "class A:\n    def __repr__(self):\n        return 'l1\\nl2'\nprint('p')\nA()"
        assert executor_output(session.run(WARNINGS_OFF + value)) == "p\n\nl1\nl2\n"
        assert executor_output(session.run(WARNINGS_OFF + 'print("unclosed')) == (
            '    print("unclosed\n          ^\nSyntaxError: unterminated string literal (detected at line 1)\n'
        )
    finally:
        session.close()


def test_executor_output_without_a_traceback_and_with_stderr() -> None:
    assert executor_output(ToolResult("python", "error", stdout="a\n", error="the interpreter died")) == (
        "a\nthe interpreter died\n"
    )
    assert executor_output(ToolResult("python", "ok", stdout="  Out[1]: 4  \n", stderr="warn\n")) == "4\nwarn\n"
    assert executor_output(ToolResult("python", "ok", stdout="\x1b[31mred\x1b[0m\nFile <ipython-x>\n")) == "red\n"


# -- a real llama.cpp on a tiny model with Qwen's special tokens -----------------------------

QWEN_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "<think>", "</think>")


@pytest.fixture(scope="module")
def openmath_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Qwen's <tool_call> tags are added tokens that are not special (USER_DEFINED in a GGUF);
    # llama.cpp makes <|im_end|> and <|endoftext|> control tokens whatever the file says.
    return write_tiny_gguf(tmp_path_factory.mktemp("om") / "openmath-tiny.gguf", tokenizer="bpe",
                           special_tokens=QWEN_TOKENS, special_type="user_defined")


@pytest.fixture(scope="module")
def openmath_engine(openmath_gguf: Path):
    from mathsolve.engines.llama import LlamaEngine

    engine = LlamaEngine(str(openmath_gguf), n_ctx=1024, extra_buffers="off")
    yield engine
    engine.close()


def test_the_tags_are_single_tokens_in_the_prompt_and_in_appended_text(openmath_engine) -> None:
    engine = openmath_engine
    assert engine.marker_problems(TIR.markers) == []
    ids = {t: engine.tokenize(t.encode(), add_bos=False, special=True) for t in QWEN_TOKENS}
    assert all(len(v) == 1 for v in ids.values())
    session = engine.session(TIR_PROMPT, special=True, render_special=True, literal=Q, markers=TIR.markers)
    assert session.tokens.count(ids["<|im_start|>"][0]) == 3 and session.tokens.count(ids["<|im_end|>"][0]) == 2
    before = len(session.tokens)
    kept = "<think>\nx\n<tool_call>\nprint(5)\n</tool_call>"
    session.push(kept + block("5\n", remaining(7)))
    tail = session.tokens[before:]
    for tag in ("<think>", "<tool_call>", "</tool_call>"):
        assert tail.count(ids[tag][0]) == 1, tag
    assert engine.detokenize(tail, True).decode() == kept + block("5\n", remaining(7))


def test_the_loop_on_llama_cpp_ends_at_the_token_limit(openmath_engine) -> None:
    session = openmath_engine.session(TIR_PROMPT, special=True, render_special=True, literal=Q, markers=TIR.markers)
    result = run_loop(prompt=TIR_PROMPT, protocol=TIR, session=session, router=ToolRouter(registry.tools()),
                      sampling=Sampling(), limits=Limits(), max_new_tokens=12)
    assert result.status == "length" and result.rounds == 1 and result.tool_calls == []
    assert session.stats.generated == 12 and result.solution  # the tiny model writes plain text


def test_cli_runs_openmath_tir_on_the_tiny_model(openmath_gguf: Path) -> None:
    r = run_cli("--model", str(openmath_gguf), "--protocol", "openmath-tir", "--max-tokens", "8", "--json", Q)
    assert r.code == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["protocol"] == "openmath-tir" and record["status"] == "length"
    assert [segment["role"] for segment in record["transcript"]] == ["prompt", "model"]
    assert record["transcript"][0]["text"] == TIR_PROMPT


def test_cli_refuses_a_gguf_without_the_tool_call_tokens(tiny_bpe: Path) -> None:
    r = run_cli("--model", str(tiny_bpe), "--protocol", "openmath-tir", "--max-tokens", "4", Q)
    assert r.code == EXIT_BAD_MODEL_FILE and "<tool_call>" in r.stderr and "Traceback" not in r.stderr
