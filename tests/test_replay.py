"""`mathsolve replay`: reading recorded blocks, re-running them in the sandbox, comparing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mathsolve import registry
from mathsolve.cli import app
from mathsolve.errors import EXIT_CHECK_FAILED, EXIT_USAGE
from mathsolve.replay.compare import classify, configured
from mathsolve.replay.core import read_blocks, replay_file
from mathsolve.replay.runner import run_blocks
from mathsolve.replay.summary import rate_threshold
from mathsolve.scoring.records import BadRecord, record_blocks, text_blocks
from mathsolve.tools import ToolResult, ToolRouter

SHARED = Path(__file__).resolve().parents[2] / "shared"
TORA_GSM8K = SHARED / "data" / "replay" / "tora-code-34b-v1.0.gsm8k.jsonl"

runner = CliRunner()


def _write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n",
                    encoding="utf-8")
    return path


def _solution(*rounds: tuple[str, str]) -> str:
    """A ToRA solution text: each round's code block followed by its recorded output."""
    return "".join(f"Step.\n```python\n{code}```\n```output\n{output}\n```\n" for code, output in rounds) \
        + "So the answer is $\\boxed{5}$."


# Three rounds: a result that matches, an error, a program printing nothing (`Done`).
RELEASED = {
    "idx": 7, "question": "q", "gt": "5", "pred": ["5"], "report": [None],
    "code": [_solution(("print(2 + 3)\n", "5"),
                       ("print(undefined_name)\n", "NameError: name 'undefined_name' is not defined"),
                       ("x = 1\n", "Done"))],
}
# A recorded output this program cannot give: the mismatch.
WRONG = {"idx": 8, "question": "q", "gt": "6", "code": [_solution(("print(6)\n", "7"))], "pred": ["7"], "report": [None]}
CORPUS = {
    "dataset": "tora-corpus-math", "id": "math-train-1-0", "gt": "4",
    "messages": [{"role": "user", "content": "What is 2+2?"},
                 {"role": "assistant", "content": _solution(("print(0.1 + 0.2)\n", "0.30000000000000004"))}],
}
MATHSOLVE = {
    "schema": "mathsolve.solution/1", "question": "q", "protocol": "tora", "answer": "9",
    "transcript": [{"role": "prompt", "text": "<|user|>\nq\n<|assistant|>\n"}],
    "tool_calls": [{"index": 0, "round": 0, "tool": "python", "code": "print(9)\n",
                    "observation": "\n```output\n9\n```\n", "status": "ok"},
                   {"index": 1, "round": 1, "tool": "python", "code": "print('a')\nprint('b')\n",
                    "observation": "\n```output\na\nb\n```\n", "status": "ok"}],
}


def _blocks(record: Any) -> tuple[str, list[Any]]:
    return record_blocks(record, position=0, line=1)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def test_released_tora_record_gives_each_program_and_its_recorded_output() -> None:
    kind, blocks = _blocks(RELEASED)
    assert kind == "tora-release"
    assert [(b.record, b.number, b.code, b.recorded) for b in blocks] == [
        (7, 1, "print(2 + 3)\n", "5"),
        (7, 2, "print(undefined_name)\n", "NameError: name 'undefined_name' is not defined"),
        (7, 3, "x = 1\n", "Done"),
    ]
    assert all(b.result_only and b.protocol == "tora" for b in blocks)


def test_the_program_is_the_last_python_block_before_the_output() -> None:
    text = "```python\nprint(1)\n```\nNo, again:\n```python\nprint(2)\n```\n```output\n2\n```\nEnd.\n"
    assert text_blocks(text) == [("print(2)\n", "2")]
    # An output before any code block ran an empty program.
    assert text_blocks("```output\nDone\n```\n") == [("", "Done")]


def test_corpus_and_mathsolve_records() -> None:
    kind, blocks = _blocks(CORPUS)
    assert kind == "tora-corpus"
    assert [(b.record, b.code, b.recorded) for b in blocks] == [
        ("math-train-1-0", "print(0.1 + 0.2)\n", "0.30000000000000004")]
    kind, blocks = _blocks(MATHSOLVE)
    assert kind == "mathsolve"
    assert [(b.record, b.number, b.recorded, b.result_only, b.tool) for b in blocks] == [
        (0, 1, "\n```output\n9\n```\n", False, "python"), (0, 2, "\n```output\na\nb\n```\n", False, "python")]


