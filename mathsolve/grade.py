"""Re-scoring saved solutions: a JSONL file in, accuracy out.

Three record formats are recognised, line by line:

(a) released ToRA outputs (``question``, ``gt``, ``code``, ``pred``): the answer is
    extracted again from ``code[0]`` with the ToRA rules; the recorded ``pred`` is never
    trusted, since re-extraction is the point of re-grading;
(b) mathsolve's own records (``question``, ``protocol``, ``transcript``, ``reference``):
    the answer is extracted from the model and tool segments of the transcript with the
    protocol's reference rules (the registered protocol's ``answer_style``, so plugin
    protocols work; PROTOCOL_STYLES for names no plugin registers); a record without
    ``reference`` is skipped;
(c) answer pairs (``reference``, ``prediction``): the prediction is already an answer.

A malformed line (invalid JSON, nested too deep, too long: see jsonsafe) is counted as
an error with its line number; it never stops the run. The file's bytes are decoded
by textdecode's rules (BOMs, UTF-16, invalid UTF-8 replaced with a warning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathsolve.answer import extract_answer, strip_string
from mathsolve.errors import UsageError
from mathsolve.grading import DEFAULT_TIMEOUT, Grader
from mathsolve.jsonsafe import JSONInputError, loads
from mathsolve.outfile import check_replaceable, write_jsonl
from mathsolve.textdecode import split_lines

__all__ = ["GradeSummary", "RecordResult", "PER_RECORD_KEYS", "PROTOCOL_STYLES", "grade_file", "grade_record",
           "protocol_styles"]

# Extraction rules of each prompt protocol (see answer.extract_answer), for records whose
# protocol no loaded plugin registers (a released file graded on an install without that
# plugin); a registered protocol's own `answer_style` takes precedence. ToRA's rules are
# also what the Qwen2.5-Math, NuminaMath and DeepSeek evaluation scripts apply.
PROTOCOL_STYLES: dict[str, str] = {
    "tora": "tora",
    "qwen-tir": "tora",
    "qwen-cot": "tora",
    "numina": "tora",
    "deepseek-cot": "tora",
    "mathcoder": "boxed",
    "alpaca-cot": "dart",
}


class _BadRecord(ValueError):
    """A line that cannot be graded; its message goes into the summary."""


@dataclass
class RecordResult:
    """The outcome for one record. ``correct`` is ``None`` unless ``status == "graded"``."""

    index: int  # 0-based position among the file's records (blank lines not counted)
    line: int  # 1-based line number in the file
    status: str  # "graded", "skipped" or "error"
    prediction: str | None = None
    reference: str | None = None
    correct: bool | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "line": self.line,
            "status": self.status,
            "prediction": self.prediction,
            "reference": self.reference,
            "correct": self.correct,
        }
        if self.message:
            data["message"] = self.message
        return data


@dataclass
class GradeSummary:
    """Totals of a graded file; ``total`` counts graded records only."""

    total: int = 0
    correct: int = 0
    skipped: int = 0
    errors: int = 0
    results: list[RecordResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # how the file was decoded: replaced bytes

    @property
    def accuracy(self) -> float:
        """Fraction of graded records that are correct (0.0 when none were graded)."""
        return self.correct / self.total if self.total else 0.0

    @property
    def error_messages(self) -> list[str]:
        """``"line N: why"`` for every line that could not be graded."""
        return [f"line {r.line}: {r.message}" for r in self.results if r.status == "error"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "skipped": self.skipped,
            "errors": self.errors,
        }


# ---------------------------------------------------------------------------
# Reading one record
# ---------------------------------------------------------------------------


def _require_str(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise _BadRecord(f"field {key!r} must be a string")
    return value


def _reference_text(value: object) -> str:
    """Ground truths may be stored as JSON numbers (27.0) or strings."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _BadRecord("field 'reference' must be a string or a number")
    return str(value)


def _tora_release(record: dict[str, Any]) -> tuple[str, str | None, bool]:
    code = record["code"]
    if not isinstance(code, list) or not code or not isinstance(code[0], str):
        raise _BadRecord("field 'code' must be a non-empty list of strings")
    # The file's "pred" is deliberately ignored: it is what is being re-checked, and a
    # file written by another tool may carry predictions extracted by other rules.
    return extract_answer(code[0], "tora"), _reference_text(record["gt"]), False


def _transcript_text(transcript: object) -> str:
    """The text the model produced and the tools returned, as one string."""
    if not isinstance(transcript, list):
        raise _BadRecord("field 'transcript' must be a list of segments")
    pieces: list[str] = []
    for position, segment in enumerate(transcript):
        if not isinstance(segment, dict) or not isinstance(segment.get("text"), str):
            raise _BadRecord(f"transcript segment {position} must be an object with a 'text' string")
        if segment.get("role") not in ("prompt", "model", "tool"):
            raise _BadRecord(f"transcript segment {position} has unknown role {segment.get('role')!r}")
        if segment["role"] != "prompt":
            pieces.append(segment["text"])
    # Segments are consecutive slices of one text: joined without separators.
    return "".join(pieces)


def protocol_styles() -> dict[str, str]:
    """Protocol name -> extraction style: each registered protocol's own, else the fallback."""
    from mathsolve import registry

    return {**PROTOCOL_STYLES, **{name: p.answer_style for name, p in registry.protocols().items()}}


