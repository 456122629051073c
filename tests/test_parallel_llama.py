"""Many samples and many problems at once on the real llama.cpp (tiny generated GGUFs): `-n K`
decoded together votes as the one-at-a-time path does, a sample in a slow code block does not
hold up the others, cancelling frees the engine, `FILE --concurrency N` writes every record
once and a batch killed mid-way resumes without duplicates, the settings' bad values and
memory limits, and the run block that says which vote rules made a record."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mathsolve.api import Solver
from mathsolve.core.batch import read_records, solve_problem
from mathsolve.core.problems import Problem, content_id
from mathsolve.errors import EXIT_USAGE
from mathsolve.formats.tora import QwenTirProtocol
from mathsolve.scoring.grader import Grader
from mathsolve.tools import ToolResult
from mathsolve.tools.base import Limits
from tests.cli_run import Result, run_cli
from tests.test_batched_engine import EveryRoundRuns

QUESTION = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"


def tiny_solver(model: Path, **flags) -> Solver:
    flags.setdefault("protocol", "tora")
    flags.setdefault("max_tokens", 24)
    return Solver(model=str(model), extra_buffers="off", **flags)


def vote_of(solver: Solver, samples: int, observer=None) -> dict:
    with Grader() as grader:
        return solve_problem(solver, Problem("p", QUESTION, "t"), samples=samples, grader=grader, observer=observer)


def one_error(result: Result, *words: str) -> None:
    assert result.code == EXIT_USAGE, (result.code, result.stderr[-2000:])
    errors = [line for line in result.error_lines if line.startswith("error")]
    assert len(errors) == 1 and result.error_lines[-1] == errors[0], result.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert "Traceback" not in result.stderr


# -- votes ----------------------------------------------------------------------------------------


def test_samples_decoded_together_vote_as_the_one_at_a_time_path(tiny_bpe: Path) -> None:
    """On the tiny F32 model every sequence writes LlamaSession's text, so with the same
    seeds the K samples, their answers and the vote are the same either way."""
    k = 4
    with tiny_solver(tiny_bpe, sessions=k, parallel=1, early_stop="off", seed=3) as one:
        assert one.parallel == 1 and one.engine.info.name == "llama.cpp"
        alone = vote_of(one, k)
    with tiny_solver(tiny_bpe, sessions=k, early_stop="off", seed=3) as together:
        assert together.parallel == k and together.engine.info.name == "llama.cpp (batched)"
        batched = vote_of(together, k)
        assert together.engine.counters["sequences_per_call_max"] > 1  # decoded together, really
    keys = ("answer", "status", "transcript", "rounds", "sampling")
    assert [[s[key] for key in keys] for s in batched["samples"]] == [[s[key] for key in keys] for s in alone["samples"]]
    assert len({json.dumps(s["transcript"]) for s in alone["samples"]}) == k  # four different solutions
    assert batched["vote"] == alone["vote"] and batched["answer"] == alone["answer"]
    # With the default rule (stop once the leader cannot be overtaken) the winner is the same.
    with tiny_solver(tiny_bpe, sessions=k, seed=3) as auto:
        assert vote_of(auto, k)["answer"] == alone["answer"]


class SlowFirstBlock:
    """A tool whose first block takes `delay_s`; it notes when that block ended."""

    name, description = "python", "slow first block"

    def __init__(self, delay_s: float) -> None:
        self.delay_s, self.calls, self.slow_ended = delay_s, 0, None
        self.lock = threading.Lock()

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            time.sleep(self.delay_s)
            self.slow_ended = time.monotonic()
        return ToolResult(self.name, "ok", stdout="42\n")


class Ends:
    """A SampleObserver noting when each sample ended."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def sample_events(self, index: int):
        return None

    def sample_done(self, index: int, record: dict, groups: list) -> None:
        self.at[index] = time.monotonic()


def test_a_sample_in_a_slow_code_block_does_not_hold_up_the_others(tiny_bpe: Path) -> None:
    tool = SlowFirstBlock(delay_s=3.0)
    with tiny_solver(tiny_bpe, sessions=3, early_stop="off", max_tokens=None) as solver:
        solver.protocol = EveryRoundRuns()
        solver.tools = {"python": tool}
        ends = Ends()
        record = vote_of(solver, 3, observer=ends)
    assert [len(s["tool_calls"]) for s in record["samples"]] == [3, 3, 3]
    slow = max(ends.at, key=ends.at.get)  # the sample whose first block was the slow one ends last
    others = [at for index, at in ends.at.items() if index != slow]
    assert all(at < tool.slow_ended for at in others), "the other samples waited for the slow block"


class Rambling(QwenTirProtocol):
    """One long round without stops: the tiny model writes until its token limit."""

    name = "test-rambling"
    stops = ()
    max_rounds = 1


def test_the_time_budget_cancels_sequences_mid_round_and_frees_their_slots(tiny_bpe: Path) -> None:
    # 8,000 tokens each: seconds of work even for the tiny model, cut at 0.3 s.
    with tiny_solver(tiny_bpe, sessions=2, n_ctx=8192, max_tokens=8000, time_budget=0.3) as solver:
        solver.protocol = Rambling()
        started = time.monotonic()
        record = vote_of(solver, 2)
        assert time.monotonic() - started < 20
        assert solver.engine.cells() == {}  # both sequences' cells freed
    assert record["vote"]["early_stop"]["reason"] == "time_budget" and record["answer"] is None
    for sample in record["samples"]:
        assert sample["status"] == "cancelled" and 0 < sample["tokens"]["generated"] < 8000
        # What the sample wrote before the budget ran out is its transcript.
        assert sample["transcript"][-1]["role"] == "model" and sample["transcript"][-1]["text"]


