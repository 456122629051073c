"""`--grader reference|math-verify|auto`: the modern grader beside the reference one.

Real parts: math-verify in its real worker process, the reference grader's sympy worker,
`mathsolve grade` and `mathsolve eval` through the installed command's entry point, a tiny
real GGUF model. The verdicts below were measured with math-verify 0.9.0, not assumed.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mathsolve.errors import EXIT_USAGE, UsageError
from mathsolve.formats.base import Protocol
from mathsolve.scoring.graders import GRADERS, GraderPool, effective_grader, open_grader, protocol_grader
from mathsolve.scoring.mathverify_grader import MathVerifyGrader, math_verify_installed
from mathsolve.scoring.regrade import grade_file
from tests.cli_run import run_cli

SHARED = Path(__file__).resolve().parents[2] / "shared"
EQUIVALENCE = SHARED / "data" / "grading" / "equivalence.jsonl"
REPLAY = SHARED / "data" / "replay" / "tora-code-34b-v1.0.gsm8k.jsonl"

needs_math_verify = pytest.mark.skipif(
    not math_verify_installed(), reason="the math-verify package is not installed (pip install 'math-verify>=0.9,<0.10')")


def _shared(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"shared data not found at {path} (the shared folder sits beside the checkout)")
    return path


@pytest.fixture(autouse=True)
def _no_grader_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MATHSOLVE_GRADER", raising=False)


@pytest.fixture(scope="module")
def math_verify() -> Any:
    if not math_verify_installed():
        pytest.skip("the math-verify package is not installed (pip install 'math-verify>=0.9,<0.10')")
    with MathVerifyGrader() as grader:
        yield grader


@pytest.fixture(scope="module")
def reference() -> Any:
    with open_grader("reference", percent=False) as grader:
        yield grader


@pytest.fixture(scope="module")
def pool() -> Any:
    """Graders for grade_file, as `mathsolve grade` opens them, shared to start fewer workers."""
    with GraderPool() as graders:
        yield graders


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# Our own pairs: where the reference grader is wrong (measured for each grader)
# ---------------------------------------------------------------------------

# (prediction, reference, reference grader's verdict, math-verify's verdict); right: all equal.
OUR_PAIRS = [
    # A mixed number: sympy reads "2\frac{1}{3}" as 2 * 1/3; math-verify knows mixed numbers.
    pytest.param("2\\frac{1}{3}", "\\frac{7}{3}", False, True, id="mixed number"),
    # Units in \text{}: both graders get it wrong. The reference normalisation keeps a \text{}
    # that is the whole answer ("12dollars"); math-verify parses it as the product
    # 12*d*o*l*l*a*r*s (math-verify 0.9.0).
    pytest.param("\\text{12 dollars}", "12", False, False, id="units in text (both wrong)"),
    # A prediction still carrying \boxed{}: math-verify extracts the boxed content.
    pytest.param("\\boxed{4}", "4", False, True, id="boxed prediction"),
]


@needs_math_verify
@pytest.mark.parametrize(("prediction", "gold", "by_reference", "by_math_verify"), OUR_PAIRS)
def test_our_pairs_get_each_graders_measured_verdict(prediction: str, gold: str, by_reference: bool,
                                                     by_math_verify: bool, reference: Any, math_verify: Any) -> None:
    assert reference.equal(prediction, gold) is by_reference
    assert math_verify.equal(prediction, gold) is by_math_verify


@needs_math_verify
def test_our_pairs_through_grade_file_give_the_same_verdicts(tmp_path: Path, pool: Any) -> None:
    # As answer pairs the prediction is normalised first (strip_string), as every extracted answer is.
    rows = [{"reference": p.values[1], "prediction": p.values[0]} for p in OUR_PAIRS]
    path = _write_jsonl(tmp_path / "ours.jsonl", rows)
    for choice, column in (("reference", 2), ("math-verify", 3)):
        summary = grade_file(path, choice=choice, grader=pool)
        assert [r.correct for r in summary.results] == [p.values[column] for p in OUR_PAIRS], choice
        assert summary.graders == {choice: 3}


@needs_math_verify
def test_math_verify_on_the_equivalence_pairs_misses_two(math_verify: Any, reference: Any) -> None:
    pairs = [json.loads(line) for line in _shared(EQUIVALENCE).read_text(encoding="utf-8").splitlines()]
    from mathsolve.scoring.answer import strip_string

    wrong = [(p["prediction"], p["reference"]) for p in pairs
             if math_verify.equal(strip_string(p["prediction"]), p["reference"]) is not p["equivalent"]]
    # Measured: a column vector against a tuple, and Python's e-notation against 10^{-7}.
    assert wrong == [("(1,2)", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"), ("3.54e-07", "3.54*10^{-7}")]
    # The reference grader keeps every verdict with math-verify installed beside it.
    assert all(reference.equal(p["prediction"], p["reference"]) is p["equivalent"] for p in pairs)


@needs_math_verify
def test_tora_code_34b_gsm8k_replay_math_verify_disagrees_only_on_percent_forms(pool: Any) -> None:
    replay = _shared(REPLAY)
    by_reference = grade_file(replay, choice="reference", grader=pool)
    by_math_verify = grade_file(replay, choice="math-verify", grader=pool)
    assert (by_reference.correct, by_reference.total, by_reference.graders) == (1064, 1319, {"reference": 1319})
    assert (by_math_verify.correct, by_math_verify.total) == (1062, 1319)
    assert by_math_verify.graders == {"math-verify": 1319}
    differ = [(a.index, a.prediction, a.reference) for a, b in zip(by_reference.results, by_math_verify.results)
              if a.correct != b.correct]
    # The reference harness's percent forms: 0.05 for 5 and 0.7 for 70 count as right there.
    assert differ == [(191, "0.05", "5"), (806, "0.7", "70")]
    # `auto` grades released files (no protocol) with the reference grader.
    assert grade_file(replay, grader=pool).correct == 1064


# ---------------------------------------------------------------------------
# The worker: signals in its main thread, killed when late, safe from threads
# ---------------------------------------------------------------------------


@needs_math_verify
def test_math_verify_in_a_thread_cannot_arm_its_alarms() -> None:
    """Why the worker exists: in-process, from a batch's worker thread, math-verify gives no
    verdict (its SIGALRM time limits need the main thread)."""
    import math_verify

    assert math_verify.parse("$2\\frac{1}{3}$")  # the main thread: parsed
    outcome: list[object] = []

    def parse_in_thread() -> None:
        try:
            outcome.append(math_verify.parse("$2\\frac{1}{3}$"))
        except ValueError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=parse_in_thread)
    thread.start()
    thread.join()
    assert outcome and (outcome[0] == [] or isinstance(outcome[0], ValueError)), outcome


@needs_math_verify
def test_graders_shared_by_threads_give_verdicts(math_verify: Any) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def judge(k: int) -> None:
        verdict = math_verify.equal(f"{k}\\frac{{1}}{{3}}", f"\\frac{{{3 * k + 1}}}{{3}}")
        with lock:
            results.append(verdict)

    threads = [threading.Thread(target=judge, args=(k,)) for k in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 8


@needs_math_verify
def test_a_pathological_answer_is_not_equal_within_the_limit(math_verify: Any) -> None:
    started = time.monotonic()
    assert math_verify.equal("10^{10^{10^{10}}}", "1", timeout=1) is False
    assert time.monotonic() - started < 10
    assert math_verify.equal("\\frac{14}{6}", "2\\frac{1}{3}") is True  # the same worker goes on


@needs_math_verify
def test_a_worker_that_does_not_answer_is_killed_and_replaced() -> None:
    with MathVerifyGrader(timeout=0.5) as grader:
        assert grader.equal("0.5", "\\frac{1}{2}") is True
        stuck = grader.worker_pid
        assert stuck is not None and stuck != os.getpid()
        os.kill(stuck, signal.SIGSTOP)  # stuck where no alarm of its own can help
        started = time.monotonic()
        assert grader.equal("0.5", "\\frac{1}{2}") is False  # late: not equal
        assert time.monotonic() - started < 5
        assert grader.restarts == 1
        with pytest.raises(ProcessLookupError):
            os.kill(stuck, 0)  # killed and reaped
        assert grader.equal("0.5", "\\frac{1}{2}") is True
        assert grader.worker_pid not in (None, stuck)


def test_an_empty_prediction_needs_no_worker() -> None:
    with MathVerifyGrader() as grader:
        assert grader.equal("", "4") is False and grader.equal("   ", "") is False
        assert grader.worker_pid is None


@needs_math_verify
def test_a_pathological_record_does_not_hang_grade(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "hostile.jsonl", [
        {"reference": "1", "prediction": "10^{10^{10^{10}}}"},
        {"reference": "\\frac{7}{3}", "prediction": "2\\frac{1}{3}"},
    ])
    started = time.monotonic()
    # `mathsolve grade --grader math-verify` with a 1 s limit instead of math-verify's 5 s.
    with MathVerifyGrader(timeout=1) as grader:
        summary = grade_file(path, grader=grader)
    assert time.monotonic() - started < 15
    assert [r.correct for r in summary.results] == [False, True] and summary.graders == {"math-verify": 2}


# ---------------------------------------------------------------------------
# Choosing the grader: auto, protocols, records' run, bad values
# ---------------------------------------------------------------------------


class _ModernProtocol(Protocol):
    """A protocol graded the way today's harnesses grade; its answer follows "FINAL:"."""

    name = "test-modern"
    grader = "math-verify"
    answer_style = "tora"

    def answer_text(self, solution: str) -> str:
        return solution.rsplit("FINAL:", 1)[-1]