@pytest.mark.parametrize("record, message", [
    ([1, 2], "not a JSON object"),
    ({"idx": 1, "code": "not a list"}, "'code' must be a list"),
    ({"messages": [{"role": "assistant", "content": 3}]}, "content must be a string"),
    ({"protocol": "tora", "tool_calls": [{"code": "print(1)"}]}, "tool call 0"),
    ({"protocol": "klingon", "tool_calls": []}, "unknown protocol 'klingon'"),
    ({"question": "q"}, "unrecognised record"),
])
def test_bad_records_are_refused_with_a_reason(record: Any, message: str) -> None:
    with pytest.raises(BadRecord, match=message):
        _blocks(record)


def test_read_blocks_counts_records_and_keeps_line_numbers(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "in.jsonl", [RELEASED, "", "{not json", WRONG, CORPUS])
    summary, blocks = read_blocks(path)
    assert summary.records == 4  # the blank line is not a record
    assert summary.errors == [f"line 3: invalid JSON: {summary.errors[0].split('invalid JSON: ')[1]}"]
    assert [b.line for b in blocks] == [1, 1, 1, 4, 5]
    # offset/limit count records, the unreadable one included.
    summary, blocks = read_blocks(path, offset=2, limit=1)
    assert summary.records == 1 and [b.record for b in blocks] == [8]


# ---------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("recorded, ours, kind", [
    ("3.0", "Timeout Error", "timeout"),
    ("ZeroDivisionError: division by zero", "ZeroDivisionError: integer division or modulo by zero", "error-message"),
    ("IndexError: list index out of range", "12", "error-vs-value"),
    ("0.30000000000000004", "0.3", "float-format"),
    ("x = 1.5000000", "x = 1.5", "float-format"),
    ("b", "a\nb", "last-line"),
    ("m - 35", "-35 + m", "term-order"),
    ("aaaa...zzzz", "aaaaa...zzzzz", "truncation"),
    ("7", "6", "value"),
])
def test_classify(recorded: str, ours: str, kind: str) -> None:
    assert classify(recorded, ours) == kind


def test_a_mathsolve_observation_mismatch_is_classified_by_its_content(tmp_path: Path) -> None:
    record = {**MATHSOLVE, "tool_calls": [
        {"index": 0, "tool": "python", "code": "print(1 / 0)\n", "observation": "\n```output\n12\n```\n"},
        {"index": 1, "tool": "python", "code": "print(0.1 + 0.2)\n", "observation": "\n```output\n0.3\n```\n"}]}
    summary = replay_file(_write_jsonl(tmp_path / "own.jsonl", [record]), jobs=2)
    assert summary.release == "as recorded" and summary.matched == 0
    assert [(m.kind, m.ours) for m in summary.mismatches] == [
        ("error-vs-value", "```output\nZeroDivisionError: division by zero\n```"),
        ("float-format", "```output\n0.30000000000000004\n```")]


def test_configured_copy_leaves_the_registered_protocol_alone() -> None:
    shared = registry.protocol("tora")
    before = (shared.last_line_only, shared.truncate_at)
    first = configured(shared, "first")
    assert (first.last_line_only, first.truncate_at) == (True, 100) and first is not shared
    assert (registry.protocol("tora").last_line_only, registry.protocol("tora").truncate_at) == before


def test_rate_threshold_accepts_fractions_and_percentages() -> None:
    assert rate_threshold(None) is None
    assert rate_threshold(0.98) == 0.98 and rate_threshold(98) == pytest.approx(0.98)
    with pytest.raises(Exception, match="--min-rate"):
        rate_threshold(120)


def test_replay_runs_each_block_in_the_sandbox(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "mixed.jsonl", [RELEASED, WRONG, CORPUS, MATHSOLVE])
    summary = replay_file(path, jobs=2)
    assert (summary.records, summary.blocks, summary.matched) == (4, 7, 6)
    assert summary.formats == {"tora-release": 2, "tora-corpus": 1, "mathsolve": 1}
    [mismatch] = summary.mismatches
    assert (mismatch.record, mismatch.block, mismatch.kind, mismatch.recorded, mismatch.ours) == (8, 1, "value", "7", "6")
    # A released file tie-breaks to the first release, which wrote them.
    assert summary.release == "first" and summary.release_scores == {"first": 4, "current": 4}


class _FakeProtocol:
    def __init__(self, name: str, stateful: bool) -> None:
        self.name, self.stateful_tool, self.tool, self.tool_timeout_s = name, stateful, "fake", 5.0


