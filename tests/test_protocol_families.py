"""The protocols beyond ToRA: prompts byte for byte as written in the protocol reference,
and every stop / continue / inject / finish rule, round limit and truncation with a
scripted engine."""

from __future__ import annotations

import pytest

from mathsolve.api import Solver
from mathsolve.engines.base import EngineInfo, Sampling
from mathsolve.engines.scripted import ScriptedEngine
from mathsolve.errors import UsageError
from mathsolve.formats.base import Continue, Execute, Finish, Generation, ModelInfo
from mathsolve.formats.chat_tir import ChatTirProtocol, fence_state
from mathsolve.formats.cot import AlpacaCotProtocol, DeepSeekCotProtocol
from mathsolve.formats.mathcoder import MathCoderProtocol, notebook_traceback, round_decimals
from mathsolve.formats.numina import NuminaProtocol, filter_traceback, numina_program
from mathsolve.core.loop import run_loop
from mathsolve.sandbox import CODE_FILENAME, Limits
from mathsolve.tools import ToolResult, ToolRouter
from mathsolve import registry

Q = "What is 2 + 3?"


# -- prompts, byte for byte ------------------------------------------------------------

def test_mathcoder_prompt_is_byte_exact() -> None:
    assert MathCoderProtocol().prompt(Q) == (
        "<|system|><|text|><|endofblock|><|endofmessage|><|user|><|text|>What is 2 + 3?\n"
        "<|endofblock|><|endofmessage|><|assistant|>"
    )


def test_mathcoder_optional_system_text() -> None:
    p = MathCoderProtocol()
    p.system = 'Below is a math problem. Please solve it step by step and put your answer in "\\boxed{}".'
    assert p.prompt(Q).startswith(
        '<|system|><|text|>Below is a math problem. Please solve it step by step and put your answer in '
        '"\\boxed{}".<|endofblock|><|endofmessage|><|user|>'
    )


def test_alpaca_cot_prompt_is_byte_exact() -> None:
    assert AlpacaCotProtocol().prompt(Q) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nWhat is 2 + 3?\n\n### Response:\n"
    )


def test_numina_prompt_is_byte_exact() -> None:
    assert NuminaProtocol().prompt(Q) == "### Problem: What is 2 + 3?\n### Solution: "


def test_deepseek_cot_prompt_is_byte_exact() -> None:
    assert DeepSeekCotProtocol().prompt(Q) == (
        "User: What is 2 + 3?\nPlease reason step by step, and put your final answer within \\boxed{}."
        "\n\nAssistant:"
    )


def test_every_protocol_is_registered() -> None:
    assert {"tora", "mathcoder", "alpaca-cot", "numina", "qwen-tir", "qwen-cot", "deepseek-cot", "chat-tir"} <= set(
        registry.protocols()
    )


def test_stops_and_limits_follow_the_reference() -> None:
    assert MathCoderProtocol.stops == ("<|endofblock|>", "<|endofmessage|>")
    assert (MathCoderProtocol.max_rounds, MathCoderProtocol.max_new_tokens, MathCoderProtocol.tool_timeout_s) == (16, 512, 6.0)
    assert AlpacaCotProtocol.stops == ("### Instruction:", "### Response:") and AlpacaCotProtocol.max_new_tokens == 2048
    assert NuminaProtocol.stops == ("```output\n",)
    assert (NuminaProtocol.max_rounds, NuminaProtocol.max_new_tokens) == (4, 2048)
    assert DeepSeekCotProtocol.stops == ()


# -- the scripted loop -----------------------------------------------------------------

class FakeSession:
    def __init__(self, tool: "StatefulTool") -> None:
        self.tool, self.closed = tool, False

    def run(self, code: str) -> ToolResult:
        self.tool.calls.append((id(self), code))
        return self.tool.results.pop(0) if self.tool.results else ToolResult("python", "ok", stdout="5\n")

    def close(self) -> None:
        self.closed = True


class StatefulTool:
    """A fake backend with sessions; records which session ran each block."""

    name, description = "python", "fake"

    def __init__(self, results: list[ToolResult] | None = None) -> None:
        self.calls: list[tuple[int, str]] = []
        self.sessions: list[FakeSession] = []
        self.results = list(results or [])

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        self.calls.append((0, code))
        return self.results.pop(0) if self.results else ToolResult("python", "ok", stdout="5\n")

    def open_session(self, limits: Limits) -> FakeSession:
        session = FakeSession(self)
        self.sessions.append(session)
        return session


def _run(protocol, outputs, tool=None, **kw):
    tool = tool or StatefulTool()
    engine = ScriptedEngine(outputs)
    prompt = protocol.prompt(Q)
    session = engine.session(prompt)
    result = run_loop(
        prompt=prompt, protocol=protocol, session=session, router=ToolRouter({"python": tool}),
        sampling=Sampling(), limits=Limits(), **kw,
    )
    return result, session, tool


