"""Reasoning models in the terminal: their thinking told apart as it streams, collapsed or
shown, code and outputs written while thinking still shown, the answer last; and what a
reader is told when a trace does not fit its token limits.

The protocol here is a small one shaped like today's reasoning models: reasoning between
<think> tags, tool calls written inside it as <tool_call>...</tool_call> (the stop string),
output fed back as an ```output block. Solves run the real loop, the real renderers and
the real sandboxed python tool behind a scripted "model"; the limits run on real llama.cpp.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from mathsolve.api import Solver
from mathsolve.cli.render import PlainRenderer, RichRenderer, make_renderer, status_note
from mathsolve.cli.views.thinking import ThinkingStream, count_words
from mathsolve.engines.scripted import ScriptedEngine
from mathsolve.formats.base import Execute, Finish, Protocol
from mathsolve.hookspecs import hookimpl
from mathsolve.plugins import get_plugin_manager
from tests.cli_run import run_cli

QUESTION = "What is 2 + 3?"
REASONING = "Let me think about two plus three, carefully."
MORE_REASONING = "The tool says five, which agrees."
ANSWER_PROSE = "The answer is \\boxed{5}."
# Round 1 thinks, calls the tool while thinking; round 2 thinks on, then answers.
ROUNDS = [
    f"<think>\n{REASONING}\n<tool_call>\nprint(2 + 3)\n</tool_call>",
    f"{MORE_REASONING}\n</think>\n\n{ANSWER_PROSE}",
]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SECONDS = re.compile(r"\d+\.\d s")


class ThinkTir(Protocol):
    name = "think-tir"
    description = "test: reasoning in <think>, tool calls inside it"
    think_tags = ("<think>", "</think>")
    stops = ("</tool_call>",)
    max_rounds = 4
    max_new_tokens = 400  # the scripted engine counts a character as a token
    tool = "python"
    answer_style = "boxed"
    grader = "math-verify"
    opens_thinking = False  # a template that writes the opening tag itself

    def prompt(self, question: str) -> str:
        return "<|user|>\n" + question + "\n<|assistant|>\n" + ("<think>\n" if self.opens_thinking else "")

    def step(self, text_so_far, generation, round_index):
        if generation.stop == "</tool_call>":
            keep = generation.text + generation.stop
            code = generation.text.rsplit("<tool_call>\n", 1)[-1]
            return Execute(keep=keep, code=code)
        return Finish(keep=generation.text)

    def observation(self, result, *, index: int = 0) -> str:
        return "\n```output\n" + result.stdout + "```\n"

    def display_text(self, text: str) -> str:
        # The tool call shown as the fence the renderer makes a panel of; its closing tag is
        # the stop string, never streamed: the round's end closes the block.
        return text.replace("<tool_call>", "```python")


class ThinkOpen(ThinkTir):
    name = "think-open"
    opens_thinking = True


class Channels(Protocol):
    """A protocol that overrides split_thinking: messages headed `<|channel|>NAME<|message|>`,
    the `analysis` channel being reasoning (the header goes with its message)."""

    name = "channels"
    HEADER = re.compile(r"<\|channel\|>(\w+)<\|message\|>")

    def split_thinking(self, before, text):
        found = self.HEADER.findall(before)
        role = "thinking" if found and found[-1] == "analysis" else "model"
        parts, at = [], 0
        for match in self.HEADER.finditer(text):
            if match.start() > at:
                parts.append((role, text[at : match.start()]))
            role, at = ("thinking" if match.group(1) == "analysis" else "model"), match.start()
        if at < len(text):
            parts.append((role, text[at:]))
        return parts

    def display_text(self, text: str) -> str:
        return self.HEADER.sub("", text)


def merged(pieces):
    """(role, text) pairs with neighbours of one role joined and empty ones dropped."""
    out: list[list[str]] = []
    for role, text in pieces:
        if not text:
            continue
        if out and out[-1][0] == role:
            out[-1][1] += text
        else:
            out.append([role, text])
    return [tuple(pair) for pair in out]


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:])]


def solve(protocol: Protocol, renderer, rounds=ROUNDS, *, chunk: int | None = None, **overrides) -> dict:
    """A real solve (loop, sandboxed python tool) of the scripted rounds, streamed to
    `renderer`; `chunk`: stream each round in pieces of that many characters."""
    solver = Solver(engine=ScriptedEngine(rounds), protocol="tora", model="scripted", **overrides)
    solver.protocol = protocol
    events = renderer if chunk is None else _Rechunk(renderer, chunk)
    record = solver.solve(QUESTION, events=events)
    renderer.on_finish(record)
    return record


class _Rechunk:
    """Passes the loop's events on, each text cut into `size`-character pieces (as a real
    engine streams tokens: tags arrive cut anywhere)."""

    def __init__(self, inner, size: int) -> None:
        self.inner, self.size = inner, size

    def on_text(self, text: str) -> None:
        for i in range(0, len(text), self.size):
            self.inner.on_text(text[i : i + self.size])

    def __getattr__(self, name):
        return getattr(self.inner, name)


def rich_console(*, terminal: bool = True, colour: bool = True, width: int = 100) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=width, height=40,
                   color_system="standard" if colour else None)


def screen(console: Console) -> str:
    """What the console received, without colour codes or timings."""
    return SECONDS.sub("T s", ANSI.sub("", console.file.getvalue()))


def without_stats(text: str) -> str:
    """The screen less its last line (tokens per second, durations)."""
    return text.rstrip("\n").rsplit("\n", 1)[0]


# ---------------------------------------------------------------------------- the stream


TEXT = st.lists(st.sampled_from(["<think>", "</think>", "<thi", "nk>", "</", "<", ">", "a", " b", "\n",
                                 "<tool_call>", "x < 3", "<|channel|>", "analysis", "final", "<|message|>"]),
                max_size=30).map("".join)


@given(text=TEXT, cuts=st.lists(st.integers(0, 400), max_size=12), opened=st.booleans())
def test_the_stream_splits_any_chunking_as_split_thinking_splits_the_whole(text: str, cuts: list[int],
                                                                           opened: bool) -> None:
    protocol = ThinkOpen() if opened else ThinkTir()
    before = protocol.prompt(QUESTION)
    stream = ThinkingStream(protocol, before)
    pieces = [p for chunk in chunked(text, cuts) for p in stream.feed(chunk)] + stream.flush()
    assert merged(pieces) == merged(protocol.split_thinking(before, text))
    assert "".join(piece for _, piece in pieces) == text


@given(text=TEXT, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_an_overriding_protocol_gets_everything_before_as_the_loop_gives_it(text: str, cuts: list[int]) -> None:
    protocol = Channels()
    stream = ThinkingStream(protocol, "")
    pieces = [p for chunk in chunked(text, cuts) for p in stream.feed(chunk)] + stream.flush()
    assert merged(pieces) == merged(protocol.split_thinking("", text))


@given(segments=st.lists(st.tuples(st.booleans(), TEXT), max_size=6))
def test_observations_move_the_state_as_in_the_loops_context(segments: list[tuple[bool, str]]) -> None:
    # The loop splits each round with everything before it, tool output included.
    protocol = ThinkTir()
    stream, context = ThinkingStream(protocol, ""), ""
    for is_observation, text in segments:
        if is_observation:
            stream.observe(text)
        else:
            got = stream.feed(text) + stream.flush()
            assert merged(got) == merged(protocol.split_thinking(context, text))
        context += text


def test_a_tag_cut_in_two_is_held_back_until_it_is_whole() -> None:
    stream = ThinkingStream(ThinkTir(), "")
    assert stream.feed("Hi <thi") == [("model", "Hi ")]
    assert stream.feed("nk>Hmm </th") == [("thinking", "<think>Hmm ")]
    assert stream.feed("ink>ok") == [("thinking", "</think>"), ("model", "ok")]
    # Text that only looks like the start of a tag goes on once it cannot be one.
    assert stream.feed("x <") == [("model", "x ")] and stream.feed(" 3") == [("model", "< 3")]


def test_a_harmony_style_header_reaches_the_protocol_whole() -> None:
    stream = ThinkingStream(Channels(), "")
    got = [stream.feed(token) for token in ["<|channel|>", "analysis", "<|message|>", "Hmm.", "<|channel|>", "final",
                                            "<|message|>", "5"]]
    assert got == [[], [], [("thinking", "<|channel|>analysis<|message|>")], [("thinking", "Hmm.")], [], [],
                   [("model", "<|channel|>final<|message|>")], [("model", "5")]]


@given(text=st.text(alphabet="ab \n\t", max_size=40), cuts=st.lists(st.integers(0, 60), max_size=8))
def test_words_counted_piece_by_piece_are_the_words_of_the_whole(text: str, cuts: list[int]) -> None:
    total, in_word = 0, False
    for chunk in chunked(text, cuts):
        n, in_word = count_words(chunk, in_word)
        total += n
    assert total == len(text.split())


# ------------------------------------------------------------------------ rich terminal


def test_thinking_is_collapsed_by_default_with_code_and_output_panels_and_the_answer_last() -> None:
    console = rich_console()
    record = solve(ThinkTir(), RichRenderer(console))
    out = screen(console)
    assert REASONING not in out and MORE_REASONING not in out and "<think>" not in out and "</think>" not in out
    first = out.index("thought for T s · 8 words · --show-thinking shows it")
    code, output = out.index("╭─ python"), out.index("output · python · ok")
    second = out.index("thought for T s · 6 words (14 words in all)")
    prose, answer = out.index(ANSWER_PROSE), out.index("╭─ answer")
    assert first < code < output < second < prose < answer
    assert "print(2 + 3)" in out[code:output] and "│ 5" in out[output:second]
    assert "thinking…" in out  # the live line was drawn (and erased: rich's transient display)
    # The record keeps everything; the terminal only chose what to show.
    roles = [seg["role"] for seg in record["transcript"]]
    assert roles == ["prompt", "thinking", "tool", "thinking", "model"] and record["answer"] == "5"


def test_show_thinking_streams_it_dimmed_and_keeps_the_panels() -> None:
    console = rich_console()
    solve(ThinkTir(), RichRenderer(console, show_thinking=True))
    raw, out = console.file.getvalue(), screen(console)
    assert f"\x1b[2m{REASONING}\n\x1b[0m" in raw and f"\x1b[2m{MORE_REASONING}\n\x1b[0m" in raw
    assert ANSWER_PROSE + "\n" in raw and f"\x1b[2m{ANSWER_PROSE}" not in raw  # the answer is not dimmed
    order = [out.index(REASONING), out.index("╭─ python"), out.index("output · python"), out.index(MORE_REASONING),
             out.index(ANSWER_PROSE), out.index("╭─ answer")]
    assert order == sorted(order)
    assert "<think>" not in out and "thinking…" not in out and "--show-thinking shows it" not in out


@pytest.mark.parametrize("show", [False, True])
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_text_cut_anywhere_looks_the_same_as_whole_rounds(show: bool, size: int) -> None:
    # Without a terminal no live line is drawn, so the whole output can be compared.
    whole, cut = rich_console(terminal=False), rich_console(terminal=False)
    solve(ThinkTir(), RichRenderer(whole, show_thinking=show))
    solve(ThinkTir(), RichRenderer(cut, show_thinking=show), chunk=size)
    drop_durations = re.compile(r"\d+\.\d\d s")
    assert drop_durations.sub("", without_stats(screen(cut))) == drop_durations.sub("", without_stats(screen(whole)))
    assert ("<thi" in screen(cut)) is False and "```" not in screen(cut)


def test_the_live_line_counts_words_as_they_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RichRenderer, "LIVE_INTERVAL_S", 0.0)  # redraw on every piece
    console = rich_console()
    renderer = RichRenderer(console)
    renderer.on_start(ThinkTir())
    for word in ["<think>", "one ", "two ", "three ", "four"]:
        renderer.on_text(word)
    renderer.on_text("</think>Done.")
    renderer.on_round_end(0)
    out = screen(console)
    counts = [int(n) for n in re.findall(r"thinking… (\d+) words?", out)]
    assert counts[-1] == 4 and counts == sorted(counts) and len(set(counts)) >= 3
    assert out.index("thought for T s · 4 words") < out.index("Done.")


def test_a_prompt_that_opens_the_reasoning_starts_the_model_inside_it() -> None:
    rounds = [f"{REASONING}\n</think>\n{ANSWER_PROSE}"]
    with_question = rich_console()
    solve(ThinkOpen(), RichRenderer(with_question, question=QUESTION), rounds)
    assert REASONING not in screen(with_question) and "thought for T s · 8 words" in screen(with_question)
    # Without the question the renderer cannot know, and shows the text as the model's.
    console = rich_console()
    solve(ThinkOpen(), RichRenderer(console), rounds)
    assert REASONING in screen(console)


def test_protocols_without_reasoning_are_shown_as_before() -> None:
    console = rich_console(colour=False)
    renderer = RichRenderer(console)
    renderer.on_start(Protocol())
    renderer.on_text("<think>not tags here</think>\n")
    renderer.on_round_end(0)
    assert console.file.getvalue() == "<think>not tags here</think>\n"


def test_a_failed_solve_leaves_no_live_display_running() -> None:
    console = rich_console()
    renderer = RichRenderer(console)
    renderer.on_start(ThinkTir())
    renderer.on_text("<think>Hmm, let me")
    hide, show = "\x1b[?25l", "\x1b[?25h"  # the cursor, hidden while a live display runs
    raw = console.file.getvalue()
    assert "thinking… 3 words" in raw and raw.rfind(hide) > raw.rfind(show)
    renderer.close()
    raw = console.file.getvalue()
    assert raw.rfind(show) > raw.rfind(hide)


# The built-in reasoning protocols' own markup: gpt-oss's harmony channels (an override of
# split_thinking) and OpenMath-Nemotron's <think> with <tool_call> (think_tags).
BUILTIN_TRACES = {
    "harmony": [
        "<|channel|>analysis<|message|>We need two plus three; compute.<|end|><|start|>assistant"
        "<|channel|>analysis to=python code<|message|>print(2 + 3)<|call|>",
        "<|channel|>analysis<|message|>It is five.<|end|><|start|>assistant<|channel|>final<|message|>"
        "The answer is \\boxed{5}.<|return|>",
    ],
    "openmath-tir": [
        "<think>\nWe need two plus three; compute.\n<tool_call>\nprint(2 + 3)\n</tool_call>",
        "It is five.\n</think>\nThe answer is \\boxed{5}.<|im_end|>",
    ],
}


@pytest.mark.parametrize("name", sorted(BUILTIN_TRACES))
@pytest.mark.parametrize("show", [False, True])
def test_the_built_in_reasoning_protocols_stream_token_by_token_as_whole_rounds(name: str, show: bool) -> None:
    from mathsolve import registry

    if name not in registry.protocols():
        pytest.skip(f"this build has no {name} protocol")

    def run(chunk: int | None) -> str:
        console = rich_console(terminal=False, colour=False)
        solver = Solver(engine=ScriptedEngine(BUILTIN_TRACES[name]), protocol=name, model="scripted")
        renderer = RichRenderer(console, show_thinking=show, question=QUESTION)
        events = renderer if chunk is None else _Rechunk(renderer, chunk)
        record = solver.solve(QUESTION, events=events)
        renderer.on_finish(record)
        assert record["answer"] == "5" and "thinking" in [seg["role"] for seg in record["transcript"]]
        return re.sub(r"\d+\.\d\d s", "", without_stats(screen(console)))

    whole = run(None)
    assert run(1) == run(2) == whole
    assert ("We need two plus three" in whole) is show and "print(2 + 3)" in whole and "<|" not in whole
    assert whole.index("print(2 + 3)") < whole.index("The answer is \\boxed{5}.") < whole.index("╭─ answer")


# --------------------------------------------------------------------------- plain text


def test_plain_output_replaces_each_stretch_of_reasoning_with_one_line() -> None:
    out = io.StringIO()
    solve(ThinkTir(), PlainRenderer(out))
    assert out.getvalue() == (
        "[thinking not shown: 18 words, 1 tool call; --show-thinking shows it]\n"
        f"{ANSWER_PROSE}\nAnswer: 5\n"
    )


def test_plain_output_with_show_thinking_is_the_text_the_model_saw() -> None:
    out = io.StringIO()
    record = solve(ThinkTir(), PlainRenderer(out, show_thinking=True), chunk=3)
    generated = ROUNDS[0].removesuffix("</tool_call>")  # the stop string is not streamed
    observation = record["tool_calls"][0]["observation"]
    assert out.getvalue() == generated + observation + ROUNDS[1] + "\nAnswer: 5\n"


# ---------------------------------------------------------------------------- token limits


def _record(status: str, *, n_ctx: int | None, prompt: int, generated: int, injected: int = 0, rounds: int = 1):
    engine = {"name": "llama.cpp"} | ({"n_ctx": n_ctx} if n_ctx is not None else {})
    return {"status": status, "rounds": rounds, "engine": engine,
            "tokens": {"prompt": prompt, "generated": generated, "injected": injected}}


def test_the_length_note_names_the_limit_that_was_hit_and_its_value() -> None:
    full = status_note(_record("length", n_ctx=32768, prompt=300, generated=31000, injected=1468), max_tokens=32768)
    assert full == ("the solution was cut off when the context filled up, --n-ctx 32,768 tokens (prompt 300 + "
                    "generated 31,000 + tool output 1,468) (status length): raise --n-ctx; the answer may be incomplete")
    round_limit = status_note(_record("length", n_ctx=32768, prompt=300, generated=2048), max_tokens=2048,
                              in_thinking=True)
    assert round_limit == ("the reasoning was cut off before the answer at the round's token limit, --max-tokens "
                           "2,048 new tokens per round (status length): raise --max-tokens; the answer may be incomplete")
    unknown = status_note(_record("length", n_ctx=None, prompt=3, generated=9), max_tokens=9)
    assert "--max-tokens 9 new tokens per round) or the context's (--n-ctx)" in unknown
    rounds = status_note(_record("max_rounds", n_ctx=4096, prompt=1, generated=1, rounds=8), max_tokens=1)
    assert rounds.startswith("the solution stopped at the tool-round limit, --max-rounds 8 (status max_rounds)")
    assert status_note(_record("finished", n_ctx=1, prompt=5, generated=5), max_tokens=1) is None


def test_a_trace_cut_off_while_thinking_says_so_in_the_terminal() -> None:
    console = rich_console(colour=False, width=300)
    record = solve(ThinkTir(), RichRenderer(console, max_tokens=20), [f"<think>\n{REASONING} And on and on."],
                   max_tokens=20)
    out = screen(console)
    assert record["status"] == "length" and not record["answer"]
    # The reasoning is summed up, then the answer panel, then what cut it off.
    assert out.index("thought for") < out.index("(no answer found)") < out.index(
        "note: the reasoning was cut off before the answer at the round's token limit (--max-tokens 20 new tokens "
        "per round) or the context's (--n-ctx)")  # the scripted engine has no context size


class _Plugin:
    """A test plugin: the reasoning protocols, and a scripted engine for CLI runs."""

    def __init__(self, rounds: list[str] | None = None) -> None:
        self.rounds = rounds

    @hookimpl
    def register_protocols(self, register):
        register(ThinkTir())
        register(ThinkOpen())

    @hookimpl
    def register_engines(self, register):
        if self.rounds is not None:
            register("scripted-thinking", lambda request: ScriptedEngine(self.rounds))


def notes(result) -> list[str]:
    return [line for line in result.error_lines if line.startswith("note:")]


def test_the_cli_prints_plain_reasoning_collapsed_or_in_full_and_records_it(tiny_bpe: Path) -> None:
    get_plugin_manager().pm.register(_Plugin(ROUNDS), name="thinking-test")
    base = ("--engine", "scripted-thinking", "--model", str(tiny_bpe), "--protocol", "think-tir")
    collapsed = run_cli(*base, QUESTION)
    assert collapsed.code == 0, collapsed.stderr
    assert collapsed.stdout == ("[thinking not shown: 18 words, 1 tool call; --show-thinking shows it]\n"
                                f"{ANSWER_PROSE}\nAnswer: 5\n")
    shown = run_cli(*base, "--show-thinking", QUESTION)
    assert shown.code == 0 and REASONING in shown.stdout and MORE_REASONING in shown.stdout
    assert "```output\n5\n```" in shown.stdout and shown.stdout.endswith("Answer: 5\n")
    recorded = run_cli(*base, "--json", "--show-thinking", QUESTION)
    record = json.loads(recorded.stdout)
    assert [seg["role"] for seg in record["transcript"]] == ["prompt", "thinking", "tool", "thinking", "model"]
    assert record["transcript"][1]["text"].startswith("<think>\n" + REASONING)


def test_a_trace_that_outgrows_the_round_names_max_tokens(tiny_bpe: Path) -> None:
    # Real llama.cpp: the tiny model writes on until the round's limit, inside <think>.
    get_plugin_manager().pm.register(_Plugin(), name="thinking-test")
    r = run_cli("--model", str(tiny_bpe), "--protocol", "think-open", "--max-tokens", "8", QUESTION)
    assert r.code == 0, r.stderr
    assert re.fullmatch(r"\[thinking not shown: \d+ words?; --show-thinking shows it\]\nAnswer: \n", r.stdout)
    assert notes(r) == ["note: the reasoning was cut off before the answer at the round's token limit, "
                             "--max-tokens 8 new tokens per round (status length): raise --max-tokens; the answer "
                             "may be incomplete"]


def test_a_trace_that_outgrows_the_context_names_n_ctx(tiny_bpe: Path) -> None:
    get_plugin_manager().pm.register(_Plugin(), name="thinking-test")
    args = ("--model", str(tiny_bpe), "--protocol", "think-open", "--n-ctx", "64", "--max-tokens", "500")
    r = run_cli(*args, QUESTION)
    record = json.loads(run_cli(*args, "--json", QUESTION).stdout)
    tokens = record["tokens"]
    assert record["status"] == "length" and record["engine"]["n_ctx"] == 64
    assert tokens["prompt"] + tokens["generated"] == 64 and [s["role"] for s in record["transcript"]] == ["prompt", "thinking"]
    assert notes(r) == [f"note: the reasoning was cut off before the answer when the context filled up, --n-ctx 64 "
                             f"tokens (prompt {tokens['prompt']} + generated {tokens['generated']} + tool output 0) "
                             "(status length): raise --n-ctx; the answer may be incomplete"]


def test_make_renderer_passes_the_choice_on() -> None:
    assert make_renderer("plain", show_thinking=True).show_thinking is True
    assert make_renderer("rich", console=rich_console(), show_thinking=False).show_thinking is False
