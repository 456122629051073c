"""The `harmony` protocol (gpt-oss with its python tool): the prompt and the tool replies byte
for byte as the reference writes them, every loop rule with a scripted model and the real
sandbox, and the special tokens through a real llama.cpp on tiny generated GGUFs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mathsolve import registry
from mathsolve.api import Solver
from mathsolve.core.loop import run_loop
from mathsolve.engines.base import Sampling
from mathsolve.engines.scripted import ScriptedEngine
from mathsolve.errors import EXIT_BAD_MODEL_FILE, EXIT_USAGE, UsageError
from mathsolve.formats.base import Execute, Finish, Generation
from mathsolve.formats.harmony import (
    CALL,
    MARKERS,
    NO_OUTPUT,
    RETURN,
    TIMED_OUT,
    HarmonyProtocol,
    current_message,
    recipient,
)
from mathsolve.sandbox import Limits
from mathsolve.testkit import write_tiny_gguf
from mathsolve.tools import ToolResult, ToolRouter
from tests.cli_run import run_cli

Q = "What is 2 + 3?"

# openai/harmony test-data/test_browser_and_python_tool.txt (SystemContent with the date
# 2025-06-28, browser and python tools, rendered for completion), with its `## browser`
# namespace left out: each namespace is rendered on its own (src/encoding.rs
# template_tools_section), and gpt-oss is given only the python tool here. llama.cpp's
# models/templates/openai-gpt-oss-120b.jinja renders the same text for builtin_tools=["python"].
REFERENCE_SYSTEM = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n"
    "Current date: 2025-06-28\n"
    "\n"
    "Reasoning: medium\n"
    "\n"
    "# Tools\n"
    "\n"
    "## python\n"
    "\n"
    "Use this tool to execute Python code in your chain of thought. The code will not be shown to the user. "
    "This tool should be used for internal reasoning, but not for code that is intended to be visible to the "
    "user (e.g. when creating plots, tables, or files).\n"
    "\n"
    "When you send a message containing Python code to python, it will be executed in a stateful Jupyter "
    "notebook environment. python will respond with the output of the execution or time out after 120.0 "
    "seconds. The drive at '/mnt/data' can be used to save and persist user files. Internet access for this "
    "session is UNKNOWN. Depends on the cluster.\n"
    "\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
)
# openai/gpt-oss gpt_oss/evals/aime_eval.py AIME_TEMPLATE, as the user message.
REFERENCE_USER = (
    "<|start|>user<|message|>\nWhat is 2 + 3?\nPlease reason step by step, and put your final answer "
    "within \\boxed{}.\n<|end|>"
)
# openai/harmony docs/format.md: a tool's reply is `<|start|>{toolname} to=assistant<|channel|>...`
# on the channel of the call (gpt-oss docker_tool.py make_response), then the next assistant
# header, as render_conversation_for_completion appends it.
REPLY_HEAD = "<|start|>python to=assistant<|channel|>analysis<|message|>"
REPLY_TAIL = "<|end|><|start|>assistant"

ANALYSIS = "<|channel|>analysis<|message|>Compute 2 + 3 with python.<|end|>"
CALL_CODE = "<|start|>assistant<|channel|>analysis to=python code<|message|>x = 2 + 3\nprint(x)<|call|>"
FINAL = (
    "<|channel|>analysis<|message|>It printed 5.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>The answer is $\\boxed{5}$.<|return|>"
)


# -- the prompt, byte for byte ------------------------------------------------------------

def test_prompt_is_the_reference_rendering() -> None:
    assert HarmonyProtocol().prompt(Q) == REFERENCE_SYSTEM + REFERENCE_USER + "<|start|>assistant"


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_prompt_is_what_the_models_chat_template_renders(effort: str) -> None:
    """tests/fixtures/gpt-oss.chat_template.jinja: gpt-oss's chat template as llama.cpp ships it
    (ggml-org/llama.cpp models/templates/openai-gpt-oss-120b.jinja, byte for byte), rendered as
    llama.cpp and transformers render it, with the python tool and a fixed date."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = (Path(__file__).parent / "fixtures" / "gpt-oss.chat_template.jinja").read_text(encoding="utf-8")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["strftime_now"] = lambda fmt: "2025-06-28"
    user = "\nWhat is 2 + 3?\nPlease reason step by step, and put your final answer within \\boxed{}.\n"
    rendered = env.from_string(template).render(
        messages=[{"role": "user", "content": user}], add_generation_prompt=True,
        builtin_tools=["python"], reasoning_effort=effort,
    )
    assert rendered == HarmonyProtocol().configure(reasoning=effort).prompt(Q)


