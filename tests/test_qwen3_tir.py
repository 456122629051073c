"""The `qwen3-tir` protocol (Qwen3 / Qwen3.5 calling a python tool through their chat template):
prompts and tool turns rendered from the real templates, both call styles, every loop rule
with a scripted model and the real sandbox, the context against the template's own rendering
of the whole conversation, and the special tokens through a real llama.cpp on tiny GGUFs.

The templates in tests/fixtures/ are the models' own:
- Qwen3-0.6B.chat_template.jinja: Qwen/Qwen3-0.6B's `chat_template`, as llama.cpp vendors it
  (ggml-org/llama.cpp models/templates/Qwen-Qwen3-0.6B.jinja, line ends as LF);
- Qwen3.5-4B.chat_template.jinja: Qwen/Qwen3.5-4B's `chat_template.jinja`, as vendored in
  models/templates/Qwen3.5-4B.jinja of a llama.cpp fork (Indras-Mirror/llama.cpp-turboq-mtp).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mathsolve import registry
from mathsolve.api import Solver
from mathsolve.core.loop import run_loop
from mathsolve.engines.base import EngineInfo, ModelInfo, Sampling
from mathsolve.engines.scripted import ScriptedEngine
from mathsolve.errors import EXIT_BAD_MODEL_FILE, EXIT_USAGE, UsageError
from mathsolve.formats.base import Continue, Execute, Finish, Generation
from mathsolve.formats.chat_tir import render_chat
from mathsolve.formats.qwen3 import (
    CALL_ERROR,
    INSTRUCTION,
    PARSE_ERROR,
    TOOL,
    Call,
    Qwen3TirProtocol,
    read_call,
)
from mathsolve.sandbox import Limits
from mathsolve.testkit import write_tiny_gguf
from mathsolve.tools import ToolResult, ToolRouter
from tests.cli_run import run_cli

FIXTURES = Path(__file__).parent / "fixtures"
QWEN3 = (FIXTURES / "Qwen3-0.6B.chat_template.jinja").read_text(encoding="utf-8")
QWEN35 = (FIXTURES / "Qwen3.5-4B.chat_template.jinja").read_text(encoding="utf-8")
TEMPLATES = {"qwen3": QWEN3, "qwen3.5": QWEN35}
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
Q = "What is 2 + 3?"
USER = Q + "\n" + INSTRUCTION
EMPTY_THINK = "<think>\n\n</think>\n\n"
HEADER = "<|im_start|>assistant\n"
# Qwen's GGUFs have these as single tokens; the tiny models get them as added tokens.
SPECIALS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "<tool_response>",
            "</tool_response>", "<think>", "</think>")


def bound(template: str = QWEN3, thinking: str = "auto") -> Qwen3TirProtocol:
    return Qwen3TirProtocol().bind(ModelInfo(chat_template=template, name="qwen.gguf")).configure(thinking=thinking)


def json_call(code: str) -> str:
    """A call as Qwen3's template writes one (its `tojson` of the arguments)."""
    return "<tool_call>\n" + '{"name": "python", "arguments": ' + json.dumps({"code": code}) + "}\n</tool_call>"


def xml_call(code: str) -> str:
    """A call as Qwen3.5's template writes one."""
    return "<tool_call>\n<function=python>\n<parameter=code>\n" + code + "\n</parameter>\n</function>\n</tool_call>"


class Session:
    def __init__(self, tool: Tool) -> None:
        self.tool, self.closed = tool, False

    def run(self, code: str) -> ToolResult:
        self.tool.calls.append(code)
        return self.tool.results.pop(0) if self.tool.results else ToolResult("python", "ok", stdout="5\n")

    def close(self) -> None:
        self.closed = True


class Tool:
    """A fake python backend with sessions: records the code, answers the given results."""

    name, description = "python", "fake"

    def __init__(self, results: list[ToolResult] | None = None) -> None:
        self.calls: list[str] = []
        self.results = list(results or [])
        self.sessions: list[Session] = []

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        raise AssertionError("qwen3-tir runs every block in the problem's session")

    def open_session(self, limits: Limits) -> Session:
        self.sessions.append(Session(self))
        return self.sessions[-1]