class _BrokenProtocol(Protocol):
    name = "test-broken"
    grader = "by-eye"


def _register(*protocols: Protocol) -> None:
    from mathsolve.hookspecs import hookimpl
    from mathsolve.plugins import get_plugin_manager

    class Plugin:
        @hookimpl
        def register_protocols(self, register):
            for protocol in protocols:
                register(protocol)

    # conftest's isolated_user resets the plugin manager before every test.
    get_plugin_manager().pm.register(Plugin(), name="test-grader-protocols")


def test_auto_means_the_protocols_grader_and_reference_when_unknown() -> None:
    from mathsolve.formats import builtin_protocols
    from mathsolve.formats.tora import ToraProtocol

    assert effective_grader("auto", None) == "reference"
    assert effective_grader("auto", ToraProtocol()) == "reference"
    assert effective_grader("auto", _ModernProtocol()) == "math-verify"
    assert effective_grader("reference", _ModernProtocol()) == "reference"
    assert effective_grader("math-verify", ToraProtocol()) == "math-verify"
    assert all(protocol_grader(cls()) in GRADERS for cls in builtin_protocols())
    with pytest.raises(UsageError, match="unknown grader 'by-eye'"):
        effective_grader("auto", _BrokenProtocol())
    with pytest.raises(UsageError, match="unknown grader 'foo'"):
        effective_grader("foo", None)


