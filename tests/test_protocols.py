"""Prompts byte for byte as written in the protocol reference, and the ToRA result rules."""

from __future__ import annotations

from mathsolve.formats.base import Generation, last_fenced_block, middle_truncate
from mathsolve.formats.tora import QwenCotProtocol, QwenTirProtocol, ToraProtocol
from mathsolve.tools import ToolResult

Q = "  What is 2 + 3?  "


def test_tora_prompt_is_byte_exact() -> None:
    assert ToraProtocol().prompt(Q) == "<|user|>\nWhat is 2 + 3?\n<|assistant|>\n"


def test_qwen_tir_prompt_is_byte_exact() -> None:
    assert QwenTirProtocol().prompt("What is 2 + 3?") == (
        "<|im_start|>system\nPlease integrate natural language reasoning with programs to solve the problem above, "
        "and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_qwen_cot_prompt_is_byte_exact() -> None:
    assert QwenCotProtocol().prompt("What is 2 + 3?") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_stops() -> None:
    assert ToraProtocol.stops == ("```output", "</s>")
    assert QwenTirProtocol.stops == ("<|im_end|>", "<|endoftext|>", "```output")
    assert "```output" not in QwenCotProtocol.stops


def test_last_fenced_block_is_line_based_and_takes_the_last() -> None:
    text = "```python\na = 1\n```\n```output\n1\n```\nthen\n```python\nb = 2\nprint(b)\n```"
    assert last_fenced_block(text) == "b = 2\nprint(b)\n"
    assert last_fenced_block("no code") == ""


def test_result_text_follows_tora_executor() -> None:
    p = ToraProtocol()
    assert p.result_text(ToolResult("python", "ok", stdout="  5\n")) == "5"
    assert p.result_text(ToolResult("python", "ok", stdout="")) == "Done"
    err = ToolResult("python", "error", stdout="partial", error="NameError: name 'x' is not defined")
    assert p.result_text(err) == "NameError: name 'x' is not defined"
    assert p.result_text(ToolResult("python", "timeout")) == "Timeout Error"
    long = "x" * 150 + "y" * 300
    assert p.result_text(ToolResult("python", "ok", stdout=long)) == "x" * 150 + "y" * 50 + "..." + "y" * 200
    assert p.observation(ToolResult("python", "ok", stdout="5")) == "\n```output\n5\n```\n"


def test_first_release_switches() -> None:
    p = ToraProtocol()
    p.last_line_only, p.truncate_at = True, 100
    assert p.result_text(ToolResult("python", "ok", stdout="a\nb\n" + "z" * 120)) == "z" * 50 + "..." + "z" * 50


def test_middle_truncate_keeps_short_text() -> None:
    assert middle_truncate("abc", 400) == "abc"


def test_step_executes_only_when_round_ends_in_a_fence() -> None:
    p = ToraProtocol()
    code = "Let's compute.\n```python\nprint(2+3)\n```\n"
    step = p.step("<|user|>\nq\n<|assistant|>\n", Generation(code, "stop", "```output"), 0)
    assert step.__class__.__name__ == "Execute" and step.code == "print(2+3)\n"
    assert step.keep == code.rstrip()
    done = p.step("", Generation("So the answer is $\\boxed{5}$.", "eos"), 1)
    assert done.__class__.__name__ == "Finish"


def test_boxed_quirk_ends_even_with_code_and_can_be_switched_off() -> None:
    text = "a lego boxed set\n```python\nprint(1)\n```"
    p = ToraProtocol()
    assert p.step("", Generation(text, "stop"), 0).__class__.__name__ == "Finish"
    p.boxed_stops = False
    assert p.step("", Generation(text, "stop"), 0).__class__.__name__ == "Execute"