def run(protocol: Qwen3TirProtocol, script: list[str], tool: Tool | None = None, **kw):
    tool = tool or Tool()
    prompt = protocol.prompt(Q)
    session = ScriptedEngine(script).session(prompt)
    result = run_loop(prompt=prompt, protocol=protocol, session=session, router=ToolRouter({"python": tool}),
                      sampling=Sampling(), limits=Limits(), **kw)
    return result, session, tool


# -- the prompt, rendered from the real templates ----------------------------------------------

def test_qwen3_prompt_declares_the_python_tool_byte_for_byte() -> None:
    tools_block = (
        "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        # transformers' tojson: json.dumps as is (Jinja's own would sort keys and escape HTML)
        + json.dumps(TOOL)
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
        "<args-json-object>}\n</tool_call><|im_end|>\n"
    )
    turn = "<|im_start|>user\n" + USER + "<|im_end|>\n" + HEADER
    assert bound().prompt(Q) == tools_block + turn
    assert bound(thinking="on").prompt(Q) == tools_block + turn
    assert bound(thinking="off").prompt(Q) == tools_block + turn + EMPTY_THINK


def test_qwen35_prompt_declares_the_tool_and_opens_thinking() -> None:
    on, off = bound(QWEN35).prompt(Q), bound(QWEN35, "off").prompt(Q)
    assert on.startswith(
        "<|im_start|>system\n# Tools\n\nYou have access to the following functions:\n\n<tools>\n"
        + json.dumps(TOOL) + "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format"
    )
    assert on.endswith("</IMPORTANT><|im_end|>\n<|im_start|>user\n" + USER + "<|im_end|>\n" + HEADER + "<think>\n")
    assert off == on.removesuffix("<think>\n") + EMPTY_THINK


def test_the_tool_and_the_instruction() -> None:
    function = TOOL["function"]
    assert function["name"] == "python" and function["parameters"]["required"] == ["code"]
    assert function["parameters"]["properties"] == {"code": {"type": "string", "description": "The Python code to run."}}
    assert "stateful Python session" in function["description"] and "prints" in function["description"]
    # The Qwen3 model card's math instruction, in the user turn.
    assert INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."


def test_the_protocol_settings_follow_the_sources() -> None:
    p = Qwen3TirProtocol()
    assert "qwen3-tir" in registry.protocols()
    assert (p.stops, p.context, p.max_new_tokens, p.max_rounds) == (("</tool_call>", "<|im_end|>"), 40960, 32768, 16)
    assert (p.tool, p.stateful_tool, p.tool_timeout_s, p.grader, p.answer_style) == (
        "python", True, 10.0, "math-verify", "boxed")
    assert p.think_tags == ("<think>", "</think>") and p.thinking_switch and p.thinking
    assert p.sampling == {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0}
    assert p.configure(thinking="off").sampling == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0}
    assert p.configure(thinking="off").thinking is False and p.thinking is True  # a copy, not the shared object
    with pytest.raises(UsageError, match="no reasoning effort"):
        p.configure(reasoning="high")


