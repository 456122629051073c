"""The K-sample view of `mathsolve "QUESTION" -n K`: the live table in a terminal (a recording
rich Console), the plain lines when piped, and the CLI around it on the real llama.cpp; also a
server engine getting a vote's samples in parallel, up to --parallel."""

from __future__ import annotations

import io
import time
from pathlib import Path

from rich.console import Console

from mathsolve.api import Solver
from mathsolve.cli.views.samples import SamplesView, sample_line, vote_line
from mathsolve.core.batch import solve_problem
from mathsolve.core.problems import Problem
from mathsolve.scoring.grader import Grader
from mathsolve.tools import ToolResult
from tests.cli_run import run_cli
from tests.test_openai_engine import completion, remote, stand_in  # noqa: F401 - stand_in is a fixture
from tests.test_voting import LONG, SLOW, PacedEngine

CODE = "Let me compute.\n```python\nprint(2 + 2)\n```\n```output\n"


class SlowTool:
    name, description = "python", "takes a second"

    def run(self, code: str, *, limits, prelude: str = "") -> ToolResult:
        time.sleep(1.0)
        return ToolResult("python", "ok", stdout="4\n")


class Snapshot(SamplesView):
    """The view, plus the live table as text when the first sample ends."""

    snapshot = ""

    def sample_done(self, index, record, groups) -> None:
        super().sample_done(index, record, groups)
        if not self.snapshot:
            out = Console(file=io.StringIO(), width=100, height=40, force_terminal=False)
            out.print(self.table())
            self.snapshot = out.file.getvalue()


def three_samples() -> Solver:
    """Sample 0 writes an answer in 0.4 s; sample 1 writes a code block at once, waits a
    second for its output, then answers; sample 2 rambles (cancelled once 0 and 1 agree)."""
    scripts = [["y" * 160 + "The answer is \\boxed{4}.</s>"], [CODE, "So \\boxed{4}.</s>"], [LONG]]
    engine = PacedEngine(scripts, [0.01, 0.001, SLOW])
    solver = Solver(engine=engine, protocol="tora", model="paced", sessions=3)
    solver.tools = {"python": SlowTool()}
    return solver


def vote_with(view: SamplesView) -> dict:
    with Grader() as grader:
        view.begin()
        try:
            return solve_problem(three_samples(), Problem("p", "What is 2 + 2?", "t"), samples=3, grader=grader,
                                 observer=view)
        finally:
            view.end()


def test_the_live_table_shows_each_sample_and_the_vote_so_far() -> None:
    console = Console(file=io.StringIO(), record=True, force_terminal=True, width=100, height=40)
    view = Snapshot(3, plain=False, console=console)
    record = vote_with(view)
    # When sample 1 ended: sample 2 writing, sample 3 in its code block... (rows 1-based)
    table = view.snapshot
    assert "3 samples" in table and "1 done" in table and "leading: 4 (1 vote)" in table
    rows = {line.split()[0]: line for line in table.splitlines() if line.strip()[:1].isdigit()}
    assert "done" in rows["1"] and rows["1"].rstrip().endswith("4")
    assert "code block" in rows["2"] and "writing" in rows["3"]
    # Then the vote, how it ended, and the winning solution drawn as a solve is.
    view.show(record, Solver(engine=PacedEngine([[]], [0]), protocol="tora", model="x").protocol)
    shown = console.export_text()  # what went through rich (prose is written to the file directly)
    words = " ".join(shown.split())
    assert "votes answer votes samples 4 2 1, 2" in words
    assert "vote: 4 with 2 votes of 3 (2 answered) · ended after" in words
    assert "the leading answer could no longer be overtaken; 1 cancelled" in words
    after = words.split("winning solution: sample 1")[1]
    assert "answer" in after and after.rstrip().split("╯")[-1].strip().startswith("finished")
    assert "y" * 160 + "The answer is" in console.file.getvalue()  # the winner's prose


def test_plain_output_is_a_line_per_sample_then_the_winner() -> None:
    out = io.StringIO()
    view = SamplesView(3, plain=True, out=out)
    record = vote_with(view)
    view.show(record, Solver(engine=PacedEngine([[]], [0]), protocol="tora", model="x").protocol)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("sample 1/3: 4 (finished, 1 round, ")
    assert lines[1].startswith("sample 2/3: 4 (finished, 2 rounds, ")
    assert lines[2].startswith("sample 3/3: cancelled after ") and lines[2].endswith(" tokens")
    assert lines[3].startswith("vote: 4 with 2 votes of 3 (2 answered) · ended after ")
    assert lines[4] == "winning solution: sample 1"
    assert lines[5].startswith("y" * 40) and lines[-1] == "Answer: 4"


def test_the_lines_name_what_a_reader_needs() -> None:
    finished = {"status": "finished", "answer": "4", "rounds": 2, "tokens": {"generated": 312},
                "timings": {"total_s": 4.14}}
    assert sample_line(2, 8, finished) == "sample 3/8: 4 (finished, 2 rounds, 312 tokens, 4.1 s)"
    assert sample_line(0, 2, {"status": "length", "answer": None, "rounds": 1}) == \
        "sample 1/2: (no answer) (length, 1 round, 0 tokens, 0.0 s)"
    budget = {"vote": {"samples": 4, "groups": [], "eligible": 0, "early_stop": {"reason": "time_budget", "after_s": 30.02}},
              "samples": [{"status": "cancelled"}] * 4}
    assert vote_line(budget, time_budget=30) == ("vote: no answer from any of the 4 samples (0 answered) · ended after "
                                                 "30.0 s: the time budget ran out (--time-budget 30 s); 4 cancelled")
    agreed = {"vote": {"samples": 8, "groups": [{"answer": "\x1b[2J7", "count": 4, "samples": [0, 2, 3, 5]}],
                       "eligible": 5, "early_stop": {"reason": "agreed", "after_s": 3.0}}, "samples": []}
    assert vote_line(agreed) == ("vote: [2J7 with 4 votes of 8 (5 answered) · ended after 3.0 s: 4 samples agreed "
                                 "(--early-stop 4); 0 cancelled")  # the model's escape code is not passed on


def test_the_cli_prints_the_samples_and_the_winner_when_piped(tiny_bpe: Path) -> None:
    r = run_cli("--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "12", "-n", "3", "--early-stop", "off",
                "Q?")
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["sample 1/3", "sample 2/3", "sample 3/3"] or \
        sorted(line.split(":")[0] for line in lines[:3]) == ["sample 1/3", "sample 2/3", "sample 3/3"]
    assert lines[3].startswith("vote: ") and lines[4].startswith("winning solution: sample ")
    assert lines[-1].startswith("Answer: ")


def test_a_server_gets_a_votes_samples_in_parallel_up_to_parallel(stand_in) -> None:  # noqa: F811
    starts: list[float] = []

    def respond(body):
        starts.append(time.monotonic())
        return 200, completion("The answer is \\boxed{4}.", stop_reason=None), 0.4

    srv = stand_in(respond, models=("llm-agents/tora-7b-v1.0",))
    for flags, expected in (([], 6), (["--parallel", "2"], 2)):
        starts.clear()
        r = run_cli(*remote(srv.url, "--model", "llm-agents/tora-7b-v1.0"), "-n", "6", "--early-stop", "off",
                    "--jsonl", *flags, "Q?")
        assert r.code == 0, r.stderr
        assert len(starts) == 6
        # The most requests the server had at once (each takes 0.4 s).
        peak = max(sum(s <= t < s + 0.35 for s in starts) for t in starts)
        assert peak == expected, (flags, starts)
