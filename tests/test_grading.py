"""Equivalence grading, the sympy worker process, ground truths and file re-grading."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mathsolve.scoring import grader as grader_client
from mathsolve.scoring.answer import EXTRACTION_STYLES
from mathsolve.scoring.grader import Grader, GradingError, latex_parser_available, math_equal
from mathsolve.scoring.ground_truth import DATASETS, parse_ground_truth
from mathsolve.scoring.records import builtin_styles
from mathsolve.scoring.regrade import grade_file

SHARED = Path(__file__).resolve().parents[2] / "shared"
EQUIVALENCE = SHARED / "data" / "grading" / "equivalence.jsonl"
REPLAY = SHARED / "data" / "replay" / "tora-code-34b-v1.0.gsm8k.jsonl"
EVAL_DIR = SHARED / "data" / "eval"

WORKER_PATH = Path(__file__).resolve().parents[1] / "mathsolve" / "scoring" / "sympy_worker.py"


def _shared_file(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (the shared folder sits beside the checkout)")
    return path


def _load_records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def grader() -> Any:
    with Grader() as shared:
        yield shared


# ---------------------------------------------------------------------------
# LaTeX parser availability: the whole suite must fail without it
# ---------------------------------------------------------------------------


def test_latex_parser_available() -> None:
    assert latex_parser_available(), (
        "sympy.parsing.latex.parse_latex does not work: install antlr4-python3-runtime 4.11 "
        "(pip install 'antlr4-python3-runtime==4.11.*'); without it LaTeX answers grade as wrong"
    )


FAKE_WORKER_WITHOUT_LATEX = """
import json, sys
print(json.dumps({"ready": True, "latex": False, "latex_error": "ImportError: antlr4"}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    print(json.dumps({"id": request.get("id"), "equal": False}), flush=True)
"""


def test_missing_latex_parser_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake_worker.py"
    fake.write_text(FAKE_WORKER_WITHOUT_LATEX, encoding="utf-8")
    monkeypatch.setattr(grader_client, "_WORKER_PATH", fake)
    monkeypatch.setattr(grader_client, "_default_grader", None)
    with Grader() as strict:
        assert strict.equal("5", "5.0")  # numbers need no parser
        with pytest.raises(GradingError, match="antlr4-python3-runtime"):
            strict.equal("x+y", "y+x")
    with Grader(require_latex=False) as lenient:
        assert lenient.latex_available() is False
    assert latex_parser_available() is False
    grader_client._close_shared_grader()


# ---------------------------------------------------------------------------
# math_equal
# ---------------------------------------------------------------------------


def _equivalence_pairs() -> list[Any]:
    if not EQUIVALENCE.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"shared data not found at {EQUIVALENCE}"))]
    pairs = [json.loads(line) for line in EQUIVALENCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [pytest.param(pair, id=f"{pair['prediction']}~{pair['reference']}") for pair in pairs]


@pytest.mark.parametrize("pair", _equivalence_pairs())
def test_equivalence_reference_pairs(pair: dict[str, Any]) -> None:
    assert math_equal(pair["prediction"], pair["reference"]) is pair["equivalent"]


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # Numbers, in process.
        ("18.0", "18", True),
        ("1234", "1,234", True),
        ("1,2", "12", False),
        ("-7", "7", False),
        ("0.3333", r"\frac{1}{3}", True),
        ("0.33", r"\frac{1}{3}", False),
        (r"\frac{0}{5}", "0", True),
        ("1" * 500, "5", False),
        ("1" * 5000, "1" * 5000 + "1", False),
        # Exact forms must be exactly equal, not within 1e-3.
        (r"\frac{22}{7}", r"\pi", False),
        ("3.14159", r"\pi", True),
        # Structures.
        ("(2,1)", "(1,2)", False),
        ("[1,2]", "[1,2)", False),
        (r"\{2,1\}", "{1,2}", True),
        ("5,3", "3,5", True),
        (r"(-\infty, 3]", r"(-\infty,3]", True),
        (r"x \in [1,2]", "[1,2]", True),
        (r"\begin{pmatrix}1&2\\4&3\end{pmatrix}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", False),
        (r"\text{(C)}", "C", True),
        # Symbolic, in the worker.
        ("(x+1)^2", "x^2+2x+1", True),
        (r"\sqrt{8}", r"2\sqrt{2}", True),
        (r"\sqrt{3}/2", r"\frac{\sqrt{3}}{2}", True),
        ("3", "x", False),
        ("10000000000", "10^{10}", True),
        # Python-style answers (printed by the model's code) are read as Python, and a
        # LaTeX parse that silently drops input ("2**10" as 2) never makes them equal.
        ("2**10", "1024", True),
        ("2**10", "2", False),
        ("sqrt(2)/2", r"\frac{\sqrt{2}}{2}", True),
        ("3 +", "3", False),
        # Nothing is never right.
        ("", "", False),
        ("", "0", False),
    ],
)
def test_math_equal_cases(prediction: str, reference: str, expected: bool) -> None:
    assert math_equal(prediction, reference) is expected


def test_percent_forms_only_on_request() -> None:
    # ToRA's grader accepts reference*100 and reference/100; it is opt-in here because
    # it also accepts "100" for "1" (the equivalence reference pairs say it must not).
    assert not math_equal("0.7", "70")
    assert math_equal("0.7", "70", percent=True)
    assert math_equal("70", "0.7", percent=True)
    assert not math_equal("7", "70", percent=True)


# ---------------------------------------------------------------------------
# The worker process: isolation, reuse, time-outs
# ---------------------------------------------------------------------------

HOSTILE = [
    "__import__('os').system('touch pwned')",
    "(lambda: __import__('os').system('touch pwned'))()",
    "x.__class__.__base__.__subclasses__()",
    "eval(\"__import__('os').system('touch pwned')\")",
    "getattr(__builtins__, 'exec')('open(\"pwned\", \"w\")')",
]


def test_hostile_answers_are_never_executed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    caller_dir = tmp_path / "caller"
    worker_dir = tmp_path / "worker"
    caller_dir.mkdir()
    worker_dir.mkdir()
    monkeypatch.chdir(caller_dir)
    with Grader(workdir=worker_dir) as isolated:
        for hostile in HOSTILE:
            assert isolated.equal(hostile, "0") is False
            assert isolated.equal("0", hostile) is False
            assert isolated.equal(hostile, "x + 1") is False
            # The text really went to the sympy side (and did nothing there either).
            assert isolated.worker_pid is not None
        assert isolated.restarts == 0
    assert not (caller_dir / "pwned").exists()
    assert not (worker_dir / "pwned").exists()
    assert math_equal(HOSTILE[0], "1") is False  # the module-level grader, cwd = caller_dir
    assert not (caller_dir / "pwned").exists()


def _load_worker_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_mathsolve_worker_under_test", WORKER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("hostile", HOSTILE)
def test_worker_refuses_hostile_text_before_parse_expr(hostile: str) -> None:
    # Second line of defence inside the worker: parse_expr (which evals) never sees it.
    worker = _load_worker_module()
    assert not worker._is_safe_for_parse_expr(worker._latex_to_python(hostile))


def test_cheap_comparisons_stay_in_process() -> None:
    with Grader() as lazy:
        assert lazy.equal("18.0", "18")
        assert lazy.equal(r"\$1,200", "1200")
        assert lazy.equal(r"\frac{4}{2}", "2")
        assert lazy.equal("(1,2)", r"\begin{pmatrix}1\\2\end{pmatrix}")
        assert lazy.worker_pid is None  # no sympy process was needed


def test_worker_is_a_separate_reused_process() -> None:
    with Grader() as reusing:
        assert reusing.equal("x+y", "y+x")
        pid = reusing.worker_pid
        assert pid is not None and pid != os.getpid()
        assert reusing.equal(r"\sqrt{8}", r"2\sqrt{2}")
        assert reusing.worker_pid == pid
    assert reusing.worker_pid is None


SLOW = r"\prod_{k=1}^{3000}(x+k)"  # sympy needs many seconds to expand and compare it


def test_timeout_counts_as_not_equal_and_restarts_the_worker() -> None:
    with Grader(timeout=0.5) as impatient:
        assert impatient.equal("x+y", "y+x")
        first_pid = impatient.worker_pid
        started = time.monotonic()
        assert impatient.equal(SLOW, "x") is False
        assert time.monotonic() - started < 5
        assert impatient.restarts == 1
        assert impatient.worker_pid is None  # the stuck worker was killed
        # The next comparison gets a fresh worker and works.
        assert impatient.equal("x+y", "y+x")
        assert impatient.worker_pid not in (None, first_pid)


def test_per_call_timeout_overrides_the_default(grader: Grader) -> None:
    assert grader.equal(SLOW, "x", timeout=0.3) is False
    assert grader.equal("2x", "x+x")


# ---------------------------------------------------------------------------
# Ground truths
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "dataset", "expected"),
    [
        ({"question": "q", "answer": "He has 2 + 3 = 5.\n#### 1,234"}, "gsm8k", "1234"),
        ({"problem": "p", "solution": r"So \boxed{\dfrac{9}{7}}.", "level": "Level 4"}, "math", r"\frac{9}{7}"),
        ({"problem": "p", "solution": "s", "answer": r"\left( 3, \frac{\pi}{2} \right)", "unique_id": "u"},
         "math500", r"(3,\frac{\pi}{2})"),
        ({"Body": "b", "Question": "q", "Equation": "( 290.0 / 2.0 )", "Answer": 145.0}, "svamp", "145"),
        ({"body": "b", "question": "q", "formula": "7+2=9", "answer": "9 (apples)"}, "asdiv", "9"),
        ({"input": "i", "target": 43.0, "type": "singleeq"}, "mawps", "43"),
        ({"input": "i", "code": "def solution(): ...", "target": -9867630.0}, "gsm-hard", "-9867630"),
        ({"id": 60, "problem": "p", "solution": r"\framebox{204}", "answer": "204", "url": "u"}, "aime24", "204"),
        ({"id": 0, "problem": "p", "answer": 27.0, "url": "u", "question": "q"}, "amc23", "27"),
        ({"problem": "p", "solution": r"$s=\boxed{1.6} \mathrm{~cm}$", "type": "Astronomy"}, "minerva_math", "1.6"),
        ({"Question": "q", "Answer": 11760, "Answer_type": "integer", "theorem": "t"}, "theoremqa", "11760"),
        ({"question": "List the prime factors of y.", "answer": "[3]"}, "deepmind-mathematics", "[3]"),
    ],
)
def test_parse_ground_truth(record: dict[str, Any], dataset: str, expected: str) -> None:
    assert parse_ground_truth(record, dataset) == expected
    assert parse_ground_truth(record) == expected  # detected from the fields


def test_parse_ground_truth_errors() -> None:
    with pytest.raises(ValueError, match="unknown data set"):
        parse_ground_truth({"answer": "1"}, "nope")
    with pytest.raises(ValueError, match="boxed"):
        parse_ground_truth({"problem": "p", "solution": "no box"}, "math")
    with pytest.raises(ValueError):
        parse_ground_truth({"foo": 1})


@pytest.mark.parametrize(
    "name",
    ["aime24.jsonl", "amc23.jsonl", "asdiv.jsonl", "deepmind-mathematics.json", "gsm-hard.jsonl", "gsm8k.jsonl",
     "math.jsonl", "math500.jsonl", "mawps.jsonl", "minerva_math.jsonl", "svamp.jsonl", "theoremqa.json"],
)
def test_every_evaluation_record_has_a_ground_truth(name: str) -> None:
    records = _load_records(_shared_file(EVAL_DIR / name))
    dataset = name.split(".")[0]
    assert dataset in DATASETS
    for record in records:
        answer = parse_ground_truth(record, dataset)
        assert answer, record
        assert parse_ground_truth(record) == answer


def test_math500_boxed_solutions_match_their_answer_field(grader: Grader) -> None:
    records = _load_records(_shared_file(EVAL_DIR / "math500.jsonl"))
    for record in records:
        assert grader.equal(parse_ground_truth(record, "math"), parse_ground_truth(record, "math500")), record["answer"]


# ---------------------------------------------------------------------------
# grade_file
# ---------------------------------------------------------------------------


def test_replay_regrade_reproduces_the_published_figure(tmp_path: Path) -> None:
    """ToRA-Code-34B on GSM8K: 1064/1319 = 80.7%, as published.

    Reference details that decide the count: ground truths such as "2,125" need
    thousands commas ignored (11 records); the percent forms turn 0.7 for "70" (and
    0.05 for "5") into right answers (2 records); one solution has no boxed answer and
    is read from its last ```output block.
    """
    started = time.monotonic()
    per_record = tmp_path / "per_record.jsonl"
    summary = grade_file(_shared_file(REPLAY), per_record=per_record)
    elapsed = time.monotonic() - started
    assert (summary.correct, summary.total, summary.errors, summary.skipped) == (1064, 1319, 0, 0)
    assert round(summary.accuracy * 100, 1) == 80.7
    assert elapsed < 60
    rows = [json.loads(line) for line in per_record.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 1319
    assert rows[0] == {"index": 0, "line": 1, "status": "graded", "prediction": "18", "reference": "18", "correct": True}
    assert sum(row["correct"] for row in rows) == 1064


def _write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n",
                    encoding="utf-8")
    return path


def _transcript(prompt: str, *parts: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": "prompt", "text": prompt}] + [{"role": role, "text": text} for role, text in parts]


def test_grade_file_formats_and_bad_lines(tmp_path: Path) -> None:
    records: list[Any] = [
        # (a) released ToRA output whose recorded pred is wrong: it is not trusted.
        {"idx": 0, "question": "q", "gt": "18", "code": [r"so $\boxed{18}$."], "pred": ["99"], "report": [None]},
        # (a) and the other way round: a recorded right pred does not rescue a wrong text.
        {"idx": 1, "question": "q", "gt": "3", "code": [r"$\boxed{4}$"], "pred": ["3"], "report": [None]},
        # (b) mathsolve records, one per extraction style.
        {"question": "q", "protocol": "tora", "reference": "9",
         "transcript": _transcript("<|user|>\nThe answer is \\boxed{1}\n<|assistant|>\n",
                                   ("model", "```python\nprint(9)\n```"), ("tool", "\n```output\n9\n```\n"),
                                   ("model", "So $\\boxed{9}$."))},
        {"question": "q", "protocol": "mathcoder", "reference": r"\frac{1}{2}",
         "transcript": _transcript("p", ("model", "<|text|>It is $\\boxed{0.5}$<|endofblock|>"))},
        {"question": "q", "protocol": "alpaca-cot", "reference": "72",
         "transcript": _transcript("p", ("model", "48+24=72 clips.\nTherefore, the answer is $72$."))},
        {"question": "q", "protocol": "alpaca-cot", "reference": "72", "status": "length",
         "transcript": _transcript("p", ("model", "Therefore, the answer is $72$ and then"))},
        {"question": "q", "protocol": "qwen-tir", "transcript": _transcript("p", ("model", r"\boxed{5}"))},
        # (c) answer pairs.
        {"reference": "70000", "prediction": r"\$70,000"},
        {"reference": "1", "prediction": "2"},
        # Bad lines.
        "{not json",
        {"protocol": "klingon", "transcript": []},
        {"reference": "1"},
        [1, 2],
        {"question": "q", "gt": "1", "code": "not a list", "pred": []},
    ]
    path = _write_jsonl(tmp_path / "mixed.jsonl", records[:9] + [""] + records[9:])  # a blank line is ignored
    per_record = tmp_path / "out.jsonl"
    summary = grade_file(path, per_record=per_record)

    assert [r.correct for r in summary.results[:9]] == [True, False, True, True, True, False, None, True, False]
    assert (summary.total, summary.correct, summary.skipped, summary.errors) == (8, 5, 1, 5)
    assert summary.accuracy == pytest.approx(5 / 8)
    assert summary.results[0].prediction == "18"
    assert summary.results[6].status == "skipped"
    # Error lines keep their line numbers (line 10 is the blank one).
    assert [message.split(":")[0] for message in summary.error_messages] == [
        "line 11", "line 12", "line 13", "line 14", "line 15"]
    assert "invalid JSON" in summary.error_messages[0]
    assert "unknown protocol" in summary.error_messages[1]
    rows = [json.loads(line) for line in per_record.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 14
    assert rows[7] == {"index": 7, "line": 8, "status": "graded", "prediction": "70,000", "reference": "70000",
                       "correct": True}


def test_every_protocol_has_an_extraction_style() -> None:
    # Read from the built-in protocol classes: the fallback for names no loaded plugin registers.
    styles = builtin_styles()
    assert set(styles) == {"tora", "qwen-tir", "qwen-cot", "numina", "deepseek-cot", "mathcoder", "alpaca-cot",
                           "chat-tir", "openmath-tir", "openmath-cot", "harmony", "qwen3-tir"}
    assert set(styles.values()) <= set(EXTRACTION_STYLES) == {"tora", "boxed", "dart"}


class _StyledProtocol:
    """A protocol registered by a test plugin: only what grading reads."""

    def __init__(self, name: str, answer_style: str) -> None:
        self.name, self.answer_style = name, answer_style


def _register_protocols(*protocols: _StyledProtocol) -> None:
    from mathsolve.hookspecs import hookimpl
    from mathsolve.plugins import get_plugin_manager

    class Plugin:
        @hookimpl
        def register_protocols(self, register):
            for protocol in protocols:
                register(protocol)

    get_plugin_manager().pm.register(Plugin(), name="test-protocols")


def test_grade_uses_the_registered_protocols_answer_style(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "The answer is 7." holds an answer for the ToRA rules and none for the boxed rules.
    transcript = _transcript("p", ("model", "The answer is 7."))
    records = [{"question": "q", "protocol": name, "reference": "7", "transcript": transcript}
               for name in ("test-boxed", "test-fallback", "test-bad-style")]
    path = _write_jsonl(tmp_path / "plugin.jsonl", records)
    # Without the plugin: the built-in fallback knows only "test-fallback" (as ToRA-styled).
    builtin = builtin_styles()
    monkeypatch.setattr("mathsolve.scoring.records.builtin_styles", lambda: {**builtin, "test-fallback": "tora"})
    before = grade_file(path)
    assert [r.status for r in before.results] == ["error", "graded", "error"]
    assert before.results[1].correct is True
    assert "unknown protocol 'test-boxed'" in before.error_messages[0]
    # A plugin protocol is graded with its own style, which wins over the built-in fallback.
    _register_protocols(_StyledProtocol("test-boxed", "boxed"), _StyledProtocol("test-fallback", "boxed"),
                        _StyledProtocol("test-bad-style", "klingon"))
    after = grade_file(path)
    assert [r.status for r in after.results] == ["graded", "graded", "error"]
    assert [r.correct for r in after.results[:2]] == [False, False]
    assert [r.prediction for r in after.results[:2]] == ["", ""]
    # A style that does not exist is that record's error, not a crash.
    assert "protocol 'test-bad-style'" in after.error_messages[0] and "klingon" in after.error_messages[0]


# ---------------------------------------------------------------------------
# Hostile files: decoding, unparsable lines, the --per-record destination
# ---------------------------------------------------------------------------

from typer.testing import CliRunner  # noqa: E402

from mathsolve.cli import app  # noqa: E402
from mathsolve.errors import EXIT_IO, EXIT_USAGE, IOFailure, UsageError  # noqa: E402

cli = CliRunner()
PAIRS = [{"reference": "4", "prediction": "4"}, {"reference": "1", "prediction": "2"}]


def _grade_cli(*args: Any):
    return cli.invoke(app, ["grade", *map(str, args)])


def _one_error_line(result: Any, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_cli_grade_refuses_a_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 8)
    _one_error_line(_grade_cli(path), EXIT_USAGE, f"{path} looks like a binary file, not text (NUL bytes at byte 5")


def test_cli_grade_refuses_latin1_prose_and_empty_files(tmp_path: Path) -> None:
    prose = tmp_path / "notes.txt"
    prose.write_bytes("Résultats de l'élève : très bien.\nDeuxième ligne.\n".encode("latin-1"))
    _one_error_line(_grade_cli(prose), EXIT_USAGE, f"{prose} has no readable records (is it JSONL?)")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    _one_error_line(_grade_cli(empty), EXIT_USAGE, "has no readable records")


def test_a_latin1_jsonl_file_still_grades_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"reference": "4", "prediction": "4", "note": "élève"}\n'
                     '{"reference": "1", "prediction": "2"}\n'.encode("latin-1"))
    summary = grade_file(path)
    assert (summary.total, summary.correct, summary.errors) == (2, 1, 0)
    assert summary.warnings == [f"{path}: 2 bytes are not UTF-8 (first at byte 47); replaced with U+FFFD"]
    r = _grade_cli(path)
    assert r.exit_code == 0 and "1/2 correct" in r.stdout, r.output


@pytest.mark.parametrize("encode", [
    lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"),
    lambda text: text.encode("utf-16"),
    lambda text: text.encode("utf-16-le"),
    lambda text: text.encode("utf-16-be"),
], ids=["utf8-bom", "utf16-bom", "utf16le", "utf16be"])
def test_bom_and_utf16_files_keep_their_first_record(tmp_path: Path, encode: Any) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(encode("".join(json.dumps(pair) + "\r\n" for pair in PAIRS)))
    summary = grade_file(path)
    assert (summary.total, summary.correct, summary.errors, summary.warnings) == (2, 1, 0, [])


def test_hostile_lines_are_counted_errors_among_graded_records(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    huge = "9" * 5000  # past Python's int conversion limit: kept as text, compared as text
    lines = [json.dumps(PAIRS[0]), deep, '{"reference": "x", "a": ' + '{"a":' * 100_000 + "1" + "}" * 100_001,
             f'{{"reference": {huge}, "prediction": "{huge}"}}', json.dumps(PAIRS[1]),
             '{"reference": "2", "prediction": "2", "x": "\\ud800"}', '{"reference": "3", "prediction": "\\udc80"}']
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    per_record = tmp_path / "per_record.jsonl"
    summary = grade_file(path, per_record=per_record)
    assert [r.status for r in summary.results] == ["graded", "error", "error", "graded", "graded", "graded", "graded"]
    assert summary.error_messages == ["line 2: nested deeper than 100 levels", "line 3: nested deeper than 100 levels"]
    assert summary.results[3].reference == huge and summary.results[3].correct is True
    rows = [json.loads(line) for line in per_record.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 7 and rows[-1]["prediction"] == "\udc80"  # a lone surrogate, written as an escape

    r = _grade_cli(path, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["total"], data["correct"], data["errors"]) == (5, 3, 2)


def test_cli_per_record_onto_the_input_is_refused_and_the_input_untouched(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "in.jsonl", PAIRS)
    before = path.read_bytes()
    _one_error_line(_grade_cli(path, "--per-record", path), EXIT_USAGE, "is the input file")
    assert path.read_bytes() == before
    link = tmp_path / "link.jsonl"  # the same file under another name
    link.symlink_to(path)
    _one_error_line(_grade_cli(path, "--per-record", link), EXIT_USAGE, "is the input file")
    assert path.read_bytes() == before


def test_cli_per_record_refuses_directories_and_files_it_did_not_write(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "in.jsonl", PAIRS)
    _one_error_line(_grade_cli(path, "--per-record", tmp_path), EXIT_USAGE, "is a directory")
    notes = tmp_path / "notes.jsonl"
    notes.write_bytes(b'{"question": "keep me"}\n')
    _one_error_line(_grade_cli(path, "--per-record", notes), EXIT_USAGE, "was not written by mathsolve")
    assert notes.read_bytes() == b'{"question": "keep me"}\n'
    out = tmp_path / "out.jsonl"
    assert _grade_cli(path, "--per-record", out).exit_code == 0
    assert _grade_cli(path, "--per-record", out).exit_code == 0  # its own earlier output: replaced
    assert [json.loads(line)["correct"] for line in out.read_text(encoding="utf-8").splitlines()] == [True, False]


def test_an_unreadable_file_is_an_io_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_jsonl(tmp_path / "in.jsonl", PAIRS)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(IOFailure, match=rf"^cannot read {path}: Permission denied$"):
        grade_file(path)
    _one_error_line(_grade_cli(path), EXIT_IO, f"cannot read {path}: Permission denied")


def test_a_failed_per_record_write_is_an_io_failure_and_keeps_the_old_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_jsonl(tmp_path / "in.jsonl", PAIRS)
    out = tmp_path / "out.jsonl"
    grade_file(path, per_record=out)
    before = out.read_bytes()

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(IOFailure, match="No space left on device"):
        grade_file(path, per_record=out)
    assert out.read_bytes() == before


def test_a_bad_per_record_destination_is_refused_before_grading(tmp_path: Path) -> None:
    # The file is not even read: a binary input would have been a different error.
    path = tmp_path / "in.bin"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(UsageError, match="is the input file"):
        grade_file(path, per_record=path)