def test_templates_that_cannot_call_the_tool_are_refused() -> None:
    with pytest.raises(UsageError, match="needs the model's chat template.*Qwen3"):
        Qwen3TirProtocol().bind(ModelInfo(name="plain.gguf"))
    with pytest.raises(UsageError, match="plain.gguf ignores tools; .*--protocol chat-tir"):
        Qwen3TirProtocol().bind(ModelInfo(chat_template=CHATML, name="plain.gguf"))
    # Declares tools, but renders calls its own way (no <tool_call>): refused too.
    other = (
        "{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %}{% endif %}"
        "{% for m in messages %}[{{ m.role }}]{% if m.tool_calls %}CALL{% endif %}{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    with pytest.raises(UsageError, match="does not render tool calls as <tool_call>"):
        Qwen3TirProtocol().bind(ModelInfo(chat_template=other, name="other.gguf"))
    with pytest.raises(UsageError, match="cannot be rendered"):
        Qwen3TirProtocol().bind(ModelInfo(chat_template="{{ raise_exception('no') }}", name="x.gguf"))
    with pytest.raises(UsageError, match="bound"):
        Qwen3TirProtocol().prompt(Q)


def test_render_chat_keeps_chat_tir_rendering_and_passes_tools_and_variables() -> None:
    model = ModelInfo()
    messages = [{"role": "user", "content": "hi"}]
    assert render_chat(CHATML, messages, model) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    probe = ("{{ tools is defined }}|{{ enable_thinking }}|{{ {'b': '<&>', 'a': 1} | tojson }}|"
             "{% for i in [1, 2] %}{% break %}{% endfor %}")
    assert render_chat(probe, messages, model) == 'False||{"b": "<&>", "a": 1}|'
    assert render_chat(probe, messages, model, tools=[], enable_thinking=False).startswith("True|False|")


# -- reading calls -----------------------------------------------------------------------------

def test_json_calls_as_qwen3_writes_them() -> None:
    assert read_call("Compute.\n" + json_call("x = 2 + 3\nprint(x)").removesuffix("</tool_call>")) == Call(
        code="x = 2 + 3\nprint(x)")
    # The OpenAI wire form: arguments as a JSON string.
    assert read_call('<tool_call>\n{"name": "python", "arguments": "{\\"code\\": \\"1\\"}"}\n').code == "1"


def test_xml_calls_as_qwen35_writes_them() -> None:
    code = "def f(n):\n    return n * 2\n\nprint(f(21))"
    assert read_call("Text\n\n" + xml_call(code).removesuffix("</tool_call>")).code == code
    # One newline on each side of a value is markup; more belongs to the value.
    function = "<tool_call>\n<function=python>\n<parameter=code>{}</parameter>\n</function>\n"
    assert read_call(function.format("\n\nx\n\n")).code == "\nx\n"
    assert read_call(function.format("print(1)")).code == "print(1)"
    # An unclosed parameter runs to the end of the call (the tag was the stop string).
    assert read_call("<tool_call>\n<function=python>\n<parameter=code>\nprint(1)\n").code == "print(1)"


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "python", "arguments": {"code": "print(1)"}\n',  # a brace short
    "<tool_call>\nprint(1)\n",  # bare code
    '<tool_call>\n["python"]\n',
    '<tool_call>\n{"name": "python", "arguments": ["print(1)"]}\n',
    "no call at all, yet the tag: ",
    "<tool_call>\n<parameter=code>\nx\n</parameter>\n",  # XML without <function=...>
    # a tag closing the template's own (closed) example, no call open
    '<tool_call>\n{"name": <function-name>}\n</tool_call><|im_end|>\n<|im_start|>assistant\n',
])
def test_calls_that_do_not_parse(text: str) -> None:
    assert read_call(text) == Call(error=PARSE_ERROR)


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "calculator", "arguments": {"code": "1"}}\n',
    '<tool_call>\n{"name": "python", "arguments": {"source": "1"}}\n',
    '<tool_call>\n{"name": "python", "arguments": {"code": 1}}\n',
    "<tool_call>\n<function=code_interpreter>\n<parameter=code>\n1\n</parameter>\n</function>\n",
])
def test_calls_that_cannot_run(text: str) -> None:
    assert read_call(text) == Call(error=CALL_ERROR)


def test_error_replies_are_nemo_skills_strings() -> None:
    assert PARSE_ERROR == '{"error": "Tool argument parsing failed."}'
    assert CALL_ERROR == '{"error": "Tool execution failed."}'


# -- tool turns, rendered by the templates ------------------------------------------------------

REPLY = "<|im_end|>\n<|im_start|>user\n<tool_response>\n{}\n</tool_response><|im_end|>\n" + HEADER