def test_the_runs_grader_is_recorded_with_auto_resolved(tiny_bpe: Path) -> None:
    from mathsolve.core.provenance import run_settings
    from mathsolve.settings import Settings

    _register(_ModernProtocol())
    model = str(tiny_bpe)
    assert run_settings(Settings({"model": model, "protocol": "tora"}), 1)["grader"] == "reference"
    assert run_settings(Settings({"model": model, "protocol": "test-modern"}), 1)["grader"] == "math-verify"
    explicit = Settings({"model": model, "protocol": "test-modern", "grader": "reference"})
    assert run_settings(explicit, 1)["grader"] == "reference"
    from_env = Settings({"model": model, "protocol": "tora"}, env={"MATHSOLVE_GRADER": "math-verify"})
    assert run_settings(from_env, 1)["grader"] == "math-verify"


def _record(protocol: str, text: str, reference: str, **extra: Any) -> dict[str, Any]:
    return {"question": "q", "protocol": protocol, "reference": reference, "status": "finished",
            "transcript": [{"role": "prompt", "text": "Question: q\n"}, {"role": "thinking", "text": "<think>it is 5"},
                           {"role": "model", "text": "</think>" + text}, {"role": "note", "text": ""}], **extra}


def test_grade_reads_with_answer_text_and_picks_each_records_grader(tmp_path: Path, pool: Any) -> None:
    _register(_ModernProtocol(), _BrokenProtocol())
    rows = [
        # answer_text keeps what follows "FINAL:": the boxed 3 before it (which the ToRA rules
        # would prefer to "The answer is") is not the answer.
        _record("test-modern", "\\boxed{3} FINAL: The answer is 7.", "7"),
        # Graded by its protocol's grader (math-verify), unless its run names another.
        _record("test-modern", "FINAL: \\boxed{2\\frac{1}{3}}", "\\frac{7}{3}"),
        _record("test-modern", "FINAL: \\boxed{2\\frac{1}{3}}", "\\frac{7}{3}", run={"grader": "reference"}),
        _record("tora", "The answer is 5.", "5"),  # a built-in protocol of the reference family
        _record("test-broken", "\\boxed{1}", "1"),  # a protocol naming a grader that does not exist
        {"reference": "4", "prediction": "4"},  # an answer pair: no protocol, reference
    ]
    path = _write_jsonl(tmp_path / "records.jsonl", rows)
    if not math_verify_installed():
        pytest.skip("the math-verify package is not installed (pip install 'math-verify>=0.9,<0.10')")
    auto = grade_file(path, grader=pool)
    assert [r.prediction for r in auto.results[:4]] == ["7", "2\\frac{1}{3}", "2\\frac{1}{3}", "5"]
    assert [r.grader for r in auto.results] == ["math-verify", "math-verify", "reference", "reference", None,
                                                "reference"]
    assert [r.correct for r in auto.results] == [True, True, False, True, None, True]
    assert auto.results[4].status == "error" and "unknown grader 'by-eye'" in auto.results[4].message
    assert auto.graders == {"math-verify": 2, "reference": 3}
    # An explicit choice judges every record with that grader.
    everything = grade_file(path, choice="math-verify", grader=pool)
    assert everything.graders == {"math-verify": 5}
    assert [r.correct for r in everything.results] == [True, True, True, True, None, True]
    with pytest.raises(UsageError, match="unknown grader"):
        grade_file(path, choice="by-eye")


