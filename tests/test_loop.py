"""The loop's logic with a scripted engine: stops, rounds, the boxed rule, limits, answers."""

from __future__ import annotations

from mathsolve.api import Solver
from mathsolve.engines.base import Sampling
from mathsolve.engines.scripted import ScriptedEngine
from mathsolve.formats.tora import QwenTirProtocol, ToraProtocol
from mathsolve.core.loop import run_loop
from mathsolve.sandbox import Limits
from mathsolve.tools import ToolResult, ToolRouter

CODE_ROUND = "Compute it.\n```python\nprint(2 + 3)\n```\n```output\n5\n```\nwrong if seen"


class EchoTool:
    """A fake tool: records the code, prints a fixed value."""

    name, description = "python", "fake"

    def __init__(self, stdout: str = "5\n", status: str = "ok", error: str | None = None) -> None:
        self.calls: list[str] = []
        self.result = ToolResult("python", status, stdout=stdout, error=error)

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        self.calls.append(code)
        return self.result


def _run(outputs, protocol=None, tool=None, **kw):
    protocol = protocol or ToraProtocol()
    tool = tool or EchoTool()
    engine = ScriptedEngine(outputs)
    prompt = protocol.prompt("What is 2 + 3?")
    session = engine.session(prompt)
    result = run_loop(
        prompt=prompt, protocol=protocol, session=session, router=ToolRouter({"python": tool}),
        sampling=Sampling(), limits=Limits(), **kw,
    )
    return result, session, tool


def test_code_round_then_answer_feeds_the_exact_reference_text() -> None:
    result, session, tool = _run([CODE_ROUND, "The answer is $\\boxed{5}$.</s>ignored"])
    assert tool.calls == ["print(2 + 3)\n"]
    assert result.status == "finished" and result.rounds == 2
    # Round 2 saw prompt + right-stripped round 1 + "\n```output\n5\n```\n".
    assert session.contexts_seen[1] == (
        "<|user|>\nWhat is 2 + 3?\n<|assistant|>\n"
        "Compute it.\n```python\nprint(2 + 3)\n```\n```output\n5\n```\n"
    )
    assert result.solution.endswith("\n```\nThe answer is $\\boxed{5}$.")
    assert "".join(s.text for s in result.segments) == session.contexts_seen[1] + "The answer is $\\boxed{5}$."


def test_round_without_code_finishes() -> None:
    result, _, tool = _run(["Just 5.</s>"])
    assert tool.calls == [] and result.rounds == 1 and result.status == "finished"


def test_boxed_in_a_code_round_stops_without_running() -> None:
    result, _, tool = _run(["\\boxed{x}\n```python\nprint(1)\n```\n```output"])
    assert tool.calls == [] and result.rounds == 1


def test_round_limit_runs_the_last_code_and_appends_the_note() -> None:
    code = "```python\nprint(1)\n```\n```output\n"
    result, session, tool = _run([code] * 6)
    assert result.rounds == 4 and len(tool.calls) == 4 and result.status == "max_rounds"
    assert result.solution.endswith("```output\n5\n```\n\nReach max function call limit.")
    assert [s.role for s in result.segments][-2:] == ["tool", "note"]


def test_max_rounds_override() -> None:
    result, _, tool = _run(["```python\nprint(1)\n```\n```output"] * 6, max_rounds=2)
    assert result.rounds == 2 and len(tool.calls) == 2


def test_token_limit_gives_length_status() -> None:
    result, _, _ = _run(["x" * 50], max_new_tokens=10)
    assert result.status == "length" and result.solution == "x" * 10


def test_error_observation_is_the_last_traceback_line() -> None:
    tool = EchoTool(stdout="partial", status="error", error="ZeroDivisionError: division by zero")
    result, session, _ = _run([CODE_ROUND, "done</s>"], tool=tool)
    assert "```output\nZeroDivisionError: division by zero\n```" in session.contexts_seen[1]
    assert result.tool_calls[0].status == "error"


def test_qwen_tir_stops_on_im_end() -> None:
    result, session, tool = _run([CODE_ROUND, "So $\\boxed{5}$.<|im_end|>junk"], protocol=QwenTirProtocol())
    assert result.rounds == 2 and result.solution.endswith("So $\\boxed{5}$.")


def test_interrupt_keeps_the_partial_transcript() -> None:
    class Interrupting(EchoTool):
        def run(self, code, *, limits, prelude=""):
            raise KeyboardInterrupt

    result, _, _ = _run([CODE_ROUND], tool=Interrupting())
    assert result.status == "interrupted" and "print(2 + 3)" in result.solution


def test_solver_record_has_the_documented_schema() -> None:
    engine = ScriptedEngine([CODE_ROUND, "The answer is $\\boxed{5}$.</s>"])
    solver = Solver(engine=engine, protocol="tora", model="scripted")
    solver.tools = {"python": EchoTool()}
    record = solver.solve("What is 2 + 3?", reference="5")
    for key in ("schema", "question", "answer", "status", "model", "protocol", "transcript", "tool_calls",
                "rounds", "tokens", "timings", "sampling", "engine"):
        assert key in record
    assert record["answer"] == "5" and record["correct"] is True
    call = record["tool_calls"][0]
    assert call["code"] == "print(2 + 3)\n" and call["status"] == "ok" and call["tool"] == "python"
    assert call["observation"] == "\n```output\n5\n```\n"
    assert record["transcript"][0]["role"] == "prompt"