def test_tool_turns_are_the_templates_rendering() -> None:
    five = ToolResult("python", "ok", stdout="5\n")
    assert bound().observation(five) == REPLY.format("5")
    assert bound(thinking="off").observation(five) == REPLY.format("5") + EMPTY_THINK
    assert bound(QWEN35).observation(five) == REPLY.format("5") + "<think>\n"
    assert bound(QWEN35, "off").observation(five) == REPLY.format("5") + EMPTY_THINK
    # Qwen3 passes the content as is, Qwen3.5 trims it.
    padded = ToolResult("python", "ok", stdout="  5  \n\n")
    assert bound().observation(padded) == REPLY.format("  5  \n")
    assert bound(QWEN35).observation(padded) == REPLY.format("5") + "<think>\n"


def test_tool_message_content() -> None:
    p = bound()
    assert p.result_text(ToolResult("python", "ok", stdout="a\nb\n")) == "a\nb"
    assert p.result_text(ToolResult("python", "ok", stdout="")) == ""
    assert p.result_text(ToolResult("python", "ok", stdout="x\n", display="42")) == "x\n42"
    traceback = ('Traceback (most recent call last):\n  File "main.py", line 1, in <module>\n'
                 "ZeroDivisionError: division by zero\n")
    assert p.result_text(ToolResult("python", "error", stdout="1\n", error="ZeroDivisionError: division by zero",
                                    traceback=traceback)) == "1\n" + traceback.removesuffix("\n")
    assert p.result_text(ToolResult("python", "timeout", stdout="partial\n")) == "partial\nTimed out"
    assert p.result_text(ToolResult("python", "memory", error="MemoryError")) == "MemoryError"
    long = p.result_text(ToolResult("python", "ok", stdout="a" * 3000 + "b" * 3000))
    assert long == "a" * 2000 + "..." + "b" * 2000


def test_the_terminal_shows_the_call_as_code_and_the_output_alone() -> None:
    p = bound()
    assert p.display_text("Text\n<tool_call>\n{") == "Text\n```python\n{"
    assert p.display_observation(p.observation(ToolResult("python", "ok", stdout="5\n"))) == "5"


# -- the loop ---------------------------------------------------------------------------------

def test_a_call_runs_and_its_tool_turn_is_appended() -> None:
    p = bound()
    call = json_call("print(2 + 3)")
    result, session, tool = run(p, ["<think>\nAdd.\n</think>\n\n" + call + "ignored", "The answer is \\boxed{5}."])
    assert tool.calls == ["print(2 + 3)"] and len(tool.sessions) == 1 and tool.sessions[0].closed
    assert session.contexts_seen[1] == p.prompt(Q) + "<think>\nAdd.\n</think>\n\n" + call + REPLY.format("5")
    assert result.status == "finished" and result.rounds == 2
    assert [(c.code, c.observation) for c in result.tool_calls] == [("print(2 + 3)", REPLY.format("5"))]
    assert [s.role for s in result.segments] == ["prompt", "thinking", "model", "tool", "model"]


def test_every_call_shares_one_session() -> None:
    p = bound(QWEN35)
    script = ["A\n</think>\n\n" + xml_call("x = 2"), "B\n</think>\n\n" + xml_call("print(x + 3)"), "C\n</think>\n\n5"]
    result, _, tool = run(p, script)
    assert tool.calls == ["x = 2", "print(x + 3)"] and len(tool.sessions) == 1
    assert result.rounds == 3 and result.status == "finished"


def test_a_malformed_call_is_answered_without_running_anything() -> None:
    p = bound()
    bad = '<tool_call>\n{"name": "python", "arguments": {"code": "print(1)"}\n</tool_call>'
    result, session, tool = run(p, ["Try.\n" + bad, "Sorry.\n" + json_call("print(1)"), "\\boxed{1}"])
    assert tool.calls == ["print(1)"] and len(result.tool_calls) == 1
    assert session.contexts_seen[1] == p.prompt(Q) + "Try.\n" + bad + REPLY.format(PARSE_ERROR)
    roles = [(s.role, s.text) for s in result.segments if s.round == 0]
    assert roles == [("model", "Try.\n" + bad), ("tool", REPLY.format(PARSE_ERROR))]
    assert result.rounds == 3 and result.status == "finished"