@pytest.mark.parametrize("effort", ["low", "high"])
def test_reasoning_effort_changes_only_the_reasoning_line(effort: str) -> None:
    prompt = HarmonyProtocol().configure(reasoning=effort).prompt(Q)
    assert prompt == (REFERENCE_SYSTEM + REFERENCE_USER + "<|start|>assistant").replace(
        "Reasoning: medium\n", f"Reasoning: {effort}\n"
    )
    assert HarmonyProtocol().prompt(Q).count("Reasoning: medium\n") == 1  # the shared object is unchanged


def test_reasoning_choices_and_errors() -> None:
    p = registry.protocol("harmony")
    assert p.reasoning_efforts == ("medium", "low", "high") and p.reasoning == "medium"
    assert p.configure() is p
    with pytest.raises(UsageError, match="no reasoning effort 'max' \\(it offers medium, low, high\\)"):
        p.configure(reasoning="max")
    with pytest.raises(UsageError, match="--reasoning is for protocols such as harmony"):
        registry.protocol("qwen-tir").configure(reasoning="high")
    with pytest.raises(UsageError, match="cannot turn thinking off"):
        p.configure(thinking="off")


def test_reference_settings() -> None:
    p = HarmonyProtocol()
    assert p.stops == ("<|call|>", "<|return|>")  # harmony's stop_tokens_for_assistant_actions
    assert p.sampling == {"temperature": 1.0, "top_p": 1.0} and p.sampled
    assert (p.tool, p.stateful_tool, p.grader, p.special_prompt, p.render_special) == (
        "python", True, "math-verify", True, True)
    assert set(MARKERS) == {"<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", CALL, RETURN}


# -- reading what the model wrote -----------------------------------------------------------

@pytest.mark.parametrize("header", [
    "assistant<|channel|>analysis to=python code",  # openai/harmony docs/format.md spelling
    "assistant to=python<|channel|>analysis code",  # how harmony itself renders a recipient
    "assistant<|channel|>commentary to=python",
])
def test_a_python_call_runs_whatever_the_header_order(header: str) -> None:
    p = HarmonyProtocol()
    before = p.prompt(Q) + ANALYSIS + "<|start|>" + header + "<|message|>"
    step = p.step(before, Generation("print(6 * 7)", "stop", CALL), 0)
    assert step == Execute(keep="print(6 * 7)" + CALL, code="print(6 * 7)")


def test_calls_to_other_recipients_and_plain_ends_finish() -> None:
    p = HarmonyProtocol()
    browser = p.prompt(Q) + "<|channel|>analysis to=browser.search <|constrain|>json<|message|>"
    assert isinstance(p.step(browser, Generation('{"query": "x"}', "stop", CALL), 0), Finish)
    no_recipient = p.prompt(Q) + "<|channel|>analysis<|message|>"
    assert isinstance(p.step(no_recipient, Generation("print(1)", "stop", CALL), 0), Finish)
    assert p.step("", Generation("x", "stop", RETURN), 0) == Finish(keep="x" + RETURN)
    assert p.step("", Generation("cut", "length"), 0) == Finish(keep="cut")
    assert recipient("assistant<|channel|>commentary to=functions.python <|constrain|>json") == "functions.python"
    assert current_message("a<|start|>assistant<|channel|>final<|message|>5") == ("assistant<|channel|>final", "5")


