"""Many problems: every input form, malformed input, resumable JSONL (a real process
killed mid-batch), majority voting, reproducibility and `mathsolve eval`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathsolve.core.batch import ResultsFile, read_records, run_batch, solve_problem
from mathsolve.cli import app
from mathsolve.engines.scripted import ScriptedEngine
from mathsolve.core.problems import content_id, read_problems
from mathsolve.scoring.vote import eligible, majority

runner = CliRunner()
SHARED_EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"


def _problems(tmp_path: Path, name: str, text: str, **kw):
    path = tmp_path / name
    path.write_text(text)
    return list(read_problems([str(path)], shown_as=[name], **kw))


# -- inputs ------------------------------------------------------------------------------

def test_plain_text_lines_and_blocks(tmp_path: Path) -> None:
    got = _problems(tmp_path, "hw.txt", "What is 1+1?\n\n  What is 2+2?  \n")
    assert [p.question for p in got] == ["What is 1+1?", "What is 2+2?"]
    assert [p.source for p in got] == ["hw.txt:1", "hw.txt:3"] and got[0].id == content_id("What is 1+1?")
    got = _problems(tmp_path, "hw2.txt", "A train leaves\nat noon.\n\n\nSecond\nproblem\n", blocks=True)
    assert [p.question for p in got] == ["A train leaves\nat noon.", "Second\nproblem"]
    assert [p.source for p in got] == ["hw2.txt:1", "hw2.txt:5"]


def test_stdin_is_sniffed(tmp_path: Path) -> None:
    got = list(read_problems(["-"], stdin=StringIO('{"problem": "p1", "answer": "3"}\n{"problem": "p2"}\n')))
    assert [(p.question, p.reference) for p in got] == [("p1", "3"), ("p2", None)]
    got = list(read_problems(["-"], stdin=StringIO('[{"question": "q1"}, "q2"]')))
    assert [p.question for p in got] == ["q1", "q2"] and got[1].source == "stdin:[1]"


def test_json_fields_are_detected(tmp_path: Path) -> None:
    lines = [
        {"question": "q", "answer": "#### 1,234"},
        {"problem": "p", "solution": "so \\boxed{\\frac12}"},
        {"input": "i", "target": 4.0},
        {"Body": "B.", "Question": "Q?", "Answer": 2.0, "Equation": "x"},
        {"body": "b.", "question": "q?", "answer": "9 (apples)", "formula": "7+2=9"},
        {"Question": "TQ", "Answer": 5, "Answer_type": "integer"},
    ]
    got = _problems(tmp_path, "mix.jsonl", "\n".join(json.dumps(r) for r in lines))
    assert [p.question for p in got] == ["q", "p", "i", "B. Q?", "b. q?", "TQ"]
    assert [p.reference for p in got] == ["1234", "\\frac{1}{2}", "4", "2", "9", "5"]
    got = _problems(tmp_path, "f.jsonl", json.dumps({"text": "t", "question": "no"}), field="text")
    assert got[0].question == "t"


def test_malformed_records_are_reported_with_file_and_line(tmp_path: Path) -> None:
    got = _problems(tmp_path, "bad.jsonl", '{"question": "ok"}\n{not json\n{"q": "x"}\n{"question": "  "}\n[1]\n')
    assert got[0].error is None
    errors = [p.error for p in got[1:]]
    assert errors[0].startswith("bad.jsonl:2: invalid JSON")
    assert errors[1].startswith("bad.jsonl:3: no question field")
    assert errors[2] == "bad.jsonl:4: the problem is empty"
    assert errors[3] == "bad.jsonl:5: expected an object, got list"
    broken = _problems(tmp_path, "bad.json", '[{"question": "a"},')
    assert broken[0].error.startswith("bad.json:1: invalid JSON")


@pytest.mark.skipif(not SHARED_EVAL.is_dir(), reason="../shared/data/eval is not present")
@pytest.mark.parametrize("name", sorted(p.name for p in SHARED_EVAL.glob("*.json*")) if SHARED_EVAL.is_dir() else [])
def test_every_shared_eval_set_reads_as_is(name: str) -> None:
    got = list(read_problems([str(SHARED_EVAL / name)]))
    assert got and all(p.error is None for p in got), [p.error for p in got if p.error][:3]
    with_reference = sum(p.reference is not None for p in got)
    assert with_reference >= 0.99 * len(got)
    assert len({p.id for p in got}) >= 0.99 * len(got)  # ids are stable and (nearly) unique


# -- resumable output ------------------------------------------------------------------------

def test_results_file_repairs_a_half_written_line_and_skips_done(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "schema": "mathsolve.solution/1", "answer": "1"}\n{"id": "b", "ans')
    with ResultsFile(path) as out:
        assert set(out.done) == {"a"} and out.repaired_bytes == len('{"id": "b", "ans')
        out.write({"id": "b", "answer": "2"})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b"]


class _Solver:
    """Enough of a Solver for run_batch: scripted answers, counts its solves."""

    def __init__(self) -> None:
        from mathsolve.api import Solver

        self.inner = Solver(engine=ScriptedEngine([["The answer is \\boxed{2}."]] * 50), protocol="tora", model="s")
        self.protocol = self.inner.protocol
        self.calls = 0

    def solve(self, question, **kw):
        self.calls += 1
        return self.inner.solve(question, **kw)

    def sampling(self, **kw):
        return self.inner.sampling(**kw)


def test_run_batch_writes_each_record_and_never_twice(tmp_path: Path) -> None:
    from mathsolve.scoring.grader import Grader

    problems = _problems(tmp_path, "p.jsonl", '{"id": 1, "question": "1+1", "answer": "2"}\n{"id": 2, "question": "x"}\n'
                         '{"id": 1, "question": "1+1", "answer": "2"}\n{"bad": 1}\n')
    solver = _Solver()
    with Grader() as grader, ResultsFile(tmp_path / "o.jsonl") as out:
        stats = run_batch(problems, solver, out=out, grader=grader)
    assert solver.calls == 2 and stats.done == 2 and stats.input_errors == 1 and stats.correct == 1
    records = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["p:1", "p:2", "p.jsonl:4"] and records[2]["status"] == "input-error"
    with Grader() as grader, ResultsFile(tmp_path / "o.jsonl") as out:
        stats = run_batch(problems, solver, out=out, grader=grader)
    assert solver.calls == 2 and stats.skipped == 3 and stats.done == 0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mathsolve", *args]


def test_a_batch_killed_midway_resumes_without_loss_or_duplicates(tiny_bpe: Path, tmp_path: Path) -> None:
    questions = [f"What is {i} plus {i}?" for i in range(24)]
    problems = tmp_path / "problems.txt"
    problems.write_text("\n".join(questions) + "\n")
    out = tmp_path / "out.jsonl"
    args = _cli(str(problems), "--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "32", "-o", str(out))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read_records(out)
    assert 4 <= len(first) < 24, "the batch should have been killed in the middle"
    with open(out, "a") as fh:  # as if the power went out in the middle of a write
        fh.write('{"id": "sha1:half-writ')
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids)) == 24
    assert set(ids) == {content_id(q) for q in questions}
    assert all(json.loads(line) == first[json.loads(line)["id"]] for line in lines[: len(first)])  # kept as written
    assert "already done" in done.stderr and "half-written" in done.stderr


def test_ctrl_c_keeps_finished_records_and_exits_130(tiny_bpe: Path, tmp_path: Path) -> None:
    problems = tmp_path / "problems.txt"
    problems.write_text("\n".join(f"Problem {i}?" for i in range(40)) + "\n")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(_cli(str(problems), "--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "48",
                                 "-o", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "rerun the same command to resume" in err and "Traceback" not in err
    assert out.read_text().endswith("\n") and len(read_records(out)) >= 3


def test_jsonl_to_stdout_and_stdin_batch(tiny_bpe: Path) -> None:
    r = runner.invoke(app, ["--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "4", "--jsonl", "-"],
                      input="First?\n\nSecond?\nThird?\n")
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["question"] for rec in records] == ["First?", "Second?", "Third?"]
    assert all({"id", "answer", "status", "transcript", "tool_calls", "tokens", "timings", "model", "protocol",
                "sampling"} <= set(rec) for rec in records)


def test_several_arguments_must_be_files(tmp_path: Path) -> None:
    r = runner.invoke(app, ["solve", str(tmp_path / "missing.txt"), "other"])
    assert r.exit_code == 2 and "no such file" in r.output


# -- voting ------------------------------------------------------------------------------------

def test_majority_groups_equivalent_answers_and_breaks_ties_by_order() -> None:
    from mathsolve.scoring.grader import Grader

    with Grader() as grader:
        groups = majority(["0.5", "3", "\\frac{1}{2}", None, "1/2", "3", "4"], grader.equal)
        assert [(g.answer, g.samples) for g in groups] == [("0.5", [0, 2, 4]), ("3", [1, 5]), ("4", [6])]
        tie = majority(["7", "8", "8", "7"], grader.equal)
        assert tie[0].answer == "7"  # two votes each: the earlier first sample wins


def test_numina_votes_only_with_executed_code_and_a_boxed_answer() -> None:
    model = [{"role": "model", "text": "so \\boxed{3}"}]
    assert eligible({"answer": "3", "tool_calls": [{"status": "ok"}], "transcript": model}, "numina")
    assert not eligible({"answer": "3", "tool_calls": [], "transcript": model}, "numina")
    assert not eligible({"answer": "3", "tool_calls": [{"status": "ok"}], "transcript": [{"role": "model", "text": "3"}]}, "numina")
    assert eligible({"answer": "3", "tool_calls": [], "transcript": []}, "tora")
    assert not eligible({"answer": None}, "tora")


def test_vote_record_holds_every_sample_maj_and_pass() -> None:
    from mathsolve.api import Solver
    from mathsolve.scoring.grader import Grader
    from mathsolve.core.problems import Problem

    script = [["\\boxed{4}"], ["\\boxed{5}"], ["\\boxed{4.0}"]]
    solver = Solver(engine=ScriptedEngine(script), protocol="qwen-cot", model="s")
    with Grader() as grader:
        record = solve_problem(solver, Problem("p", "2+2?", "x", reference="5"), samples=3, grader=grader)
    assert record["answer"] == "4" and record["correct"] is False
    assert record["vote"]["groups"][0] == {"answer": "4", "count": 2, "samples": [0, 2]}
    assert record["vote"]["pass"] is True and [s["correct"] for s in record["samples"]] == [False, True, False]
    # Published sampling for voting (Qwen: T=0.7, top_p=0.8), seed + k per sample.
    assert [(s["sampling"]["temperature"], s["sampling"]["top_p"], s["sampling"]["seed"]) for s in record["samples"]] == [
        (0.7, 0.8, 0), (0.7, 0.8, 1), (0.7, 0.8, 2)]


def test_user_sampling_wins_over_published_values() -> None:
    from mathsolve.api import Solver

    solver = Solver(engine=ScriptedEngine(["x"]), protocol="numina", model="s", temperature=0.3, seed=10)
    sampling = solver.sampling(sample=2)
    assert (sampling.temperature, sampling.top_p, sampling.seed) == (0.3, 1.0, 12)


def test_sampled_runs_are_reproducible(tiny_bpe: Path) -> None:
    # Every sample to its end: an early stop cancels samples at a moment that depends on timing.
    args = ["--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "12", "-n", "2", "--seed", "7",
            "--early-stop", "off", "--jsonl", "Q?"]
    runs = []
    for _ in range(2):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        record = json.loads(r.stdout)
        runs.append([(s["transcript"], s["sampling"]) for s in record["samples"]])
    assert runs[0] == runs[1]
    assert runs[0][0][0] != runs[0][1][0]  # two samples, two different solutions


# -- eval ----------------------------------------------------------------------------------------

def test_eval_bundled_gsm8k_writes_gradeable_records_and_resumes(tiny_bpe: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.jsonl"
    args = ["eval", "gsm8k", "--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "4", "--limit", "3",
            "--offset", "2", "-o", str(out), "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout[r.stdout.index("{"):])
    assert (report["problems"], report["graded"]) == (3, 3) and report["accuracy"] == 0.0
    assert [rec["id"] for rec in read_records(out).values()] == ["gsm8k:2", "gsm8k:3", "gsm8k:4"]
    graded = runner.invoke(app, ["grade", str(out), "--json"])
    assert json.loads(graded.stdout)["total"] == 3
    again = runner.invoke(app, args[:-1] + ["--json"])
    assert again.exit_code == 0 and len(out.read_text().splitlines()) == 3


def test_eval_sample_is_seeded_and_published_score_is_looked_up() -> None:
    from mathsolve.core.evaluate import _published, eval_problems

    a, name = eval_problems("gsm8k", field=None, offset=0, limit=None, sample=5, seed=1)
    b, _ = eval_problems("gsm8k", field=None, offset=0, limit=None, sample=5, seed=1)
    c, _ = eval_problems("gsm8k", field=None, offset=0, limit=None, sample=5, seed=2)
    assert name == "gsm8k" and [p.id for p in a] == [p.id for p in b] != [p.id for p in c]
    assert _published("tora-code-34b", "gsm8k") == 80.7 and _published("tora-code-34b", "svamp") is None


def test_eval_unknown_dataset_is_a_usage_error() -> None:
    r = runner.invoke(app, ["eval", "nope", "--model", "x.gguf"])
    assert r.exit_code == 2 and "unknown data set" in r.output


# -- concurrency ---------------------------------------------------------------------------------

class _SlowSolver:
    """A thread-safe stand-in solver: problem "p<i>" takes `delays[i]` seconds; it counts the
    problems in flight and can fail one."""

    def __init__(self, delays: list[float], fail: str | None = None) -> None:
        import threading

        self.delays, self.fail = delays, fail
        self.lock = threading.Lock()
        self.running = self.peak = 0
        self.started: list[str] = []

    def solve(self, question: str, **kw) -> dict:
        with self.lock:
            self.started.append(question)
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.delays[int(question[1:])])
            if question == self.fail:
                from mathsolve.errors import EngineError

                raise EngineError("the server went away")
            return {"schema": "mathsolve.solution/1", "answer": question.upper(), "status": "finished"}
        finally:
            with self.lock:
                self.running -= 1


def _slow_problems(n: int):
    from mathsolve.core.problems import Problem

    return [Problem(f"id{i}", f"p{i}", f"f:{i + 1}") for i in range(n)]


def test_a_concurrent_batch_keeps_n_in_flight_and_writes_each_record_once(tmp_path: Path) -> None:
    from mathsolve.scoring.grader import Grader

    solver = _SlowSolver([0.15, 0.02, 0.08, 0.01, 0.05, 0.03, 0.02])
    seen = []
    with Grader() as grader, ResultsFile(tmp_path / "o.jsonl") as out:
        stats = run_batch(_slow_problems(7), solver, out=out, grader=grader, concurrency=3,
                          on_record=lambda record, st: seen.append((record["id"], st.done)))
    assert solver.peak == 3 and stats.done == 7
    ids = [json.loads(line)["id"] for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert sorted(ids) == [f"id{i}" for i in range(7)] and ids != sorted(ids)  # completion order
    assert [done for _, done in seen] == list(range(1, 8))  # progress counted in the calling thread
    with Grader() as grader, ResultsFile(tmp_path / "o.jsonl") as out:
        again = run_batch(_slow_problems(7), _SlowSolver([0] * 7), out=out, grader=grader, concurrency=3)
    assert again.skipped == 7 and again.done == 0


def test_a_failure_in_a_concurrent_batch_keeps_the_problems_in_flight_and_starts_no_more(tmp_path: Path) -> None:
    from mathsolve.errors import EngineError
    from mathsolve.scoring.grader import Grader

    solver = _SlowSolver([0.2, 0.2, 0.01] + [0.0] * 7, fail="p2")
    with Grader() as grader, ResultsFile(tmp_path / "o.jsonl") as out, pytest.raises(EngineError, match="went away"):
        run_batch(_slow_problems(10), solver, out=out, grader=grader, concurrency=3)
    assert sorted(solver.started) == ["p0", "p1", "p2"]  # p2 failed while p0 and p1 ran: nothing new started
    assert sorted(read_records(tmp_path / "o.jsonl")) == ["id0", "id1"]  # and those two were still written