def test_mathcoder_blocks_run_in_one_session_and_feed_back_execution() -> None:
    p = MathCoderProtocol()
    script = [
        "<|text|>Let me compute.<|endofblock|>",
        "<|code|>x = 2 + 3\nx<|endofblock|>",
        "<|code|>print(x)<|endofblock|>",
        "<|text|>So the answer is $\\boxed{5}$.<|endofblock|>",
        "<|endofmessage|>ignored",
    ]
    result, session, tool = _run(p, script)
    assert result.status == "finished" and result.rounds == 5
    assert [code for _, code in tool.calls] == ["x = 2 + 3\nx", "print(x)"]
    assert len(tool.sessions) == 1 and tool.sessions[0].closed  # one session, closed at the end
    assert session.contexts_seen[3] == (
        p.prompt(Q) + "<|text|>Let me compute.<|endofblock|><|code|>x = 2 + 3\nx<|endofblock|>"
        "<|execution|>5<|endofblock|><|code|>print(x)<|endofblock|><|execution|>5<|endofblock|>"
    )
    assert result.solution.endswith("\\boxed{5}$.<|endofblock|><|endofmessage|>")


def test_mathcoder_stops_after_16_blocks() -> None:
    result, _, _ = _run(MathCoderProtocol(), ["<|text|>more<|endofblock|>"] * 20)
    assert result.rounds == 16 and result.status == "max_rounds"


def test_mathcoder_code_in_the_16th_block_still_runs() -> None:
    result, _, tool = _run(MathCoderProtocol(), ["<|code|>print(1)<|endofblock|>"] * 20)
    assert result.rounds == 16 and len(tool.calls) == 16 and result.status == "max_rounds"
    assert result.solution.endswith("<|execution|>5<|endofblock|>")  # no note appended


def test_mathcoder_end_of_sequence_finishes() -> None:
    result, _, _ = _run(MathCoderProtocol(), ["<|text|>\\boxed{5}"])
    assert result.status == "finished" and result.rounds == 1


def test_mathcoder_rounds_long_decimals_in_the_models_block() -> None:
    p = MathCoderProtocol()
    result, _, tool = _run(p, ["<|code|>r = 0.12345678 * 2.5\nprint(r)<|endofblock|>", "<|endofmessage|>"])
    assert tool.calls[0][1] == "r = 0.123457 * 2.5\nprint(r)"
    assert "0.12345678" not in result.solution
    p.decimal_places = None
    result, _, tool = _run(p, ["<|code|>r = 0.12345678<|endofblock|>", "<|endofmessage|>"])
    assert tool.calls[0][1] == "r = 0.12345678"


def test_round_decimals_matches_the_reference_rule() -> None:
    assert round_decimals("3.14159265 and 2.5 and 1.0000004 and 10.1234567") == "3.141593 and 2.5 and 1.000000 and 10.123457"


def test_mathcoder_result_text() -> None:
    p = MathCoderProtocol()
    assert p.result_text(ToolResult("python", "ok")) == "<empty_execution>"
    assert p.result_text(ToolResult("python", "ok", stdout="a\n", display="10")) == "a\n10"
    assert p.result_text(ToolResult("python", "ok", display="x**2 + 1")) == "x**2 + 1"
    assert p.result_text(ToolResult("python", "ok", stdout="\n")) == ""  # reference: strip after the empty check
    timeout = p.result_text(ToolResult("python", "timeout"))
    assert timeout == "-" * 75 + " Timeout waiting for reply" + " " * 32 + "Traceback (most recent call last) "
    tb = (
        "Traceback (most recent call last):\n"
        f'  File "{CODE_FILENAME}", line 2, in <module>\n'
        "    y = x / 0\n"
        "        ~~^~~\n"
        "ZeroDivisionError: division by zero\n"
    )
    err = ToolResult("python", "error", stdout="before\n", error="ZeroDivisionError: division by zero", traceback=tb)
    assert p.observation(err, index=2) == (
        "<|execution|>before\n" + "-" * 75 + " ZeroDivisionError" + " " * 25 + "Traceback (most recent call last) "
        "Cell In[3], line 2\n----> 2 y = x / 0\n ZeroDivisionError: division by zero<|endofblock|>"
    )


def test_notebook_traceback_skips_library_frames() -> None:
    tb = (
        "Traceback (most recent call last):\n"
        f'  File "{CODE_FILENAME}", line 1, in <module>\n'
        "    f()\n"
        '  File "/lib/site-packages/pkg/mod.py", line 9, in f\n'
        "    raise ValueError('bad')\n"
        "ValueError: bad\n"
    )
    text = notebook_traceback(tb, CODE_FILENAME, 1)
    assert "mod.py" not in text and text.endswith("----> 1 f()\n ValueError: bad")