def test_analysis_is_thinking_and_final_is_the_answer() -> None:
    p = HarmonyProtocol()
    before = p.prompt(Q)
    text = ANALYSIS + "<|start|>assistant<|channel|>final<|message|>The answer is 5.<|return|>"
    parts = p.split_thinking(before, text)
    assert parts == [("thinking", ANALYSIS + "<|start|>assistant<|channel|>final<|message|>"),
                     ("model", "The answer is 5.<|return|>")]
    # streamed token by token (special tokens whole, other text cut anywhere): the same roles,
    # character for character, as the whole text split at once
    longer = ANALYSIS + "<|start|>assistant<|channel|>commentary<|message|>Plan: compute.<|end|>" + text[len(ANALYSIS):]
    whole = [role for role, part in p.split_thinking(before, longer) for _ in part]
    assert whole.count("model") == len("Plan: compute.<|end|>") + len("The answer is 5.<|return|>")
    tokens = [t for t in re.split(r"(<\|[a-z]+\|>)", longer) if t]
    for size in (1, 2, 3, 5, 7):
        pieces = [t[i:i + size] if not t.startswith("<|") else t
                  for t in tokens for i in (range(0, len(t), size) if not t.startswith("<|") else [0])]
        assert "".join(pieces) == longer
        streamed = [role for i, piece in enumerate(pieces)
                    for role, part in p.split_thinking(before + "".join(pieces[:i]), piece) for _ in part]
        assert streamed == whole, size
    assert p.answer_text(text) == "The answer is 5."
    assert p.answer_text(ANALYSIS + "<|start|>assistant<|channel|>final<|message|>cut short") == "cut short"
    assert p.answer_text(ANALYSIS + "\\boxed{7}") == ""  # no final channel: nothing to read (reference)


def test_the_terminal_shows_prose_and_code_not_markup() -> None:
    p = HarmonyProtocol()
    pieces = ["<|channel|>", "analysis", "<|message|>", "Hi", "<|end|>", "<|start|>", "assistant", "<|channel|>",
              "analysis to=python code", "<|message|>", "print(1)"]  # as streamed: one token at a time
    shown = "".join(p.display_text(piece) for piece in pieces)
    assert shown == " [analysis]\nHi\n\nassistant [analysis to=python code]\nprint(1)"
    # a whole header (the terminal's reasoning stream holds headers until <|message|>): a call
    # opens a ```python block, which the renderer shows as a code panel
    assert p.display_text("".join(pieces)) == " [analysis]\nHi\n\n\n```python\nprint(1)"
    assert p.display_text("<|start|>assistant<|channel|>final<|message|>5") == "assistant [final]\n5"
    assert p.display_observation(REPLY_HEAD + "5\n" + REPLY_TAIL) == "5"


# -- tool replies -----------------------------------------------------------------------------

def test_tool_replies_follow_gpt_oss_stateful_python_tool() -> None:
    p = HarmonyProtocol()
    assert p.observation(ToolResult("python", "ok", stdout="5\n")) == REPLY_HEAD + "5\n" + REPLY_TAIL
    # gpt_oss/tools/python_docker/docker_tool.py: the texts for no output and for a timeout
    assert NO_OUTPUT == "[WARN] No output available. Use print() to output anything to stdout to receive the output"
    assert TIMED_OUT == "[ERROR] Timed out waiting for Jupyter kernel output."
    assert p.result_text(ToolResult("python", "ok", stdout="\n")) == NO_OUTPUT
    assert p.result_text(ToolResult("python", "timeout", stdout="partial")) == TIMED_OUT
    assert p.result_text(ToolResult("python", "ok", stdout="a\n", display="10")) == "a\n10\n"
    err = ToolResult("python", "error", stdout="before\n\n", error="ZeroDivisionError: division by zero",
                     traceback="Traceback (most recent call last):\nZeroDivisionError: division by zero\n")
    assert p.result_text(err) == "before\nTraceback (most recent call last):\nZeroDivisionError: division by zero\n"
    assert p.result_text(ToolResult("python", "memory")).startswith("[ERROR] The execution ran out of memory")
    long = p.result_text(ToolResult("python", "ok", stdout="x" * 30_000))
    assert len(long) == 20_003 and long[10_000:10_003] == "..."


# -- the loop, scripted model ------------------------------------------------------------------

class RecordingSession:
    def __init__(self, tool: RecordingTool) -> None:
        self.tool, self.closed = tool, False

    def run(self, code: str) -> ToolResult:
        self.tool.calls.append(code)
        return ToolResult("python", "ok", stdout="5\n")

    def close(self) -> None:
        self.closed = True


class RecordingTool:
    name, description = "python", "records the blocks; every block prints 5"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.sessions: list[RecordingSession] = []

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        raise AssertionError("harmony runs every block in the problem's session")

    def open_session(self, limits: Limits) -> RecordingSession:
        self.sessions.append(RecordingSession(self))
        return self.sessions[-1]


def _loop(script: list[str], **kw):
    p, tool = HarmonyProtocol(), RecordingTool()
    prompt = p.prompt(Q)
    session = ScriptedEngine(script).session(prompt)
    result = run_loop(prompt=prompt, protocol=p, session=session, router=ToolRouter({"python": tool}),
                      sampling=Sampling(), limits=Limits(), **kw)
    return result, session, tool