def test_records_with_thinking_and_note_segments_are_read_as_the_solver_read_them(tmp_path: Path,
                                                                                   pool: Any) -> None:
    # The reasoning says 5; the reply after it says 6: both are part of the solution text.
    path = _write_jsonl(tmp_path / "r.jsonl", [_record("tora", "The answer is 6.", "6")])
    summary = grade_file(path, choice="reference", grader=pool)
    assert summary.errors == 0 and summary.results[0].prediction == "6" and summary.correct == 1


@pytest.mark.parametrize("command", ["grade", "eval"])
def test_a_bad_grader_flag_is_a_one_line_usage_error(command: str, tmp_path: Path, tiny_bpe: Path) -> None:
    path = _write_jsonl(tmp_path / "pairs.jsonl", [{"reference": "4", "prediction": "4"}])
    args = [command, str(path), "--grader", "foo"]
    result = run_cli(*args, *(["--model", str(tiny_bpe), "--protocol", "tora"] if command == "eval" else []))
    _one_usage_line(result, "error: setting grader from flag --grader: expected one of auto, reference, math-verify")


def test_a_bad_grader_setting_stops_a_run_but_not_a_regrade(tmp_path: Path, tiny_bpe: Path) -> None:
    problems = _write_jsonl(tmp_path / "set.jsonl", [{"question": "What is 1 + 1?", "answer": "2"}])
    env = {"MATHSOLVE_GRADER": "bogus"}
    for run in (["eval", str(problems)], [str(problems), "-o", str(tmp_path / "out.jsonl")]):  # eval, a solve batch
        result = run_cli(*run, "--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "4", env=env)
        _one_usage_line(result, "error: setting grader from env MATHSOLVE_GRADER: expected one of auto, reference")
    assert not (tmp_path / "out.jsonl").exists()
    # `grade` takes --grader only: by default it re-grades each record as it says it was graded.
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [{"reference": "4", "prediction": "4"}])
    regraded = run_cli("grade", str(pairs), "--json", env=env)
    assert regraded.code == 0 and json.loads(regraded.stdout)["graders"] == {"reference": 1}, regraded.stderr


def test_without_math_verify_installed_it_says_how_to_install_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mathsolve.scoring.mathverify_grader.math_verify_installed", lambda: False)
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [{"reference": "4", "prediction": "4"}])
    result = run_cli("grade", str(pairs), "--grader", "math-verify")
    lines = result.stderr.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.stderr  # the environment, not a bug: usage
    assert "needs the math-verify package" in lines[0] and "pip install 'math-verify" in lines[0]
    assert run_cli("grade", str(pairs)).code == 0  # the reference grader does not need it


