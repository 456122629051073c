"""Problems from files and stdin: plain text, JSONL, JSON arrays, and the evaluation
sets as published (each with its own field names).

Every problem gets a stable id, so a batch can resume: the record's own id field
(`id`, `idx`, `unique_id`, `ID`) prefixed with the file's label, else a hash of the
question text. A file's label is its name without the suffix (`gsm8k`), or, when two
inputs of one run share that name, its path (`da/test`, `db/test`), so ids never collide
across files. Two records of one file with the same id and different problems are both
kept: the second gets `#2` appended (and a warning says so). A malformed record (bad
JSON, no question field, an empty problem) becomes a Problem with `error` set, naming
file and line; it never stops the batch.

Bytes are decoded by mathsolve.files.decode's rules (UTF-8, a byte-order mark honoured,
UTF-16 recognised, undecodable bytes replaced with a warning) and JSON is parsed with
bounded depth and size (mathsolve.files.jsonsafe), so no input line can crash a batch.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from mathsolve.files import jsonsafe
from mathsolve.errors import IOFailure, UsageError
from mathsolve.files.decode import Decoded, decode, split_lines

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
    warning: str | None = None  # something the user should know (a renamed duplicate id)


def content_id(question: str) -> str:
    return "sha1:" + hashlib.sha1(question.strip().encode("utf-8", "replace")).hexdigest()[:16]


def is_problem_file(argument: str) -> bool:
    """Whether a command-line argument names problems to read rather than being the
    question itself: `-`, or anything that exists and is not a directory (a regular file,
    /dev/stdin, a pipe from `<(...)`). Any error while looking (a name too long for the
    file system, a character the OS refuses, a permission) means "not a file": a
    question of any length and content must never fail on the probe."""
    if argument == "-":
        return True
    try:
        return not stat.S_ISDIR(os.stat(argument).st_mode)
    except (OSError, ValueError):
        return False


def is_directory(argument: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(argument).st_mode)
    except (OSError, ValueError):
        return False


def file_labels(sources: list[str]) -> list[str]:
    """The id prefix of each source: its stem, or its path (without the suffix) when
    another source of the run has the same stem."""
    stems = [_stem(s) for s in sources]
    labels = []
    for source, stem in zip(sources, stems):
        if stems.count(stem) == 1 or source == "-":
            labels.append(stem)
        else:
            path = os.path.normpath(source)
            labels.append(str(Path(path).with_suffix("")) if Path(path).suffix else path)
    return labels


def _stem(source: str) -> str:
    if source == "-" or _is_stdin(source):
        return "stdin"
    stem = Path(source).stem
    return stem if stem and not stem.isdigit() else "pipe"  # /dev/fd/63 from `<(...)`


def _is_stdin(source: str) -> bool:
    return source in ("/dev/stdin", "/dev/fd/0", "/proc/self/fd/0")


def read_problems(
    sources: list[str],
    *,
    blocks: bool = False,
    field: str | None = None,
    dataset: str | None = None,
    stdin: IO[str] | IO[bytes] | None = None,
    shown_as: list[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Iterator[Problem]:
    """Problems from each source in order; `-` is stdin. `shown_as` names each source in
    records and messages (default: the path as given); `warn` receives decoding notes."""
    labels = file_labels(sources)
    seen: dict[str, str] = {}  # id -> question, to tell duplicate ids apart
    for index, source in enumerate(sources):
        shown = shown_as[index] if shown_as else ("stdin" if source == "-" else source)
        data = _read_bytes(source, stdin)
        decoded = decode(data, name=shown)
        for note in decoded.warnings:
            if warn is not None:
                warn(note)
        context = _Context(shown=shown, label=labels[index], field=field, dataset=dataset)
        for problem in _read_text_or_json(decoded.text, context, blocks=blocks):
            yield _unique(problem, seen)


def _read_bytes(source: str, stdin: IO[str] | IO[bytes] | None) -> bytes:
    if source == "-":
        stream = stdin if stdin is not None else sys.stdin
        if stream is None:  # the process was started with stdin closed
            return b""
        raw = stream.read() if stdin is not None else _buffer(stream).read()
        return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    return read_file(source, "a problem file")


def read_text(path: str | Path, kind: str) -> Decoded:
    """A file the user named, as text by mathsolve.files.decode's rules (its `warnings` say
    what was replaced), or a one-line error (see `read_file`)."""
    return decode(read_file(str(path), kind), name=str(path))


def read_file(path: str, kind: str) -> bytes:
    """The bytes of a file the user named, or a one-line error: missing or a directory is a
    usage error, anything else the OS refuses (permission, I/O) an I/O failure."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not {kind}") from None
    except OSError as exc:
        raise IOFailure(f"cannot read {path}: {exc.strerror or exc}") from None


def _buffer(stream: Any) -> Any:
    return getattr(stream, "buffer", stream)


