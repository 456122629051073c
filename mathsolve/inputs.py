"""Problems from files and stdin: plain text, JSONL, JSON arrays, and the evaluation
sets as published (each with its own field names).

Every problem gets a stable id, so a batch can resume: the record's own id field
(`id`, `idx`, `unique_id`, `ID`) prefixed with the file's name, else a hash of the
question text. A malformed record (bad JSON, no question field, an empty problem)
becomes a Problem with `error` set, naming file and line; it never stops the batch.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

from mathsolve.errors import UsageError

# Question fields tried in order when --field is not given. Two-part questions first:
# SVAMP and ASDiv keep the situation in a body field and the question apart, and the
# reference harnesses joined them with one space.
QUESTION_FIELDS: tuple[tuple[str, ...], ...] = (
    ("Body", "Question"),
    ("body", "question"),
    ("question",),
    ("problem",),
    ("input",),
    ("Question",),
)
ID_FIELDS = ("id", "idx", "unique_id", "ID")


@dataclass
class Problem:
    id: str
    question: str | None  # None when the record is malformed
    source: str  # "FILE:LINE" (or "FILE:[INDEX]" in a JSON array)
    reference: str | None = None  # the ground truth, parsed per data set, when known
    error: str | None = None


def content_id(question: str) -> str:
    return "sha1:" + hashlib.sha1(question.strip().encode("utf-8")).hexdigest()[:16]


def read_problems(
    sources: list[str],
    *,
    blocks: bool = False,
    field: str | None = None,
    dataset: str | None = None,
    stdin: IO[str] | None = None,
) -> Iterator[Problem]:
    """Problems from each source in order; `-` is stdin."""
    for source in sources:
        if source == "-":
            yield from _read_text_or_json((stdin or sys.stdin).read(), "stdin", blocks=blocks, field=field, dataset=dataset)
            continue
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"no such file: {source}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {source}: {exc}") from None
        yield from _read_text_or_json(text, path.name, blocks=blocks, field=field, dataset=dataset)


def _read_text_or_json(text: str, name: str, *, blocks: bool, field: str | None, dataset: str | None) -> Iterator[Problem]:
    kind = _sniff(text, name)
    if kind == "json":
        yield from _read_json_array(text, name, field, dataset)
    elif kind == "jsonl":
        yield from _read_jsonl(text, name, field, dataset)
    else:
        yield from _read_plain(text, name, blocks)


def _sniff(text: str, name: str) -> str:
    """By extension first, else by the first character: `[` JSON array, `{` JSONL."""
    suffix = Path(name).suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".txt", ".md"):
        return "text"
    head = text.lstrip()[:1]
    return {"[": "json", "{": "jsonl"}.get(head, "text")


def _read_plain(text: str, name: str, blocks: bool) -> Iterator[Problem]:
    """One problem per non-empty line, or per blank-line separated block with `blocks`."""
    lines = text.splitlines()
    if not blocks:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield Problem(content_id(line), line.strip(), f"{name}:{number}")
        return
    current: list[str] = []
    start = 0
    for number, line in enumerate(lines + [""], 1):
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            question = "\n".join(current).strip()
            yield Problem(content_id(question), question, f"{name}:{start}")
            current = []


def _read_jsonl(text: str, name: str, field: str | None, dataset: str | None) -> Iterator[Problem]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield _bad(where, f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        yield _from_record(record, where, name, field, dataset)


def _read_json_array(text: str, name: str, field: str | None, dataset: str | None) -> Iterator[Problem]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        yield _bad(f"{name}:{exc.lineno}", f"invalid JSON ({exc.msg}); the whole file was skipped")
        return
    if isinstance(data, dict):  # {"problems": [...]} or similar: take the one list inside
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list):
        yield _bad(f"{name}:1", "a JSON file must hold an array of problems")
        return
    for index, record in enumerate(data):
        yield _from_record(record, f"{name}:[{index}]", name, field, dataset)


def _bad(where: str, message: str) -> Problem:
    return Problem(id=where, question=None, source=where, error=f"{where}: {message}")


def _from_record(record: Any, where: str, name: str, field: str | None, dataset: str | None) -> Problem:
    if isinstance(record, str):
        record = {"question": record}
    if not isinstance(record, dict):
        return _bad(where, f"expected an object, got {type(record).__name__}")
    try:
        question = _question(record, field)
    except ValueError as exc:
        return _bad(where, str(exc))
    if not question.strip():
        return _bad(where, "the problem is empty")
    ident = next((record[k] for k in ID_FIELDS if isinstance(record.get(k), (str, int))), None)
    problem_id = f"{Path(name).stem}:{ident}" if ident is not None else content_id(question)
    return Problem(problem_id, question, where, reference=_reference(record, dataset))


def _question(record: dict[str, Any], field: str | None) -> str:
    candidates = [tuple(field.split("+"))] if field else list(QUESTION_FIELDS)
    for names in candidates:
        if all(isinstance(record.get(n), str) for n in names):
            return " ".join(str(record[n]).strip() for n in names) if len(names) > 1 else str(record[names[0]])
    if field:
        raise ValueError(f"no string field {field!r} (fields: {', '.join(sorted(record))})")
    raise ValueError(
        f"no question field (tried question, problem, input, Body+Question; fields: {', '.join(sorted(record))}); "
        "name it with --field"
    )


def _reference(record: dict[str, Any], dataset: str | None) -> str | None:
    """The ground truth as the reference harness parses it for this data set, if any."""
    from mathsolve.grading import parse_ground_truth

    if "reference" in record and record["reference"] is not None:
        return str(record["reference"])
    try:
        return parse_ground_truth(record, dataset)
    except ValueError:
        return None