class _FakeTool:
    """Records which blocks ran alone and which ran in one session."""

    name, description = "fake", "test double"

    def __init__(self) -> None:
        self.alone: list[str] = []
        self.sessions: list[list[str]] = []

    def run(self, code: str, *, limits: Any, prelude: str = "") -> ToolResult:
        self.alone.append(code)
        return ToolResult("fake", "ok", stdout=code)

    def open_session(self, limits: Any) -> Any:
        ran: list[str] = []
        self.sessions.append(ran)
        tool = self

        class Session:
            def run(self, code: str) -> ToolResult:
                ran.append(code)
                return ToolResult(tool.name, "ok", stdout=f"{code} after {len(ran) - 1}")

            def close(self) -> None:
                ran.append("closed")

        return Session()


def test_a_stateful_protocols_record_replays_in_one_session() -> None:
    from mathsolve.scoring.records import Block

    protocols = {"kernel": _FakeProtocol("kernel", True), "fresh": _FakeProtocol("fresh", False)}
    blocks = [Block(0, 1, 1, "a", "", "kernel", result_only=False), Block(0, 1, 2, "b", "", "kernel", result_only=False),
              Block(1, 2, 1, "c", "", "fresh"), Block(1, 2, 2, "d", "", "fresh"),
              Block(2, 3, 1, "e", "", "kernel", result_only=False)]
    tool = _FakeTool()
    results = run_blocks(blocks, router=ToolRouter({"fake": tool}), protocols=protocols.__getitem__, jobs=2)
    assert [r.stdout for r in results] == ["a after 0", "b after 1", "c", "d", "e after 0"]
    assert sorted(tool.alone) == ["c", "d"]
    assert sorted(tool.sessions) == [["a", "b", "closed"], ["e", "closed"]]


def test_auto_release_follows_the_evidence(tmp_path: Path) -> None:
    two_lines = "print('a')\nprint('b')\n"
    last_line = {"idx": 0, "question": "q", "code": [_solution((two_lines, "b"))]}
    whole = {"idx": 1, "question": "q", "code": [_solution((two_lines, "a\nb"))]}
    first = replay_file(_write_jsonl(tmp_path / "first.jsonl", [last_line]), jobs=1)
    assert (first.release, first.matched) == ("first", 1)
    current = replay_file(_write_jsonl(tmp_path / "current.jsonl", [whole]), jobs=1)
    assert (current.release, current.matched) == ("current", 1)
    forced = replay_file(tmp_path / "current.jsonl", release="first", jobs=1)
    assert forced.matched == 0 and forced.mismatches[0].ours == "b"


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def _run(*args: str):
    return runner.invoke(app, ["replay", *map(str, args)])


def test_cli_json_shape_mismatch_file_and_bad_lines(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "in.jsonl", [RELEASED, "{not json", WRONG])
    mismatches = tmp_path / "mismatches.jsonl"
    r = _run(path, "--json", "--jobs", "2", "--mismatches", mismatches)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert {"file", "formats", "protocol", "release", "release_scores", "tool", "jobs", "records", "blocks",
            "matched", "mismatched", "rate", "elapsed_s", "blocks_per_s", "classes", "errors",
            "error_messages"} == set(data)
    assert (data["records"], data["blocks"], data["matched"], data["mismatched"]) == (3, 4, 3, 1)
    assert data["rate"] == pytest.approx(0.75) and data["classes"] == {"value": 1}
    assert data["errors"] == 1 and data["error_messages"][0].startswith("line 2: invalid JSON")
    rows = [json.loads(line) for line in mismatches.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"record": 8, "line": 3, "block": 1, "kind": "value", "recorded": "7", "ours": "6",
                     "status": "ok", "code": "print(6)\n"}]


def test_cli_min_rate_decides_the_exit_code(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "in.jsonl", [RELEASED, WRONG])
    r = _run(path, "--min-rate", "0.9", "--jobs", "2")
    assert r.exit_code == EXIT_CHECK_FAILED  # a failed gate, not a bug (exit 1)
    assert r.stderr.strip().splitlines() == ["error: 75.0% of blocks matched, below --min-rate 90.0%"]
    assert "record 8 block 1" in r.stdout and "value" in r.stdout  # the rich summary still lists it
    assert _run(path, "--min-rate", "75", "--jobs", "2").exit_code == 0
    assert _run(path, "--jobs", "2").exit_code == 0  # without --min-rate, any rate is a success


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    r = _run(tmp_path / "missing.jsonl")
    assert r.exit_code == EXIT_USAGE and r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr
    path = _write_jsonl(tmp_path / "in.jsonl", [RELEASED])
    r = _run(path, "--release", "second")
    assert r.exit_code == EXIT_USAGE and "unknown release" in r.stderr
    r = _run(path, "--tool", "nope")
    assert r.exit_code == EXIT_USAGE and "unknown tool 'nope'" in r.stderr
    assert "Traceback" not in r.output