def test_a_call_to_another_function_is_answered_with_the_execution_error() -> None:
    p = bound(QWEN35, "off")
    wrong = "<tool_call>\n<function=calculator>\n<parameter=expr>\n2+3\n</parameter>\n</function>\n</tool_call>"
    result, session, tool = run(p, [wrong, "5"])
    assert tool.calls == [] and session.contexts_seen[1].endswith(wrong + REPLY.format(CALL_ERROR) + EMPTY_THINK)


def test_a_round_without_a_call_finishes() -> None:
    for ending in ("", "<|im_end|>after the turn"):
        result, session, tool = run(bound(), ["<think>\nEasy.\n</think>\n\n\\boxed{5}" + ending])
        assert (result.rounds, result.status, tool.calls) == (1, "finished", [])
        assert result.solution == "<think>\nEasy.\n</think>\n\n\\boxed{5}"


def test_the_token_limit_ends_with_status_length() -> None:
    result, _, tool = run(bound(), ["<think>\n" + "x" * 100], max_new_tokens=20)
    assert result.status == "length" and tool.calls == []


def test_the_round_limit_bounds_the_calls() -> None:
    result, _, tool = run(bound(), [json_call("print(1)")] * 20, max_rounds=3)
    assert result.status == "max_rounds" and len(tool.calls) == 3


def test_thinking_then_answer_reads_the_answer_after_the_reasoning() -> None:
    engine = ScriptedEngine([["<think>\nMaybe \\boxed{7}?\n</think>\n\n" + json_call("print(2 + 3)"),
                              "<think>\nIt is 5, not \\boxed{7}.\n</think>\n\nSo \\boxed{5}."]])
    engine.info = EngineInfo(name="scripted", model=ModelInfo(chat_template=QWEN3))
    record = Solver(engine=engine, protocol="qwen3-tir", model="scripted").solve(Q)
    assert record["answer"] == "5" and record["status"] == "finished"
    roles = [s["role"] for s in record["transcript"]]
    assert roles == ["prompt", "thinking", "model", "tool", "thinking", "model"]


def test_answer_text() -> None:
    p, p35 = bound(), bound(QWEN35)
    assert p.answer_text("<think>\n\\boxed{7}\n</think>\n\n\\boxed{5}") == "\n\n\\boxed{5}"
    assert p.answer_text("<think>\nstill \\boxed{7} thinking") == ""  # cut off while thinking
    assert p.answer_text("no reasoning \\boxed{5}") == "no reasoning \\boxed{5}"
    assert p35.answer_text("cut off \\boxed{7}") == ""  # Qwen3.5's prompt opened <think>
    assert bound(QWEN35, "off").answer_text("\\boxed{5}") == "\\boxed{5}"
    two_turns = "\\boxed{5}" + REPLY.format("5") + EMPTY_THINK + "\\boxed{6}"
    assert bound(thinking="off").answer_text(two_turns) == "\n\n\\boxed{6}"


def test_qwen35_reasoning_is_thinking_from_the_first_token() -> None:
    result, _, _ = run(bound(QWEN35), ["Reason.\n</think>\n\n\\boxed{5}"])
    pieces = [(s.role, s.text) for s in result.segments[1:]]
    assert pieces == [("thinking", "Reason.\n</think>"), ("model", "\n\n\\boxed{5}")]


# -- the context against the template's rendering of the whole conversation ----------------------