def test_a_python_call_then_a_final_answer() -> None:
    result, session, tool = _loop([ANALYSIS + CALL_CODE, FINAL + "never read", "never generated"])
    assert result.status == "finished" and result.rounds == 2
    assert tool.calls == ["x = 2 + 3\nprint(x)"] and len(tool.sessions) == 1 and tool.sessions[0].closed
    # the analysis and the call stay in the context, the reply follows the call at once
    assert session.contexts_seen == [
        HarmonyProtocol().prompt(Q),
        HarmonyProtocol().prompt(Q) + ANALYSIS + CALL_CODE + REPLY_HEAD + "5\n" + REPLY_TAIL,
    ]
    assert result.solution == ANALYSIS + CALL_CODE + REPLY_HEAD + "5\n" + REPLY_TAIL + FINAL
    roles = [(s.role, s.round) for s in result.segments[1:]]
    assert roles == [("thinking", 0), ("tool", 0), ("thinking", 1), ("model", 1)]
    assert HarmonyProtocol().answer_text(result.solution) == "The answer is $\\boxed{5}$."


def test_return_ends_the_solution_without_running_anything() -> None:
    result, session, tool = _loop([FINAL, ANALYSIS + CALL_CODE])
    assert result.rounds == 1 and tool.calls == [] and result.solution == FINAL
    assert len(session.contexts_seen) == 1


def test_the_round_limit_bounds_the_calls() -> None:
    result, _, tool = _loop([ANALYSIS + CALL_CODE] * 5, max_rounds=3)
    assert result.status == "max_rounds" and len(tool.calls) == 3 and len(tool.sessions) == 1


# -- the loop with the real sandbox -------------------------------------------------------------

def _call(code: str) -> str:
    return "<|channel|>analysis to=python code<|message|>" + code + CALL


def test_state_persists_across_calls_and_empty_output_gets_the_hint() -> None:
    solver = Solver(engine=ScriptedEngine([
        _call("x = 2 + 3"),
        _call("x * 2"),
        _call("print(x + 1)\n1 / 0"),
        FINAL,
    ]), protocol="harmony", model="scripted")
    try:
        record = solver.solve(Q)
    finally:
        solver.close()
    replies = [c["observation"] for c in record["tool_calls"]]
    assert replies[0] == REPLY_HEAD + NO_OUTPUT + REPLY_TAIL
    assert replies[1] == REPLY_HEAD + "10\n" + REPLY_TAIL  # the cell's value, as a notebook shows it
    assert replies[2].startswith(REPLY_HEAD + "6\nTraceback (most recent call last):")
    assert replies[2].endswith("ZeroDivisionError: division by zero\n" + REPLY_TAIL)
    assert record["answer"] == "5" and record["status"] == "finished" and record["protocol"] == "harmony"


# -- a real llama.cpp on tiny models -------------------------------------------------------------

@pytest.fixture(scope="module")
def harmony_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("harmony") / "harmony-tiny.gguf", special_tokens=MARKERS)


@pytest.fixture(scope="module")
def calling_gguf(harmony_gguf: Path) -> Path:
    """The same model, but its output layer favours `<|call|>` above every other token, so
    greedy decoding writes it at once: the way to see llama.cpp end a round on it."""
    import gguf

    from mathsolve.engines.llama import LlamaEngine

    engine = LlamaEngine(str(harmony_gguf), n_ctx=256, extra_buffers="off")
    call_id = engine.tokenize(CALL.encode(), add_bos=False, special=True)[0]
    engine.close()
    path = shutil.copy(harmony_gguf, harmony_gguf.with_name("harmony-calls.gguf"))
    reader = gguf.GGUFReader(path, "r+")
    output = next(t for t in reader.tensors if t.name == "output.weight")
    output.data[call_id, 0] = 10.0  # the constant "bias" channel (see mathsolve.testkit.gguf)
    reader.data.flush()
    del reader
    return Path(path)