def test_mathcoder_needs_a_stateful_backend() -> None:
    class Stateless:
        name, description = "python", "no sessions"

        def run(self, code, *, limits, prelude=""):
            return ToolResult("python", "ok")

    with pytest.raises(UsageError, match="keeps state"):
        _run(MathCoderProtocol(), ["<|code|>x = 1<|endofblock|>"], tool=Stateless())


def test_numina_keeps_the_stop_and_appends_output_without_newline() -> None:
    p = NuminaProtocol()
    first = "Compute.\n```python\nx = 2 + 3\nx\n```\n```output\n"
    result, session, tool = _run(p, [first + "junk", "So $\\boxed{5}$."], tool=StatefulTool())
    assert [code for _, code in tool.calls] == ["import math\nimport numpy as np\nimport sympy as sp\n\nx = 2 + 3\nprint(x)"]
    assert session.contexts_seen[1] == p.prompt(Q) + first + "5\n```"
    assert result.status == "finished" and result.solution.endswith("5\n```So $\\boxed{5}$.")


def test_numina_does_not_run_code_of_the_last_step() -> None:
    step = "```python\nprint(1)\n```\n```output\n"
    result, _, tool = _run(NuminaProtocol(), [step] * 6)
    assert result.rounds == 4 and len(tool.calls) == 3 and result.status == "max_rounds"
    assert result.solution.endswith("```output\n")


def test_numina_output_block_without_code_ends_the_solution() -> None:
    result, _, tool = _run(NuminaProtocol(), ["I guess.\n```output\n"])
    assert tool.calls == [] and result.status == "finished"


def test_numina_program_wraps_the_last_line() -> None:
    assert numina_program("\nx = 2\nx ** 2  # square\n").endswith("x = 2\nprint(x ** 2  )")
    assert numina_program("print(3)\n").endswith("\nprint(3)")
    assert numina_program("y = [print(1)]").endswith("\ny = [print(1)]")


def test_numina_observation_truncates_and_filters_errors() -> None:
    p = NuminaProtocol()
    assert p.observation(ToolResult("python", "ok", stdout="z" * 300)) == "z" * 200 + " ... (output truncated)\n```"
    assert p.observation(ToolResult("python", "timeout")) == "Timed out after 5 seconds.\n```"
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/opt/runner.py", line 9, in execute\n'
        "    exec(code)\n"
        f'  File "{CODE_FILENAME}", line 5, in <module>\n'
        "    print(1 / 0)\n"
        "          ~~^~~\n"
        "ZeroDivisionError: division by zero"
    )
    assert filter_traceback(tb, CODE_FILENAME) == (
        'Traceback (most recent call last):\n  File "\n    print(1 / 0)\nZeroDivisionError: division by zero'
    )
    err = ToolResult("python", "error", error="ZeroDivisionError: division by zero", traceback=tb)
    assert p.observation(err).startswith("Traceback (most recent call last):\n  File \"\n")


def test_alpaca_cot_is_one_round_and_a_truncated_solution_has_no_answer() -> None:
    result, _, tool = _run(AlpacaCotProtocol(), ["The answer is 5.### Instruction: more"])
    assert result.rounds == 1 and tool.calls == [] and result.solution == "The answer is 5."
    engine = ScriptedEngine(["Therefore the answer is 5 and then it goes on and on"])
    solver = Solver(engine=engine, protocol="alpaca-cot", model="scripted", max_tokens=30)
    record = solver.solve(Q)
    assert record["status"] == "length" and record["answer"] is None


def test_deepseek_cot_runs_until_end_of_sequence() -> None:
    result, _, _ = _run(DeepSeekCotProtocol(), ["Step 1.\n```python\nprint(1)\n```\n```output\nSo \\boxed{5}"])
    assert result.rounds == 1 and result.status == "finished" and result.tool_calls == []


# -- chat-tir --------------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NO_SYSTEM = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<start_of_turn>{{ message['role'] }}\n{{ message['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _chat(template=CHATML, **kw) -> ChatTirProtocol:
    return ChatTirProtocol().bind(ModelInfo(chat_template=template, **kw))