def conversation(template: str, thinking: str, style):
    """Two calls and an answer, written as the template renders an assistant's turns; and the
    messages that conversation is, for the template to render."""
    opens = template == QWEN35 and thinking == "on"
    prefix = "<think>\n" if thinking == "on" and not opens else ""
    between = "\n\n" if style is xml_call else "\n"  # the templates' text-to-call separator
    # (reasoning, text before the call, code, what the code printed)
    turns = [("First, add.", "Let me compute.", "x = 2 + 3", ""), ("Now double it.", "", "print(x * 2)", "10")]
    script, messages = [], [{"role": "user", "content": USER}]
    for reasoning, content, code, output in turns:
        think = prefix + reasoning + "\n</think>\n\n" if thinking == "on" else ""
        script.append(think + (content + between if content else "") + style(code))
        message = {"role": "assistant", "content": content,
                   "tool_calls": [{"type": "function", "function": {"name": "python", "arguments": {"code": code}}}]}
        if thinking == "on":
            message["reasoning_content"] = reasoning
        messages += [message, {"role": "tool", "content": output}]
    final = {"role": "assistant", "content": "The answer is \\boxed{10}."}
    script.append((prefix + "Done.\n</think>\n\n" if thinking == "on" else "") + final["content"])
    if thinking == "on":
        final["reasoning_content"] = "Done."
    return script, messages, final


@pytest.mark.parametrize(("name", "thinking", "style"), [
    ("qwen3", "on", json_call), ("qwen3.5", "on", xml_call), ("qwen3.5", "off", xml_call),
])
def test_the_context_is_the_templates_rendering_of_the_conversation(name: str, thinking: str, style) -> None:
    template = TEMPLATES[name]
    p = bound(template, thinking)
    script, messages, final = conversation(template, thinking, style)
    tool = Tool([ToolResult("python", "ok", stdout=""), ToolResult("python", "ok", stdout="10\n")])
    result, session, _ = run(p, script, tool)
    assert tool.calls == ["x = 2 + 3", "print(x * 2)"] and result.status == "finished"

    def render(msgs, end):
        return render_chat(template, msgs, ModelInfo(), tools=[TOOL], add_generation_prompt=end,
                           enable_thinking=thinking == "on")

    # Before each round, the context is the template's rendering of the conversation so far.
    assert session.contexts_seen[1] == render(messages[:3], True)
    assert session.contexts_seen[2] == render(messages, True)
    # prompt + every round + every tool turn: the whole conversation, but for the final <|im_end|>
    # the model writes as its end-of-turn token.
    assert "".join(s.text for s in result.segments) + "<|im_end|>\n" == render(messages + [final], False)


def test_qwen3_without_thinking_keeps_the_empty_think_blocks_of_earlier_turns() -> None:
    # Qwen3's template drops the empty block from earlier turns when it re-renders; the context
    # only grows (documented in docs/protocols.md). Everything else is the template's text.
    p = bound(QWEN3, "off")
    script, messages, final = conversation(QWEN3, "off", json_call)
    result, session, _ = run(p, script, Tool([ToolResult("python", "ok", stdout=""),
                                              ToolResult("python", "ok", stdout="10\n")]))
    rendered = render_chat(QWEN3, messages, ModelInfo(), tools=[TOOL], enable_thinking=False)
    context = session.contexts_seen[2]
    assert context.count(HEADER + EMPTY_THINK) == 3 and rendered.count(HEADER + EMPTY_THINK) == 1
    assert context.replace(HEADER + EMPTY_THINK, HEADER) + EMPTY_THINK == rendered


# -- the real sandbox ---------------------------------------------------------------------------

def solve(script: list[str], template: str = QWEN3, **settings) -> dict:
    engine = ScriptedEngine(script)
    engine.info = EngineInfo(name="scripted", model=ModelInfo(chat_template=template))
    return Solver(engine=engine, protocol="qwen3-tir", model="scripted", **settings).solve(Q)


def test_state_persists_and_outputs_read_as_a_notebook_session() -> None:
    record = solve([
        json_call("x = 2 + 3\nx"),
        json_call("print(x * 2)\nundefined_name"),
        json_call("import time\ntime.sleep(30)"),
        "\\boxed{10}",
    ], tool_timeout=1)
    contents = [bound().display_observation(c["observation"]) for c in record["tool_calls"]]
    assert contents[0] == "5"  # the final bare expression's value
    assert contents[1].startswith("10\nTraceback (most recent call last):\n")
    assert contents[1].endswith("NameError: name 'undefined_name' is not defined")
    assert contents[2] == "Timed out"
    assert record["answer"] == "10" and record["status"] == "finished" and record["protocol"] == "qwen3-tir"


