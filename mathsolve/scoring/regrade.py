"""Re-grading saved solutions: a JSONL file in, accuracy out (`mathsolve grade`).

Every record format :mod:`mathsolve.scoring.records` can read an answer from is graded:

(a) released ToRA outputs (``question``, ``gt``, ``code``, ``pred``): the answer is extracted
    again from ``code[0]`` with the ToRA rules; the recorded ``pred`` is never trusted,
    since re-extraction is the point of re-grading;
(b) mathsolve's own records (``question``, ``protocol``, ``transcript``, ``reference``):
    the answer is extracted from the model and tool segments of the transcript with the
    protocol's reference rules (the registered protocol's ``answer_style``, so plugin
    protocols work; the built-in protocol classes' for names no plugin registers); a
    record without ``reference`` is skipped;
(c) answer pairs (``reference``, ``prediction``): the prediction is already an answer.

Each record is judged by the grader ``choice`` names (:mod:`mathsolve.scoring.graders`):
``reference``, ``math-verify``, or ``auto``: the one the record's ``run`` names, else its
protocol's, else the reference grader.

A malformed line (invalid JSON, nested too deep, too long: see jsonsafe) is counted as
an error with its line number; it never stops the run. The file's bytes are decoded
by textdecode's rules (BOMs, UTF-16, invalid UTF-8 replaced with a warning). Nothing
here prints: the command line shows the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathsolve.files.outputs import check_replaceable, write_jsonl
from mathsolve.scoring.answer import strip_string
from mathsolve.scoring.grader import DEFAULT_TIMEOUT
from mathsolve.scoring.graders import AUTO, GraderPool, Judge, effective_grader
from mathsolve.scoring.records import BadRecord, Invalid, RecordFile, known_protocols, protocol_styles, record_answer

__all__ = ["GradeSummary", "RecordResult", "PER_RECORD_KEYS", "grade_file", "grade_record"]


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
    grader: str | None = None  # which grader judged it (graded records)

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
    graders: dict[str, int] = field(default_factory=dict)  # graded records per grader

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
            "graders": dict(self.graders),
        }

    def count(self, result: RecordResult) -> None:
        """Add one record's outcome."""
        self.results.append(result)
        if result.status == "graded":
            self.total += 1
            self.correct += bool(result.correct)
            if result.grader is not None:
                self.graders[result.grader] = self.graders.get(result.grader, 0) + 1
        elif result.status == "skipped":
            self.skipped += 1
        else:
            self.errors += 1


def grade_record(record: object, grader: Judge | GraderPool, *, index: int = 0, line: int = 0,
                 styles: dict[str, str] | None = None, protocols: dict[str, Any] | None = None,
                 choice: str = AUTO) -> RecordResult:
    """Grade one decoded JSON record; malformed records give ``status="error"``.

    ``grader`` judges every record, or, a :class:`GraderPool`, gives the one ``choice``
    means for this record. ``styles`` (default: ``records.protocol_styles()``) and
    ``protocols`` (default: ``records.known_protocols()``) say how each protocol's records
    are read; pass them when grading many records, so the plugins are asked once.
    """
    try:
        answer = record_answer(record, protocol_styles() if styles is None else styles,
                               known_protocols() if protocols is None else protocols)
    except BadRecord as exc:
        return RecordResult(index, line, "error", message=str(exc))
    if answer.reference is None:
        return RecordResult(index, line, "skipped", prediction=answer.prediction, message="no reference answer")
    if isinstance(grader, GraderPool):
        name = effective_grader(answer.grader if choice == AUTO else choice, None)
        judge = grader.get(name)
    else:
        name, judge = getattr(grader, "name", "reference"), grader
    correct = not answer.forced_wrong and judge.equal(answer.prediction, answer.reference)
    return RecordResult(index, line, "graded", answer.prediction, strip_string(answer.reference), correct,
                        grader=name)


def _grade_lines(records: RecordFile, grader: Judge | GraderPool, choice: str) -> GradeSummary:
    summary = GradeSummary()
    styles, protocols = protocol_styles(), known_protocols()
    for entry in records.lines():
        if isinstance(entry.record, Invalid):  # unparsable, too deep, too long: that line's error only
            result = RecordResult(entry.position, entry.number, "error", message=entry.record.message)
        else:
            result = grade_record(entry.record, grader, index=entry.position, line=entry.number, styles=styles,
                                  protocols=protocols, choice=choice)
        summary.count(result)
    return summary


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
    grader: Judge | GraderPool | None = None,
    choice: str = AUTO,
) -> GradeSummary:
    """Re-grade every record of the JSONL file at ``path``.

    ``per_record`` receives one JSON line per record (index, line, status, prediction,
    reference, correct), replaced atomically; it may not be ``path``, a directory or an
    existing file that is not an earlier per-record file (UsageError). The file is read
    by textdecode's rules: its decoding warnings are in ``summary.warnings``; a line that
    cannot be parsed is that record's error; a file with no JSON object line is a
    UsageError. ``percent`` keeps the reference graders' rule that a number
    also matches the reference times or divided by 100; the published accuracies were
    computed with it (ToRA-Code-34B GSM8K: 1064/1319 with it, 1062 without). ``choice``
    is ``--grader``: reference, math-verify or auto (see the module docstring); the graded
    records per grader are in ``summary.graders``. A ``grader`` passed in judges every
    record instead, or, a :class:`GraderPool`, gives each record the one ``choice`` means
    (graders reused across files); either is left open.
    """
    effective_grader(choice, None)  # an unknown name fails before the file is read
    path = Path(path)
    if per_record is not None:  # refuse a bad destination before the minutes of grading
        check_replaceable(Path(per_record), keys=PER_RECORD_KEYS, sources=[path], option="--per-record")
    records = RecordFile(path)
    if grader is not None:
        summary = _grade_lines(records, grader, choice)
    else:
        with GraderPool(percent=percent, timeout=timeout) as pool:
            summary = _grade_lines(records, pool, choice)
    summary.warnings.extend(records.warnings)
    if per_record is not None:
        _write_per_record(summary, Path(per_record), path)
    return summary