def _unique(problem: Problem, seen: dict[str, str]) -> Problem:
    """Keep both problems of a duplicated id: the second gets `#2` (then `#3`, ...)."""
    if problem.question is None:
        return problem
    first = seen.setdefault(problem.id, problem.question)
    if first.strip() == problem.question.strip():
        return problem  # the same problem again: solved once
    n = 2
    while f"{problem.id}#{n}" in seen and seen[f"{problem.id}#{n}"].strip() != problem.question.strip():
        n += 1
    renamed = f"{problem.id}#{n}"
    seen.setdefault(renamed, problem.question)
    problem.warning = (f"{problem.source}: id {problem.id} is already used by a different problem; "
                       f"this one is {renamed}")
    problem.id = renamed
    return problem


@dataclass
class _Context:
    shown: str  # the source as named in records: FILE of FILE:LINE
    label: str  # the id prefix
    field: str | None
    dataset: str | None


def _read_text_or_json(text: str, ctx: _Context, *, blocks: bool) -> Iterator[Problem]:
    kind = _sniff(text, ctx.shown)
    if kind == "json":
        yield from _read_json_array(text, ctx)
    elif kind == "jsonl":
        yield from _read_jsonl(text, ctx)
    else:
        yield from _read_plain(text, ctx, blocks)


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


def _read_plain(text: str, ctx: _Context, blocks: bool) -> Iterator[Problem]:
    """One problem per non-empty line, or per blank-line separated block with `blocks`."""
    lines = split_lines(text)
    if not blocks:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield _plain_problem(line.strip(), f"{ctx.shown}:{number}")
        return
    current: list[str] = []
    start = 0
    for number, line in enumerate(lines + [""], 1):
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            yield _plain_problem("\n".join(current).strip(), f"{ctx.shown}:{start}")
            current = []


def _plain_problem(question: str, where: str) -> Problem:
    if "\0" in question:
        return _bad(where, "the problem contains NUL characters (binary data?)")
    return Problem(content_id(question), question, where)


def _read_jsonl(text: str, ctx: _Context) -> Iterator[Problem]:
    for number, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        where = f"{ctx.shown}:{number}"
        try:
            record = jsonsafe.loads(line)
        except jsonsafe.JSONInputError as exc:
            yield _bad(where, str(exc))
            continue
        yield _from_record(record, where, ctx)


def _read_json_array(text: str, ctx: _Context) -> Iterator[Problem]:
    try:
        data = jsonsafe.loads(text)
    except jsonsafe.JSONInputError as exc:
        yield _bad(f"{ctx.shown}:1", f"{exc}; the whole file was skipped")
        return
    if isinstance(data, dict):  # {"problems": [...]} or similar: take the one list inside
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list):
        yield _bad(f"{ctx.shown}:1", "a JSON file must hold an array of problems")
        return
    for index, record in enumerate(data):
        yield _from_record(record, f"{ctx.shown}:[{index}]", ctx)


def _bad(where: str, message: str) -> Problem:
    return Problem(id=where, question=None, source=where, error=f"{where}: {message}")


def _from_record(record: Any, where: str, ctx: _Context) -> Problem:
    if isinstance(record, str):
        record = {"question": record}
    if not isinstance(record, dict):
        return _bad(where, f"expected an object, got {type(record).__name__}")
    try:
        question = _question(record, ctx.field)
    except ValueError as exc:
        return _bad(where, str(exc))
    if not question.strip():
        return _bad(where, "the problem is empty")
    if "\0" in question:
        return _bad(where, "the problem contains NUL characters")
    question = _valid_text(question)
    ident = next((record[k] for k in ID_FIELDS if isinstance(record.get(k), (str, int)) and not isinstance(record.get(k), bool)), None)
    problem_id = f"{ctx.label}:{_valid_text(str(ident))}" if ident is not None else content_id(question)
    reference = _reference(record, ctx.dataset)
    return Problem(problem_id, question, where, reference=None if reference is None else _valid_text(reference))


def _valid_text(text: str) -> str:
    """JSON may escape lone surrogates ("\\ud800"), which no UTF-8 writer accepts: U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _question(record: dict[str, Any], field: str | None) -> str:
    candidates = [tuple(field.split("+"))] if field else list(QUESTION_FIELDS)
    for names in candidates:
        if all(isinstance(record.get(n), str) for n in names):
            return " ".join(str(record[n]).strip() for n in names) if len(names) > 1 else str(record[names[0]])
    if field:
        raise ValueError(f"no string field {field!r} (fields: {_field_list(record)})")
    raise ValueError(
        f"no question field (tried question, problem, input, Body+Question; fields: {_field_list(record)}); "
        "name it with --field"
    )


def _field_list(record: dict[str, Any], shown: int = 10) -> str:
    names = sorted(map(str, record))
    listed = ", ".join(repr(n)[1:-1][:40] for n in names[:shown])
    return listed + (f", ... ({len(names)} in all)" if len(names) > shown else "") if names else "none"


def _reference(record: dict[str, Any], dataset: str | None) -> str | None:
    """The ground truth as the reference harness parses it for this data set, if any."""
    from mathsolve.scoring.ground_truth import parse_ground_truth

    if "reference" in record and record["reference"] is not None:
        return str(record["reference"])
    try:
        return parse_ground_truth(record, dataset)
    except (ValueError, TypeError, RecursionError):  # no usable answer in a hostile record
        return None
