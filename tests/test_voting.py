"""Voting's logic with scripted engines: samples in parallel, early stop by agreement and by an
unbeatable lead (cancelling the rest, recorded as cancelled with their tokens so far), the
time budget, errors, the loop's cancellation, and the stop rule's soundness (property test:
an unbeatable leader is the full vote's winner, ties included).

The model is stood in for by `PacedEngine`: sample k (seed k) writes its script piece by
piece, one piece (a "token") every `pace` seconds, so a test decides which samples finish
first. Real llama.cpp runs are in tests/test_parallel_llama.py."""

from __future__ import annotations

import threading
import time
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mathsolve.api import Solver
from mathsolve.core.batch import solve_problem
from mathsolve.core.loop import run_loop
from mathsolve.core.problems import Problem
from mathsolve.core.voting import vote
from mathsolve.engines.base import EngineInfo, Generation, Sampling, TokenStats, find_stop
from mathsolve.engines.scripted import ScriptedEngine
from mathsolve.errors import EngineError
from mathsolve.formats.tora import ToraProtocol
from mathsolve.sandbox import Limits
from mathsolve.scoring.grader import Grader
from mathsolve.scoring.vote import VoteGroup, majority, stop_reason, unbeatable
from mathsolve.tools import ToolResult, ToolRouter

FAST, SLOW = 0.001, 0.05  # seconds per piece
LONG = "x" * 800  # 200 pieces: 10 s at SLOW pace, far longer than any test waits


class PacedEngine:
    """Serves parallel sessions (like a server); sample k's session writes `scripts[k]`, one
    round per generate, 4 characters per piece, a piece every `paces[k]` seconds."""

    concurrent = True

    def __init__(self, scripts: list[list[str]], paces: list[float], fail: int | None = None) -> None:
        self.info = EngineInfo(name="paced")
        self.scripts, self.paces, self.fail = scripts, paces, fail
        self.started: list[int] = []
        self.lock = threading.Lock()
        self.running = self.peak = 0

    def session(self, prompt: str, **kw) -> PacedSession:
        return PacedSession(self)

    def close(self) -> None:
        pass