def test_xml_calls_run_in_the_real_sandbox() -> None:
    code = "def f(n):\n    return n * 2\n\nprint(f(21))"
    record = solve(["Use code.\n</think>\n\n" + xml_call(code), "Got it.\n</think>\n\n\\boxed{42}"], QWEN35)
    assert [c["code"] for c in record["tool_calls"]] == [code]
    assert record["tool_calls"][0]["observation"] == REPLY.format("42") + "<think>\n"
    assert record["answer"] == "42"


# -- a real llama.cpp on tiny GGUFs with the real template ---------------------------------------

@pytest.fixture(scope="module")
def qwen3_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Qwen3's GGUFs type <tool_call>, <think> ... as user-defined tokens; llama.cpp makes the
    # end-of-turn ones (<|im_end|>, <|endoftext|>) control tokens whatever the file says.
    return write_tiny_gguf(tmp_path_factory.mktemp("qwen3") / "qwen3-tiny.gguf", special_tokens=SPECIALS,
                           special_type="user_defined", chat_template=QWEN3)


@pytest.fixture(scope="module")
def calling_gguf(qwen3_gguf: Path) -> Path:
    """The same model, its output layer favouring `</tool_call>` above every other token, so
    greedy decoding writes it at once (see mathsolve.testkit.gguf: the "bias" channel)."""
    import gguf

    from mathsolve.engines.llama import LlamaEngine

    engine = LlamaEngine(str(qwen3_gguf), n_ctx=256, extra_buffers="off")
    close_id = engine.tokenize(b"</tool_call>", add_bos=False, special=True)[0]
    engine.close()
    path = shutil.copy(qwen3_gguf, qwen3_gguf.with_name("qwen3-calls.gguf"))
    reader = gguf.GGUFReader(path, "r+")
    output = next(t for t in reader.tensors if t.name == "output.weight")
    output.data[close_id, 0] = 10.0
    reader.data.flush()
    del reader
    return Path(path)


def test_the_gguf_template_binds_and_tool_turns_are_special_tokens(qwen3_gguf: Path) -> None:
    from mathsolve.engines.llama import LlamaEngine

    engine = LlamaEngine(str(qwen3_gguf), n_ctx=2048, extra_buffers="off")
    try:
        assert engine.info.model.chat_template == QWEN3
        p = Qwen3TirProtocol().bind(engine.info.model)
        assert engine.marker_problems(p.markers) == []
        ids = {m: engine.tokenize(m.encode(), add_bos=False, special=True)[0] for m in p.markers}
        prompt = p.prompt(Q)
        session = engine.session(prompt, special=True, render_special=True, literal=Q, markers=p.markers)
        assert sum(prompt.count(m) for m in p.markers) == sum(t in ids.values() for t in session.tokens)
        before = len(session.tokens)
        observation = p.observation(ToolResult("python", "ok", stdout="5\n"))
        session.push(observation)
        tail = session.tokens[before:]
        assert [t for t in tail if t in ids.values()] == [ids[m] for m in (
            "<|im_end|>", "<|im_start|>", "<tool_response>", "</tool_response>", "<|im_end|>", "<|im_start|>")]
        assert engine.detokenize(session.tokens, True).decode() == prompt + observation
        assert session.stats.retokenized == 0
    finally:
        engine.close()


class _CallOpen(Qwen3TirProtocol):
    """A prompt that already holds the call's opening and JSON, so a model that writes
    `</tool_call>` at once makes a real call."""

    def prompt(self, question: str) -> str:
        return super().prompt(question) + "<tool_call>\n" + '{"name": "python", "arguments": {"code": "print(6 * 7)"}}\n'