# -- batches ---------------------------------------------------------------------------------------


def test_a_file_with_concurrency_writes_every_record_once_on_the_batched_engine(tiny_bpe: Path,
                                                                                tmp_path: Path) -> None:
    questions = [f"What is {i} times {i}?" for i in range(9)]
    problems = tmp_path / "p.txt"
    problems.write_text("\n".join(questions) + "\n")
    out = tmp_path / "o.jsonl"
    r = run_cli("--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "24", "--concurrency", "4",
                str(problems), "-o", str(out))
    assert r.code == 0, r.stderr
    assert "-> 1" not in r.stderr  # no longer cut to one problem at a time
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(x["id"] for x in records) == sorted(content_id(q) for q in questions)
    assert len(lines) == len({x["id"] for x in records})
    assert {x["engine"]["name"] for x in records} == {"llama.cpp (batched)"}
    assert {x["engine"]["slots"] for x in records} == {4} and {x["engine"]["n_ctx"] for x in records} == {2048}
    assert all(x["run"]["time_budget"] is None and "early_stop" not in x["run"] for x in records)
    # The same answers as one problem at a time (the tiny F32 model decodes alike either way).
    one = tmp_path / "one.jsonl"
    assert run_cli("--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "24", str(problems), "-o",
                   str(one)).code == 0
    sequential = read_records(one)
    assert {i: (x["answer"], x["transcript"]) for i, x in read_records(out).items()} == {
        i: (x["answer"], x["transcript"]) for i, x in sequential.items()}
    assert {x["engine"]["name"] for x in sequential.values()} == {"llama.cpp"}


def test_a_batch_killed_mid_way_resumes_without_duplicates(tiny_bpe: Path, tmp_path: Path) -> None:
    questions = [f"Problem {i}: what is {i} plus {i}?" for i in range(40)]
    problems = tmp_path / "p.txt"
    problems.write_text("\n".join(questions) + "\n")
    out = tmp_path / "o.jsonl"
    args = [sys.executable, "-m", "mathsolve", str(problems), "--model", str(tiny_bpe), "--protocol", "tora",
            "--max-tokens", "64", "--concurrency", "4", "-n", "2", "-o", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    first = read_records(out)
    assert 4 <= len(first) < 40, "the batch should have been stopped in the middle"
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 40 and set(ids) == {content_id(q) for q in questions}
    assert "already done" in done.stderr
    assert all(x["vote"]["samples"] == 2 and x["run"]["early_stop"] == "unbeatable" for x in read_records(out).values())


def test_resuming_with_another_vote_rule_or_time_budget_refuses_to_mix(tiny_bpe: Path, tmp_path: Path) -> None:
    problems = tmp_path / "p.txt"
    problems.write_text("What is 1+1?\nWhat is 2+2?\n")
    out = tmp_path / "o.jsonl"
    base = ["--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "8", "-n", "2", str(problems), "-o", str(out)]
    assert run_cli(*base).code == 0
    before = out.read_bytes()
    for flags in (["--early-stop", "off"], ["--time-budget", "30"]):
        one_error(run_cli(*base, *flags), "other settings")
        assert out.read_bytes() == before
    # Speed-only settings are not part of the run: the same file resumes with them.
    assert run_cli(*base, "--parallel", "1", "--concurrency", "2").code == 0


# -- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, words", [
    (["--parallel", "0"], ["parallel", "at least 1"]),
    (["--parallel", "257"], ["parallel", "at most 256"]),
    (["--early-stop", "most"], ["early_stop", "auto, off or a number"]),
    (["--early-stop", "-1"], ["early_stop"]),
    (["--time-budget", "0"], ["time_budget"]),
    (["--time-budget", "nan"], ["time_budget"]),
    (["--concurrency", "0"], ["concurrency"]),
])
def test_bad_values_are_one_line_and_exit_2(flags: list[str], words: list[str], tiny_bpe: Path) -> None:
    one_error(run_cli("--model", str(tiny_bpe), "--protocol", "tora", "-n", "2", *flags, "Q?"), *words)


def test_more_sequences_than_the_memory_holds(tiny_bpe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mathsolve.engines.llama import params
    from mathsolve.ggufinfo import read_gguf

    per_sequence = read_gguf(str(tiny_bpe)).kv_values_per_token() * 2 * 2048  # f16, the tiny model's context
    monkeypatch.setattr(params, "available_memory", lambda: int(per_sequence * 3.5))
    base = ["--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "4", "-n", "8", "--jsonl"]
    # Set by the user: refused before anything loads.
    one_error(run_cli(*base, "--parallel", "8", "Q?"), "--parallel 8", "at most 3 fit")
    # The default: lowered to what fits, and said so.
    r = run_cli(*base, "Q?")
    assert r.code == 0, r.stderr
    assert "parallel 8 -> 3" in r.stderr
    assert json.loads(r.stdout)["engine"]["slots"] == 3


def test_a_single_solve_stays_on_the_plain_engine(tiny_bpe: Path) -> None:
    r = run_cli("--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "8", "--json", "Q?")
    assert r.code == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["engine"]["name"] == "llama.cpp" and "slots" not in record["engine"]
    assert record["status"] == "length" and "vote" not in record