class PacedSession:
    def __init__(self, engine: PacedEngine) -> None:
        self.engine, self.stats, self.rounds = engine, TokenStats(), 0

    def generate(self, *, stops, max_tokens, sampling: Sampling, on_text=None) -> Generation:
        engine, k = self.engine, sampling.seed
        with engine.lock:
            if self.rounds == 0:
                engine.started.append(k)
            engine.running += 1
            engine.peak = max(engine.peak, engine.running)
        try:
            if k == engine.fail:
                raise EngineError("the server went away")
            script = engine.scripts[k]
            raw = script[self.rounds] if self.rounds < len(script) else ""
            self.rounds += 1
            hit = find_stop(raw, stops)
            text = raw[: hit[0]] if hit else raw
            for i in range(0, len(text), 4):
                time.sleep(engine.paces[k])
                if on_text is not None:
                    on_text(text[i : i + 4])
                self.stats.generated += 1
            return Generation(text=text, finish_reason="stop" if hit else "eos", stop=hit[1] if hit else None,
                              n_tokens=(len(text) + 3) // 4)
        finally:
            with engine.lock:
                engine.running -= 1

    def push(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def boxed(answer: str) -> list[str]:
    return [f"So the answer is \\boxed{{{answer}}}.<|im_end|>"]


def solver_for(scripts: list[list[str]], paces: list[float], **flags) -> Solver:
    engine = PacedEngine(scripts, paces, fail=flags.pop("fail", None))
    return Solver(engine=engine, protocol="qwen-cot", model="paced", sessions=len(scripts), **flags)


def run_vote(solver: Solver, samples: int | None = None):
    samples = samples or len(solver.engine.scripts)
    with Grader() as grader:
        started = time.monotonic()
        record = solve_problem(solver, Problem("p", "What is 2 + 2?", "t", reference="4"), samples=samples,
                               grader=grader)
    return record, time.monotonic() - started


# -- the rule ------------------------------------------------------------------------------------


def groups(*spec: tuple[str, list[int]]) -> list[VoteGroup]:
    return [VoteGroup(answer, samples) for answer, samples in spec]


def test_unbeatable_counts_the_samples_still_running_and_who_wins_a_tie() -> None:
    # 3 votes against 1 with 1 sample left: 1 + 1 < 3.
    assert unbeatable(groups(("4", [0, 1, 2]), ("5", [3])), [4])
    # 2 against 1 with 1 left: the rival could tie at 2, and a tie goes to the earlier first
    # sample: the leader's (0) comes before the rival's (3): still unbeatable.
    assert unbeatable(groups(("4", [0, 2]), ("5", [3])), [4])
    # ... but not when the rival's first sample is the earlier one,
    assert not unbeatable(groups(("4", [1, 2]), ("5", [0])), [3])
    # ... nor when a sample still running comes before the leader's first and could tie.
    assert not unbeatable(groups(("4", [2, 3])), [0, 1])
    assert unbeatable(groups(("4", [0, 3])), [1, 2])  # a new group of 2 would start at 1, after 0
    assert not unbeatable(groups(("4", [0, 1])), [2, 3, 4])  # 3 could still outvote 2
    assert not unbeatable([], [0])


def test_stop_reason_agreement_first_then_unbeatable_and_never_when_nothing_runs() -> None:
    lead = groups(("4", [0, 1]), ("5", [2]))
    assert stop_reason(lead, [3, 4, 5], agree=2, stop_unbeatable=True) == "agreed"
    assert stop_reason(lead, [3, 4, 5], agree=3, stop_unbeatable=True) is None
    assert stop_reason(groups(("4", [0, 1, 2])), [3], agree=None, stop_unbeatable=True) == "unbeatable"
    assert stop_reason(groups(("4", [0, 1, 2])), [3], agree=None, stop_unbeatable=False) is None
    assert stop_reason(groups(("4", [0, 1, 2])), [], agree=2, stop_unbeatable=True) is None


@settings(max_examples=300)
@given(answers=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=9), data=st.data())
def test_an_unbeatable_leader_is_the_full_votes_winner(answers: list[str | None], data) -> None:
    """Samples end in any order; whenever the rule says the leader is unbeatable, the vote over
    every sample picks the same answer (ties by first sample included)."""
    order = data.draw(st.permutations(range(len(answers))))
    final = majority(answers, str.__eq__)
    seen: list[str | None] = [None] * len(answers)
    for step, index in enumerate(order):
        seen[index] = answers[index]
        so_far = majority(seen, str.__eq__)
        remaining = sorted(order[step + 1 :])
        if remaining and unbeatable(so_far, remaining):
            assert so_far[0].answer == final[0].answer, (answers, order[: step + 1])


# -- votes in parallel ---------------------------------------------------------------------------


def test_an_unbeatable_lead_cancels_the_rest_and_records_them() -> None:
    worked = ["y" * 400 + boxed("4")[0]]  # 100 pieces: the slow samples write a few meanwhile
    scripts = [worked, worked, worked, [LONG], [LONG]]
    solver = solver_for(scripts, [FAST, FAST, FAST, SLOW, SLOW])
    record, seconds = run_vote(solver)
    assert seconds < 5  # the two slow samples would take 10 s each
    assert solver.engine.peak == 5  # all five ran at once
    vote_block = record["vote"]
    assert record["answer"] == "4" and record["correct"] is True
    assert vote_block["early_stop"]["reason"] == "unbeatable" and 0 < vote_block["early_stop"]["after_s"] < 5
    assert vote_block["groups"] == [{"answer": "4", "count": 3, "samples": [0, 1, 2]}]
    states = [(s["status"], s["answer"]) for s in record["samples"]]
    assert states == [("finished", "4")] * 3 + [("cancelled", None)] * 2
    for cancelled in record["samples"][3:]:
        # Cut mid-round: what it wrote is in the transcript, its tokens so far are counted.
        assert 0 < cancelled["tokens"]["generated"] < 200
        assert cancelled["transcript"][-1]["text"] == LONG[: 4 * cancelled["tokens"]["generated"]]


def test_agreement_stops_before_the_lead_is_unbeatable() -> None:
    scripts = [boxed("4"), boxed("4"), [LONG], [LONG], [LONG], [LONG]]
    paces = [FAST, FAST, SLOW, SLOW, SLOW, SLOW]
    record, seconds = run_vote(solver_for(scripts, paces, early_stop=2))
    assert seconds < 5 and record["vote"]["early_stop"]["reason"] == "agreed"
    assert [s["status"] for s in record["samples"]] == ["finished"] * 2 + ["cancelled"] * 4


def test_off_runs_every_sample_and_auto_gives_the_same_winner() -> None:
    scripts = [boxed("4"), boxed("5"), boxed("4"), boxed("5"), boxed("4"), ["x" * 200 + "\\boxed{5}"]]
    paces = [FAST, FAST, FAST, FAST, FAST, SLOW]  # the last sample takes 2.5 s
    full, _ = run_vote(solver_for(scripts, paces, early_stop="off"))
    assert full["vote"]["early_stop"] is None and all(s["status"] == "finished" for s in full["samples"])
    # 4 has 3 votes, 5 has 2 with one sample left: 5 could tie at 3, but the tie goes to 4,
    # whose first sample (0) came before 5's (1). So auto stops early with the full vote's winner.
    early, _ = run_vote(solver_for(scripts, paces))
    assert early["vote"]["early_stop"]["reason"] == "unbeatable"
    assert early["answer"] == full["answer"] == "4"
    assert [s["status"] for s in early["samples"]] == ["finished"] * 5 + ["cancelled"]
    # The share of sample tokens the early stop saved, from the records alone.
    spent = [sum(s["tokens"]["generated"] for s in r["samples"]) for r in (full, early)]
    assert spent[1] < spent[0]


def test_more_samples_than_parallel_wait_for_a_turn_in_order() -> None:
    scripts = [boxed("4")] * 5 + [[LONG]] * 3
    solver = solver_for(scripts, [FAST] * 5 + [SLOW] * 3, parallel=3)
    record, seconds = run_vote(solver)
    assert solver.parallel == 3 and solver.engine.peak <= 3 and seconds < 5
    assert 0 in solver.engine.started[:3] and 7 not in solver.engine.started[:3]  # turns are taken in order
    # Once 4 votes for 4 face at most 4 samples left, a rival could only tie, and a tie goes
    # to sample 0's group: unbeatable (which of samples 3 and 4 ended by then is up to timing).
    assert record["vote"]["early_stop"]["reason"] == "unbeatable" and record["answer"] == "4"
    statuses = [s["status"] for s in record["samples"]]
    assert statuses.count("finished") >= 4 and set(statuses[:5]) <= {"finished", "cancelled"}
    assert statuses[5:] == ["cancelled"] * 3
    # A sample whose turn comes after the vote ended never reaches the engine.
    never = [i for i in range(8) if i not in solver.engine.started]
    assert all(record["samples"][i]["rounds"] == 0 and record["samples"][i]["tokens"]["generated"] == 0
               for i in never)


def test_the_time_budget_ends_the_samples_and_votes_with_what_finished() -> None:
    scripts = [[LONG], boxed("7"), [LONG], [LONG]]
    record, seconds = run_vote(solver_for(scripts, [SLOW, FAST, SLOW, SLOW], time_budget=0.5))
    assert 0.5 <= seconds < 4
    assert record["vote"]["early_stop"]["reason"] == "time_budget"
    assert record["vote"]["early_stop"]["after_s"] >= 0.5
    assert record["answer"] == "7" and record["vote"]["groups"][0]["samples"] == [1]
    assert [s["status"] for s in record["samples"]] == ["cancelled", "finished", "cancelled", "cancelled"]
    # Nothing finished in time: no answer, the first sample speaks for the record.
    record, _ = run_vote(solver_for([[LONG], [LONG]], [SLOW, SLOW], time_budget=0.3))
    assert record["answer"] is None and record["vote"]["groups"] == [] and record["status"] == "cancelled"
    assert record["correct"] is False and record["vote"]["pass"] is False


def test_the_time_budget_cancels_a_single_solve() -> None:
    solver = solver_for([[LONG]], [SLOW], time_budget=0.3)
    started = time.monotonic()
    record = solver.solve("What is 2 + 2?", sampling=Sampling(seed=0))
    assert time.monotonic() - started < 3
    assert record["status"] == "cancelled" and record["answer"] is None and record["tokens"]["generated"] > 0


def test_an_engine_error_cancels_the_other_samples_and_is_raised() -> None:
    solver = solver_for([[LONG], boxed("4"), [LONG]], [SLOW, FAST, SLOW], fail=1)
    started = time.monotonic()
    with Grader() as grader, pytest.raises(EngineError, match="went away"):
        vote(solver, "Q?", samples=3, equal=grader.equal)
    assert time.monotonic() - started < 5  # the slow ones were cancelled, not waited for


# -- one at a time -------------------------------------------------------------------------------


def test_one_at_a_time_an_unbeatable_lead_skips_the_samples_not_started() -> None:
    engine = ScriptedEngine([["\\boxed{4}<|im_end|>"]] * 5)
    solver = Solver(engine=engine, protocol="qwen-cot", model="s", sessions=5)
    assert solver.parallel == 1  # a scripted engine serves one session at a time
    record, _ = run_vote(solver, samples=5)
    assert len(engine.sessions) == 3  # 3 of 5 agreeing: the other two never started
    assert [s["status"] for s in record["samples"]] == ["finished"] * 3 + ["cancelled"] * 2
    assert record["samples"][4]["tokens"]["generated"] == 0 and record["vote"]["early_stop"]["reason"] == "unbeatable"


def test_one_at_a_time_the_time_budget_cancels_the_running_sample() -> None:
    solver = solver_for([boxed("4"), [LONG], [LONG]], [FAST, SLOW, SLOW], parallel=1, time_budget=0.5)
    assert solver.parallel == 1
    record, seconds = run_vote(solver)
    assert seconds < 4 and record["answer"] == "4"
    assert [s["status"] for s in record["samples"]] == ["finished", "cancelled", "cancelled"]


# -- the loop ------------------------------------------------------------------------------------


class CountingTool:
    name, description = "python", "counts"

    def __init__(self, on_run: Callable[[], None] | None = None) -> None:
        self.calls, self.on_run = 0, on_run

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        self.calls += 1
        if self.on_run is not None:
            self.on_run()
        return ToolResult("python", "ok", stdout="5\n")


def loop(engine, cancel: threading.Event, tool: CountingTool, seed: int = 0):
    protocol = ToraProtocol()
    prompt = protocol.prompt("What is 2 + 3?")
    return run_loop(prompt=prompt, protocol=protocol, session=engine.session(prompt),
                    router=ToolRouter({"python": tool}), sampling=Sampling(seed=seed), limits=Limits(),
                    cancel=cancel)


def test_a_cancel_before_a_round_ends_the_loop_there() -> None:
    code = "```python\nprint(2 + 3)\n```\n```output\n"
    cancel = threading.Event()
    tool = CountingTool(on_run=cancel.set)  # cancelled while its first block runs
    result = loop(ScriptedEngine([code, code, "\\boxed{5}"]), cancel, tool)
    assert result.status == "cancelled" and tool.calls == 1 and result.rounds == 1
    assert [s.role for s in result.segments] == ["prompt", "model", "tool"]


def test_a_cancel_mid_round_keeps_the_text_and_runs_no_code() -> None:
    cancel = threading.Event()
    engine = PacedEngine([["```python\nprint(2 + 3)\n" + "#" * 400 + "\n```\n```output\n"]], [0.01])
    tool = CountingTool()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    result = loop(engine, cancel, tool)
    timer.join()
    assert result.status == "cancelled" and tool.calls == 0 and result.rounds == 1
    assert result.solution.startswith("```python\nprint(2 + 3)\n#") and "```output" not in result.solution