def test_cli_reproduces_the_released_tora_outputs() -> None:
    """The first 15 released ToRA-Code-34B GSM8K solutions, run through the sandbox."""
    if not TORA_GSM8K.exists():
        pytest.skip(f"shared data not found at {TORA_GSM8K} (the shared folder sits beside the checkout)")
    r = _run(TORA_GSM8K, "--limit", "15", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["records"], data["blocks"], data["release"]) == (15, 15, "first")
    assert data["rate"] >= 0.98, data


# ---------------------------------------------------------------------------
# Hostile files: decoding, unparsable lines, the --mismatches destination
# ---------------------------------------------------------------------------

import os  # noqa: E402
import re  # noqa: E402

from mathsolve.errors import EXIT_IO, IOFailure, UsageError  # noqa: E402
from mathsolve.replay.summary import ReplaySummary, write_mismatches  # noqa: E402


def test_hostile_lines_are_that_records_error_only(tmp_path: Path) -> None:
    huge = "9" * 5000
    lines = [json.dumps(RELEASED), "[" * 100_000 + "]" * 100_000,
             json.dumps({**WRONG, "idx": 0}).replace('"idx": 0', f'"idx": {huge}'), "{not json"]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary, blocks = read_blocks(path)
    assert summary.records == 4
    assert summary.errors[0] == "line 2: nested deeper than 100 levels"
    assert summary.errors[1].startswith("line 4: invalid JSON: ")
    assert [b.line for b in blocks] == [1, 1, 1, 3] and blocks[-1].record == huge  # the id kept as its digits


def test_a_bom_no_longer_loses_the_first_record_and_latin1_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(RELEASED) + "\n" + json.dumps(WRONG) + "\n").encode("utf-8"))
    summary, blocks = read_blocks(path)
    assert (summary.records, summary.errors, len(blocks)) == (2, [], 4)
    path = tmp_path / "latin1.jsonl"
    line = json.dumps({**WRONG, "note": "élève"}, ensure_ascii=False) + "\n"
    path.write_bytes(line.encode("latin-1"))  # one byte per character: the offset is the index
    summary, blocks = read_blocks(path)
    assert len(blocks) == 1
    assert summary.warnings == [f"{path}: 2 bytes are not UTF-8 (first at byte {line.index('é')}); "
                                "replaced with U+FFFD"]


@pytest.mark.parametrize("content, message", [
    (b"\x7fELF\x02\x01\x01\x00" * 40, "looks like a binary file, not text"),
    ("Première ligne.\nDeuxième.\n".encode("latin-1"), "has no readable records (is it JSONL?)"),
    (b"", "has no readable records (is it JSONL?)"),
], ids=["binary", "latin1-prose", "empty"])
def test_files_without_records_are_usage_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=re.escape(message)):
        read_blocks(path)
    r = _run(path)
    assert r.exit_code == EXIT_USAGE and r.stderr.strip().count("\n") == 0 and message in r.stderr, r.output


def test_a_window_past_the_end_is_not_an_error(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "in.jsonl", [RELEASED])
    summary, blocks = read_blocks(path, offset=5)
    assert (summary.records, blocks) == (0, [])


def test_an_unreadable_file_is_an_io_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_jsonl(tmp_path / "in.jsonl", [RELEASED])

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(IOFailure, match=rf"^cannot read {path}: Permission denied$"):
        read_blocks(path)
    r = _run(path)
    assert r.exit_code == EXIT_IO and f"cannot read {path}: Permission denied" in r.stderr


def test_cli_mismatches_onto_the_input_is_refused_and_the_input_untouched(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "in.jsonl", [WRONG])
    before = path.read_bytes()
    r = _run(path, "--jobs", "1", "--mismatches", path)
    assert r.exit_code == EXIT_USAGE and "is the input file" in r.stderr, r.output
    assert path.read_bytes() == before


def test_write_mismatches_replaces_only_its_own_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [WRONG])
    summary = ReplaySummary(file=str(source), protocol="tora", release="first", tool="python", jobs=1)
    out = tmp_path / "mismatches.jsonl"
    write_mismatches(summary, out)  # no mismatches: an empty file, which may be replaced later
    assert out.read_bytes() == b""
    write_mismatches(summary, out)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n", encoding="utf-8")
    with pytest.raises(UsageError, match="--mismatches .* was not written by mathsolve"):
        write_mismatches(summary, notes)
    with pytest.raises(UsageError, match="is a directory"):
        write_mismatches(summary, tmp_path)

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(IOFailure, match="cannot write .*No space left on device"):
        write_mismatches(summary, out)
    assert notes.read_text(encoding="utf-8") == "mine\n" and out.read_bytes() == b""