def test_chat_tir_renders_the_models_template_with_the_instruction() -> None:
    p = _chat()
    assert p.prompt(Q) == (
        "<|im_start|>system\n" + p.system + "<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert "```python" in p.system and "\\boxed{}" in p.system


def test_chat_tir_without_system_role_and_bos_added_by_the_engine() -> None:
    p = _chat(NO_SYSTEM, bos_token="<bos>", add_bos=True)
    assert p.prompt(Q) == "<start_of_turn>user\n" + p.system + "\n\nWhat is 2 + 3?<end_of_turn>\n<start_of_turn>model\n"


def test_chat_tir_needs_a_template() -> None:
    with pytest.raises(UsageError, match="chat template"):
        ChatTirProtocol().bind(ModelInfo(name="x.gguf"))
    with pytest.raises(UsageError, match="bound"):
        ChatTirProtocol().prompt(Q)


def test_chat_tir_runs_each_python_block_when_its_fence_closes() -> None:
    p = _chat()
    script = [
        "Compute.\n```python\nprint(2 + 3)\n```\nrest is cut",
        "So the answer is $\\boxed{5}$.",
    ]
    result, session, tool = _run(p, script, tool=StatefulTool())
    assert [code for _, code in tool.calls] == ["print(2 + 3)\n"]
    assert session.contexts_seen[1] == p.prompt(Q) + "Compute.\n```python\nprint(2 + 3)\n```\n```output\n5\n```\n"
    assert result.status == "finished" and result.rounds == 2


def test_chat_tir_other_fences_continue() -> None:
    p = _chat()
    script = ["Formula:\n```latex\nx^2\n```\n", "Code:\n```\n", "print(1)\n```\n", "Done, \\boxed{1}."]
    result, _, tool = _run(p, script)
    # A closed latex block, an opening fence without language, and the closing of that
    # language-less block are not python: nothing runs.
    assert tool.calls == [] and result.rounds == 4 and result.status == "finished"


def test_chat_tir_end_of_turn_after_code_runs_it_unless_answered() -> None:
    p = _chat()
    step = p.step(p.prompt(Q), Generation("```python\nprint(1)\n```", "eos"), 0)
    assert isinstance(step, Execute) and step.code == "print(1)\n"
    step = p.step(p.prompt(Q), Generation("\\boxed{1}\n```python\nprint(1)\n```", "eos"), 0)
    assert isinstance(step, Finish)
    assert isinstance(p.step("", Generation("```py\nx\n", "stop", "```\n"), 0), Execute)
    assert isinstance(p.step("", Generation("```\n", "stop", "```\n"), 0), Continue)


def test_fence_state() -> None:
    assert fence_state("a\n```python\nx") == (True, "python")
    assert fence_state("```python\nx\n```") == (False, "python")
    assert fence_state("text ```python inline") == (False, None)


def test_solver_binds_chat_tir_to_the_engines_model() -> None:
    engine = ScriptedEngine(["\\boxed{5}"])
    engine.info = EngineInfo(name="scripted", model=ModelInfo(chat_template=CHATML))
    record = Solver(engine=engine, protocol="chat-tir", model="scripted").solve(Q)
    assert record["transcript"][0]["text"].startswith("<|im_start|>system\nSolve the math problem")
    assert record["answer"] == "5"


# -- with the real sandbox ---------------------------------------------------------------

def _solve_real(protocol: str, script: list[str]) -> dict:
    solver = Solver(engine=ScriptedEngine(script), protocol=protocol, model="scripted")
    return solver.solve(Q)


def test_mathcoder_state_persists_and_errors_read_like_the_notebook() -> None:
    record = _solve_real("mathcoder", [
        "<|code|>x = 2 + 3\nx<|endofblock|>",
        "<|code|>y = x * 2\nprint(y)\nundefined_name<|endofblock|>",
        "<|code|>z = 1<|endofblock|>",
        "<|text|>So $\\boxed{10}$.<|endofblock|>",
        "<|endofmessage|>",
    ])
    observations = [c["observation"] for c in record["tool_calls"]]
    assert observations[0] == "<|execution|>5<|endofblock|>"
    assert observations[1] == (
        "<|execution|>10\n" + "-" * 75 + " NameError" + " " * 33 + "Traceback (most recent call last) "
        "Cell In[2], line 3\n----> 3 undefined_name\n NameError: name 'undefined_name' is not defined<|endofblock|>"
    )
    assert observations[2] == "<|execution|><empty_execution><|endofblock|>"
    assert record["answer"] == "10" and record["status"] == "finished"


def test_numina_runs_with_its_imports_and_filters_real_tracebacks() -> None:
    record = _solve_real("numina", [
        "```python\nr = sp.Rational(1, 3) + sp.Rational(1, 6)\nr\n```\n```output\n",
        "```python\nvalue = math.sqrt(16)\nvalue / 0\n```\n```output\n",
        "So $\\boxed{1/2}$.",
    ])
    observations = [c["observation"] for c in record["tool_calls"]]
    assert observations[0] == "1/2\n```"
    assert observations[1] == (
        'Traceback (most recent call last):\n  File "\n    print(value / 0)\n'
        "ZeroDivisionError: float division by zero\n```"
    )
    assert record["answer"] == "\\frac{1}{2}"