def test_a_generated_closing_tag_runs_the_call_in_the_real_sandbox(calling_gguf: Path) -> None:
    from mathsolve.engines.llama import LlamaEngine

    engine = LlamaEngine(str(calling_gguf), n_ctx=2048, extra_buffers="off")
    try:
        p = _CallOpen().bind(engine.info.model).configure(thinking="off")
        prompt = p.prompt(Q)
        session = engine.session(prompt, special=True, render_special=True, literal=Q, markers=p.markers)
        result = run_loop(prompt=prompt, protocol=p, session=session, router=ToolRouter(registry.tools()),
                          sampling=Sampling(), limits=Limits(timeout_s=10), max_new_tokens=8, max_rounds=2)
        assert [c.code for c in result.tool_calls] == ["print(6 * 7)"]
        assert result.tool_calls[0].observation == REPLY.format("42") + EMPTY_THINK
        # Round 2: </tool_call> again with no call open: answered, nothing run.
        assert result.segments[-1].role == "tool" and PARSE_ERROR in result.segments[-1].text
        assert result.status == "max_rounds"
        close_id = engine.tokenize(b"</tool_call>", add_bos=False, special=True)[0]
        # the system turn's, then one per round: the model's own tokens were kept
        assert session.tokens.count(close_id) == prompt.count("</tool_call>") + 2
        assert session.stats.retokenized == 0
        assert engine.detokenize(session.tokens, True).decode() == "".join(s.text for s in result.segments)
    finally:
        engine.close()


def test_cli_solves_with_thinking_off(qwen3_gguf: Path) -> None:
    r = run_cli("--model", str(qwen3_gguf), "--protocol", "qwen3-tir", "--thinking", "off",
                "--max-tokens", "8", "--n-ctx", "2048", "--json", Q)
    assert r.code == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["protocol"] == "qwen3-tir"
    assert record["transcript"][0]["text"] == bound(QWEN3, "off").prompt(Q)
    assert record["transcript"][0]["text"].endswith(HEADER + EMPTY_THINK)
    assert record["status"] == "length" and record["tool_calls"] == []


def test_cli_refuses_a_template_without_tools(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "chatml.gguf", special_tokens=SPECIALS, chat_template=CHATML)
    r = run_cli("--model", str(path), "--protocol", "qwen3-tir", "--json", Q)
    assert r.code == EXIT_USAGE and "ignores tools" in r.stderr and "chat-tir" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_refuses_a_conversion_without_the_tool_tokens(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "no-tokens.gguf", special_tokens=("<|im_start|>", "<|im_end|>"),
                           chat_template=QWEN3)
    r = run_cli("--model", str(path), "--protocol", "qwen3-tir", "--json", Q)
    assert r.code == EXIT_BAD_MODEL_FILE and "<tool_call>" in r.stderr and "Traceback" not in r.stderr


def test_catalog_entries() -> None:
    cards = {card.name: card for card in registry.catalog() if card.family == "qwen3"}
    assert set(cards) == {"qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3.5-4b"}
    for card in cards.values():
        assert card.protocol == "qwen3-tir" and card.context == 40960 and card.scores == {}
        assert card.file_for(None).file.startswith(card.checkpoint.split("/")[1] + "-")
    assert cards["qwen3-8b"].repo == "Qwen/Qwen3-8B-GGUF"
    assert cards["qwen3-4b"].files["Q4_K_M"].size == 2_497_280_256
    assert cards["qwen3-0.6b"].default_quant == "Q8_0"


def test_step_decisions() -> None:
    p = bound()
    assert isinstance(p.step("", Generation("text", "eos"), 0), Finish)
    assert isinstance(p.step("", Generation("text", "stop", "<|im_end|>"), 0), Finish)
    assert isinstance(p.step("", Generation("cut", "length"), 0), Finish)
    step = p.step("", Generation(json_call("1").removesuffix("</tool_call>"), "stop", "</tool_call>"), 0)
    assert isinstance(step, Execute) and step.code == "1" and step.keep == json_call("1")
    assert isinstance(p.step("", Generation("{oops", "stop", "</tool_call>"), 0), Continue)