def _mathsolve_record(record: dict[str, Any], styles: dict[str, str]) -> tuple[str, str | None, bool]:
    protocol = _require_str(record, "protocol")
    style = styles.get(protocol)
    if style is None:
        raise _BadRecord(f"unknown protocol {protocol!r}")
    try:
        prediction = extract_answer(_transcript_text(record["transcript"]), style)
    except ValueError as exc:  # a plugin protocol naming an extraction style that does not exist
        raise _BadRecord(f"protocol {protocol!r}: {exc}") from None
    reference = record.get("reference")
    # DART-Math scored a response cut off by the token limit as wrong, whatever it held.
    # mathsolve records say so with status "length".
    cut_off = style == "dart" and record.get("status") == "length"
    return prediction, None if reference is None else _reference_text(reference), cut_off


def _answer_pair(record: dict[str, Any]) -> tuple[str, str | None, bool]:
    prediction = record["prediction"]
    if prediction is None:
        prediction = ""
    if not isinstance(prediction, (str, int, float)) or isinstance(prediction, bool):
        raise _BadRecord("field 'prediction' must be a string or a number")
    return strip_string(str(prediction)), _reference_text(record["reference"]), False


def _read_record(record: object, styles: dict[str, str]) -> tuple[str, str | None, bool]:
    """(prediction, reference or None, forced wrong) of a record of any known format."""
    if not isinstance(record, dict):
        raise _BadRecord("not a JSON object")
    if {"question", "gt", "code"} <= record.keys():
        return _tora_release(record)
    if {"protocol", "transcript"} <= record.keys():
        return _mathsolve_record(record, styles)
    if {"reference", "prediction"} <= record.keys():
        return _answer_pair(record)
    raise _BadRecord(f"unrecognised record (fields: {', '.join(sorted(record)[:8])})")


def grade_record(record: object, grader: Grader, *, index: int = 0, line: int = 0,
                 styles: dict[str, str] | None = None) -> RecordResult:
    """Grade one decoded JSON record; malformed records give ``status="error"``.

    ``styles`` (default: ``protocol_styles()``) maps protocol names to extraction styles;
    pass it when grading many records, so the plugins are asked once.
    """
    try:
        prediction, reference, forced_wrong = _read_record(record, protocol_styles() if styles is None else styles)
    except _BadRecord as exc:
        return RecordResult(index, line, "error", message=str(exc))
    if reference is None:
        return RecordResult(index, line, "skipped", prediction=prediction, message="no reference answer")
    correct = not forced_wrong and grader.equal(prediction, reference)
    return RecordResult(index, line, "graded", prediction, strip_string(reference), correct)


# ---------------------------------------------------------------------------
# A whole file
# ---------------------------------------------------------------------------


def _read_lines(path: Path) -> tuple[list[str], tuple[str, ...]]:
    """The lines of a JSONL file by textdecode's rules, and the decoding warnings.

    OSError -> IOFailure; binary data -> UsageError (see textdecode.decode).
    """
    from mathsolve.inputs import read_text

    decoded = read_text(path, "a records file")
    return split_lines(decoded.text), decoded.warnings


def _grade_lines(path: Path, lines: list[str], grader: Grader) -> GradeSummary:
    summary = GradeSummary()
    styles = protocol_styles()
    index = 0
    objects = 0  # lines that hold a JSON object: a file with none is not a records file
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record: object = loads(line)
        except JSONInputError as exc:  # unparsable, too deep, too long: that line's error only
            result = RecordResult(index, line_number, "error", message=str(exc))
        else:
            objects += isinstance(record, dict)
            result = grade_record(record, grader, index=index, line=line_number, styles=styles)
        index += 1
        _count(summary, result)
    if not objects:
        raise UsageError(f"{path} has no readable records (is it JSONL?)")
    return summary


def _count(summary: GradeSummary, result: RecordResult) -> None:
    summary.results.append(result)
    if result.status == "graded":
        summary.total += 1
        summary.correct += bool(result.correct)
    elif result.status == "skipped":
        summary.skipped += 1
    else:
        summary.errors += 1


# The keys every --per-record line holds (RecordResult.to_dict): how an earlier
# --per-record file is told from a file mathsolve must not overwrite.
PER_RECORD_KEYS = frozenset({"index", "line", "status", "prediction", "reference", "correct"})


def _write_per_record(summary: GradeSummary, destination: Path, source: Path) -> None:
    write_jsonl((result.to_dict() for result in summary.results), destination, keys=PER_RECORD_KEYS,
                sources=[source], option="--per-record")


def grade_file(
    path: Path,
    *,
    per_record: Path | None = None,
    percent: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    grader: Grader | None = None,
) -> GradeSummary:
    """Re-grade every record of the JSONL file at ``path``.

    ``per_record`` receives one JSON line per record (index, line, status, prediction,
    reference, correct), replaced atomically; it may not be ``path``, a directory or an
    existing file that is not an earlier per-record file (UsageError). The file is read
    by textdecode's rules: its decoding warnings are in ``summary.warnings``; a line that
    cannot be parsed is that record's error; a file with no JSON object line is a
    UsageError. ``percent`` keeps the reference graders' rule that a number
    also matches the reference times or divided by 100; the published accuracies were
    computed with it (ToRA-Code-34B GSM8K: 1064/1319 with it, 1062 without). A
    ``grader`` passed in is used as is and left open.
    """
    path = Path(path)
    if per_record is not None:  # refuse a bad destination before the minutes of grading
        check_replaceable(Path(per_record), keys=PER_RECORD_KEYS, sources=[path], option="--per-record")
    lines, warnings = _read_lines(path)
    if grader is not None:
        summary = _grade_lines(path, lines, grader)
    else:
        with Grader(timeout=timeout, percent=percent) as own_grader:
            summary = _grade_lines(path, lines, own_grader)
    summary.warnings.extend(warnings)
    if per_record is not None:
        _write_per_record(summary, Path(per_record), path)
    return summary