def _one_usage_line(result: Any, start: str) -> None:
    assert result.code == EXIT_USAGE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr


# ---------------------------------------------------------------------------
# eval: every record graded by the run's grader, named in the records and the report
# ---------------------------------------------------------------------------


@needs_math_verify
def test_eval_grades_with_the_chosen_grader_and_grade_reproduces_it(tiny_bpe: Path, tmp_path: Path) -> None:
    problems = _write_jsonl(tmp_path / "set.jsonl", [{"question": f"What is {k} + {k}?", "answer": str(2 * k)}
                                                     for k in (1, 2)])
    out = tmp_path / "out.jsonl"
    base = ["eval", str(problems), "--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "4",
            "-o", str(out), "--json"]
    result = run_cli(*base, "--grader", "math-verify")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["grader"] == report["run"]["grader"] == "math-verify" and report["graded"] == 2
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["run"]["grader"] for r in records] == ["math-verify", "math-verify"]
    # Re-grading (auto) follows the records' run: the same grader, the same figure.
    regraded = json.loads(run_cli("grade", str(out), "--json").stdout)
    assert regraded["graders"] == {"math-verify": 2} and regraded["correct"] == report["correct"]
    # Resuming into the file with another grader would mix two experiments: refused.
    mixed = run_cli(*base)  # auto: tora's grader, the reference one
    assert mixed.code == EXIT_USAGE and "grader: math-verify -> reference" in mixed.stderr, mixed.stderr


@needs_math_verify
@pytest.mark.parametrize(("name", "groups", "correct"), [
    ("reference", [1, 1, 1], False),  # sympy reads 2\frac{1}{3} as 2/3: three groups, the first wins
    ("math-verify", [2, 1], True),  # 2\frac{1}{3} and \frac{7}{3} vote together
])
def test_a_batch_votes_and_judges_with_its_grader_and_grade_agrees(name: str, groups: list[int], correct: bool,
                                                                   tmp_path: Path, pool: Any) -> None:
    from mathsolve.api import Solver
    from mathsolve.core.batch import ResultsFile, run_batch
    from mathsolve.core.problems import Problem
    from mathsolve.engines.scripted import ScriptedEngine

    script = [["\\boxed{2\\frac{1}{3}}"], ["\\boxed{3}"], ["\\boxed{\\frac{7}{3}}"]]
    solver = Solver(engine=ScriptedEngine(script), protocol="qwen-cot", model="s")
    problems = [Problem("p1", "What is 7/3 as a mixed number?", "f:1", reference="\\frac{7}{3}")]
    out = tmp_path / "out.jsonl"
    with ResultsFile(out) as results:  # the grader eval opens: the pool's, percent forms on
        run_batch(problems, solver, out=results, grader=pool.get(name), samples=3, run={"grader": name})
    record = json.loads(out.read_text(encoding="utf-8"))
    assert [g["count"] for g in record["vote"]["groups"]] == groups
    assert record["answer"] == "2\\frac{1}{3}" and record["correct"] is correct and record["vote"]["pass"] is True
    regraded = grade_file(out, grader=pool)  # auto: the grader the record's run names
    assert regraded.graders == {name: 1} and regraded.correct == int(correct)


def test_eval_reports_the_protocols_grader_by_default(tiny_bpe: Path, tmp_path: Path) -> None:
    problems = _write_jsonl(tmp_path / "set.jsonl", [{"question": "What is 1 + 1?", "answer": "2"}])
    args = ["eval", str(problems), "--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "4",
            "-o", str(tmp_path / "out.jsonl")]
    result = run_cli(*args, env={"COLUMNS": "200"})
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "protocol" in line and "grader" in line)
    columns = [cell.strip() for cell in lines[header].split("┃")]  # rich: heavy rules in the header
    cells = [cell.strip() for cell in lines[header + 2].split("│")]
    assert cells[columns.index("grader")] == "reference", result.stdout
    assert json.loads(run_cli(*args, "--json").stdout)["grader"] == "reference"