def test_harmony_tokens_are_single_tokens_and_call_return_end_generation(harmony_gguf: Path) -> None:
    from mathsolve.engines.llama import LlamaEngine

    engine = LlamaEngine(str(harmony_gguf), n_ctx=1024, extra_buffers="off")
    try:
        assert engine.marker_problems(MARKERS) == []
        ids = {m: engine.tokenize(m.encode(), add_bos=False, special=True)[0] for m in MARKERS}
        # llama.cpp (llama-vocab.cpp) marks <|call|> and <|return|> end-of-generation and takes
        # <|end|> off that list when both are present: a message's end does not stop sampling.
        assert [m for m in MARKERS if engine.is_eog(ids[m])] == [RETURN, CALL]
        p = HarmonyProtocol()
        prompt = p.prompt(Q)
        session = engine.session(prompt, special=True, render_special=True, literal=Q, markers=MARKERS)
        assert sum(t in ids.values() for t in session.tokens) == prompt.count("<|")
        before = len(session.tokens)
        session.push(REPLY_HEAD + "5\n" + REPLY_TAIL)
        tail = session.tokens[before:]
        assert [t for t in tail if t in ids.values()] == [ids["<|start|>"], ids["<|channel|>"], ids["<|message|>"],
                                                         ids["<|end|>"], ids["<|start|>"]]
        assert engine.detokenize(tail, True).decode() == REPLY_HEAD + "5\n" + REPLY_TAIL
    finally:
        engine.close()


class _CallWritten(HarmonyProtocol):
    """A prompt that already holds the call's header and code, so a model that writes
    `<|call|>` at once makes a real tool call."""

    def prompt(self, question: str) -> str:
        return super().prompt(question) + "<|channel|>analysis to=python code<|message|>print(6 * 7)"


def test_an_end_of_generation_call_runs_the_code_in_the_real_sandbox(calling_gguf: Path) -> None:
    from mathsolve.engines.llama import LlamaEngine
    from mathsolve.tools.router import ToolRouter as Router

    engine = LlamaEngine(str(calling_gguf), n_ctx=1024, extra_buffers="off")
    try:
        p = _CallWritten()
        prompt = p.prompt(Q)
        session = engine.session(prompt, special=True, render_special=True, literal=Q, markers=MARKERS)
        first = session.generate(stops=p.stops, max_tokens=8, sampling=Sampling())
        assert (first.text, first.finish_reason, first.stop) == ("", "stop", CALL)
        session.close()

        session = engine.session(prompt, special=True, render_special=True, literal=Q, markers=MARKERS)
        result = run_loop(prompt=prompt, protocol=p, session=session, router=Router(registry.tools()),
                          sampling=Sampling(), limits=Limits(timeout_s=10), max_new_tokens=8)
        assert [c.code for c in result.tool_calls] == ["print(6 * 7)"]
        assert result.tool_calls[0].observation == REPLY_HEAD + "42\n" + REPLY_TAIL
        # the model's own <|call|> token was kept, then the reply, as special tokens
        call_id = engine.tokenize(CALL.encode(), add_bos=False, special=True)[0]
        assert session.tokens.count(call_id) == 1 and session.stats.retokenized == 0
        # round 2: <|call|> again, now on a header with no recipient: the turn is over
        assert result.rounds == 2 and result.status == "finished"
    finally:
        engine.close()


def test_cli_solves_with_harmony_at_low_effort(harmony_gguf: Path) -> None:
    r = run_cli("--model", str(harmony_gguf), "--protocol", "harmony", "--reasoning", "low",
                "--max-tokens", "6", "--n-ctx", "2048", "--json", Q)
    assert r.code == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["protocol"] == "harmony"
    assert record["transcript"][0]["text"] == HarmonyProtocol().configure(reasoning="low").prompt(Q)
    assert "Reasoning: low\n" in record["transcript"][0]["text"]
    assert record["status"] == "length" and record["answer"] == ""  # no final channel was written
    assert (record["sampling"]["temperature"], record["sampling"]["top_p"]) == (1.0, 1.0)  # never greedy


def test_cli_refuses_reasoning_for_a_protocol_without_efforts(harmony_gguf: Path) -> None:
    r = run_cli("--model", str(harmony_gguf), "--protocol", "qwen-tir", "--reasoning", "high", "--json", Q)
    assert r.code == EXIT_USAGE
    assert "qwen-tir protocol has no reasoning effort 'high'" in r.stderr and "Traceback" not in r.stderr


def test_a_model_without_the_harmony_tokens_is_refused(tiny_bpe: Path) -> None:
    r = run_cli("--model", str(tiny_bpe), "--protocol", "harmony", "--json", Q)
    assert r.code == EXIT_BAD_MODEL_FILE
    assert "<|start|>" in r.stderr and "single special tokens" in r.stderr and "Traceback" not in r.stderr
