"""The one reader of saved-solution files, for re-grading and for replay alike.

A file is JSONL; each line is one record in one of these formats, told apart by its fields:

``mathsolve``     mathsolve's own records: ``protocol`` with ``transcript`` (the text, read
                  for the answer through the protocol's ``answer_text`` and ``answer_style``,
                  as the solver read it) and ``tool_calls`` (each call's ``code`` and
                  ``observation``, re-run by replay); ``reference`` when it was known, and
                  ``run.grader``, the grader that judged it when it was written;
``tora-corpus``   the ToRA corpus: ``messages``, the assistant turns being one solution;
``tora-release``  released ToRA outputs: ``code``, a list of whole solution texts (several
                  when the file holds several samples), with ``question`` and ``gt``;
``answer-pair``   ``reference`` and ``prediction``: the prediction is already an answer.

Re-grading reads an :class:`Answer` from a record (:func:`record_answer`); replay reads its
recorded executions, :class:`Block` (:func:`record_blocks`). Each needs its own fields, so
a format is recognised for a use when the record holds that use's fields (``FORMATS``).
Whatever a line holds, reading it never raises anything but :class:`BadRecord`, whose
message becomes that line's error; the file itself is read by :class:`RecordFile`
(textdecode's rules for the bytes, jsonsafe's bounds for each line).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mathsolve.errors import UsageError
from mathsolve.formats.base import Protocol, last_fenced_block
from mathsolve.files.jsonsafe import JSONInputError, loads
from mathsolve.scoring.answer import extract_answer, strip_string
from mathsolve.scoring.graders import GRADERS, REFERENCE, protocol_grader
from mathsolve.files.decode import split_lines

__all__ = [
    "FORMATS",
    "OUTPUT_BLOCK",
    "Answer",
    "BadRecord",
    "Block",
    "Format",
    "Invalid",
    "RecordFile",
    "RecordLine",
    "builtin_styles",
    "known_protocols",
    "protocol_styles",
    "record_answer",
    "record_blocks",
    "record_format",
    "registered_protocol",
    "text_blocks",
]

Use = Literal["grade", "replay"]

# "```output" opens a recorded result at a line start; the next line of three backticks
# closes it (the ToRA loop appends "\n```output\n" + result + "\n```\n").
OUTPUT_BLOCK = re.compile(r"^```output\n(.*?)\n```", re.MULTILINE | re.DOTALL)


class BadRecord(ValueError):
    """A record that cannot be read; its message goes into the summary as that line's error."""


@dataclass(frozen=True)
class Format:
    """A record format and the fields that identify it for each use (None: not readable for it)."""

    name: str
    grade: frozenset[str] | None
    replay: frozenset[str] | None


# The first format whose fields for the use a record holds is its format. mathsolve records
# come first: their protocol says how to read them, whatever else they carry.
FORMATS: tuple[Format, ...] = (
    Format("mathsolve", grade=frozenset({"protocol", "transcript"}), replay=frozenset({"protocol", "tool_calls"})),
    Format("tora-corpus", grade=None, replay=frozenset({"messages"})),
    Format("tora-release", grade=frozenset({"question", "gt", "code"}), replay=frozenset({"code"})),
    Format("answer-pair", grade=frozenset({"reference", "prediction"}), replay=None),
)


@dataclass(frozen=True)
class Answer:
    """What re-grading needs from a record."""

    prediction: str  # extracted and normalised
    reference: str | None  # as recorded (normalised by the grader); None: nothing to grade against
    forced_wrong: bool = False  # the record's own harness scored it wrong whatever it holds
    # What `--grader auto` judges it with: the grader its `run` names, else its protocol's,
    # else (released files, answer pairs, unknown protocols) the reference one.
    grader: str = REFERENCE


@dataclass(frozen=True)
class Block:
    """One recorded execution: the program and the text its executor returned."""

    record: Any  # the record's own id (idx, corpus id) or its 0-based position
    line: int  # 1-based line of the file
    number: int  # 1-based within the record
    code: str
    recorded: str
    protocol: str
    # tora-release/tora-corpus: `recorded` is the result text and the release switches apply;
    # mathsolve: it is the protocol's whole observation, formatted as the record's protocol did.
    result_only: bool = True
    tool: str | None = None  # the recorded tool name, if any: preferred backend
    index: int = 0  # 0-based tool call of the record (the observation may depend on it)


def record_format(record: object, use: Use) -> str:
    """The name of the record's format for ``use`` ("grade" or "replay"); raises BadRecord."""
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    for fmt in FORMATS:
        fields = fmt.grade if use == "grade" else fmt.replay
        if fields is not None and fields <= record.keys():
            return fmt.name
    raise BadRecord(f"unrecognised record (fields: {', '.join(sorted(record)[:8])})")


# ---------------------------------------------------------------------------
# Answers (re-grading)
# ---------------------------------------------------------------------------


def builtin_styles() -> dict[str, str]:
    """Protocol name -> extraction style of every protocol mathsolve ships, from the classes.

    They grade records whose protocol no loaded plugin registers (a released file graded on
    an install without that plugin). ToRA's rules are also what the Qwen2.5-Math,
    NuminaMath and DeepSeek evaluation scripts apply, hence "tora" for those protocols.
    """
    from mathsolve.formats import builtin_protocols

    return {protocol.name: protocol.answer_style for protocol in builtin_protocols()}


def protocol_styles() -> dict[str, str]:
    """Protocol name -> extraction style: each registered protocol's own, else the built-in one."""
    from mathsolve import registry

    return {**builtin_styles(), **{name: p.answer_style for name, p in registry.protocols().items()}}


def known_protocols() -> dict[str, Any]:
    """Protocol name -> protocol object: each registered one, else the built-in class's.

    Re-grading asks them for their ``answer_text`` hook and their ``grader``; a plugin
    protocol may define neither (the base class's behaviour applies).
    """
    from mathsolve import registry
    from mathsolve.formats import builtin_protocols

    return {**{cls.name: cls() for cls in builtin_protocols()}, **registry.protocols()}


def record_answer(record: object, styles: dict[str, str], protocols: dict[str, Any] | None = None) -> Answer:
    """The prediction and reference of a record of any gradable format; raises BadRecord.

    ``styles`` maps protocol names to extraction styles (see :func:`protocol_styles`);
    ``protocols`` maps them to protocol objects (see :func:`known_protocols`), whose
    ``answer_text`` narrows the text the answer is read from and whose ``grader`` is
    the record's ``--grader auto`` choice.
    """
    kind = record_format(record, "grade")
    assert isinstance(record, dict)  # record_format refuses anything else
    if kind == "mathsolve":
        return _mathsolve_answer(record, styles, protocols or {})
    if kind == "tora-release":
        return _release_answer(record)
    return _pair_answer(record)


def _reference_text(value: object) -> str:
    """Ground truths may be stored as JSON numbers (27.0) or strings."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRecord("field 'reference' must be a string or a number")
    return str(value)


def _release_answer(record: dict[str, Any]) -> Answer:
    code = record["code"]
    if not isinstance(code, list) or not code or not isinstance(code[0], str):
        raise BadRecord("field 'code' must be a non-empty list of strings")
    # The file's "pred" is deliberately ignored: it is what is being re-checked, and a
    # file written by another tool may carry predictions extracted by other rules.
    return Answer(extract_answer(code[0], "tora"), _reference_text(record["gt"]))


def _transcript_text(transcript: object) -> str:
    """The text the model produced and the tools returned, as one string."""
    if not isinstance(transcript, list):
        raise BadRecord("field 'transcript' must be a list of segments")
    pieces: list[str] = []
    for position, segment in enumerate(transcript):
        if not isinstance(segment, dict) or not isinstance(segment.get("text"), str):
            raise BadRecord(f"transcript segment {position} must be an object with a 'text' string")
        if segment.get("role") not in _TRANSCRIPT_ROLES:
            raise BadRecord(f"transcript segment {position} has unknown role {segment.get('role')!r}")
        if segment["role"] != "prompt":
            pieces.append(segment["text"])
    # Segments are consecutive slices of one text: joined without separators, everything
    # after the prompt, as the loop's `solution` is.
    return "".join(pieces)


# mathsolve.core.loop.Segment's roles: reasoning ("thinking") and the loop's own lines
# ("note", e.g. ToRA's round-limit line) are part of the solution text too.
_TRANSCRIPT_ROLES = ("prompt", "model", "thinking", "tool", "note")


def _mathsolve_answer(record: dict[str, Any], styles: dict[str, str], protocols: dict[str, Any]) -> Answer:
    protocol = record["protocol"]
    if not isinstance(protocol, str):
        raise BadRecord("field 'protocol' must be a string")
    style = styles.get(protocol)
    if style is None:
        raise BadRecord(f"unknown protocol {protocol!r}")
    handler = protocols.get(protocol)
    text = _transcript_text(record["transcript"])
    answer_text = getattr(handler, "answer_text", None)
    if answer_text is not None:
        try:
            text = answer_text(text)  # what the solver read the answer from (mathsolve.api)
        except Exception as exc:  # noqa: BLE001 - a plugin's hook failing is this record's error
            raise BadRecord(f"protocol {protocol!r}: answer_text failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(text, str):
            raise BadRecord(f"protocol {protocol!r}: answer_text returned {type(text).__name__}, not text")
    try:
        prediction = extract_answer(text, style)
    except ValueError as exc:  # a plugin protocol naming an extraction style that does not exist
        raise BadRecord(f"protocol {protocol!r}: {exc}") from None
    reference = record.get("reference")
    # DART-Math scored a response cut off by the token limit as wrong, whatever it held.
    # mathsolve records say so with status "length".
    cut_off = style == "dart" and record.get("status") == "length"
    return Answer(prediction, None if reference is None else _reference_text(reference), cut_off,
                  _auto_grader(record, handler))


def _auto_grader(record: dict[str, Any], protocol: Any) -> str:
    """The grader that judged the record when it was written (its `run`), so re-grading
    reproduces the run's figure; else the protocol's; else the reference one."""
    run = record.get("run")
    recorded = run.get("grader") if isinstance(run, dict) else None
    if isinstance(recorded, str) and recorded in GRADERS:
        return recorded
    if protocol is None:
        return REFERENCE
    try:
        return protocol_grader(protocol)
    except UsageError as exc:
        raise BadRecord(exc.message) from None


def _pair_answer(record: dict[str, Any]) -> Answer:
    prediction = record["prediction"]
    if prediction is None:
        prediction = ""
    if not isinstance(prediction, (str, int, float)) or isinstance(prediction, bool):
        raise BadRecord("field 'prediction' must be a string or a number")
    return Answer(strip_string(str(prediction)), _reference_text(record["reference"]))


# ---------------------------------------------------------------------------
# Recorded executions (replay)
# ---------------------------------------------------------------------------


def registered_protocol(name: str) -> Protocol:
    """The registry's protocol ``name``; an unknown name makes the record unreadable."""
    from mathsolve import registry

    try:
        return registry.protocol(name)
    except UsageError as exc:
        raise BadRecord(exc.message) from None


def text_blocks(text: str) -> list[tuple[str, str]]:
    """(program, recorded result) of every output block of a ToRA-style solution text."""
    found = []
    for match in OUTPUT_BLOCK.finditer(text):
        # What the loop ran: the last python block of everything before this output.
        found.append((last_fenced_block(text[: match.start()]), match.group(1)))
    return found


def record_blocks(record: object, *, position: int = 0, line: int = 0, protocol: str = "tora",
                  protocols: Callable[[str], Protocol] | None = None) -> tuple[str, list[Block]]:
    """The format name and blocks of one decoded record; raises BadRecord.

    ``protocol`` is the protocol of tora-release and tora-corpus records; ``protocols``
    looks up the protocol of a mathsolve record (default: the registry).
    """
    kind = record_format(record, "replay")
    assert isinstance(record, dict)  # record_format refuses anything else
    if kind == "mathsolve":
        return kind, _mathsolve_blocks(record, position, line, protocols or registered_protocol)
    texts = _corpus_texts(record) if kind == "tora-corpus" else _release_texts(record)
    ident = record.get("idx", record.get("id", position))
    pairs = [pair for text in texts for pair in text_blocks(text)]
    return kind, [Block(ident, line, n, code, recorded, protocol) for n, (code, recorded) in enumerate(pairs, start=1)]


def _corpus_texts(record: dict[str, Any]) -> list[str]:
    messages = record["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRecord("field 'messages' must be a list of objects")
    contents = [m.get("content") for m in messages if m.get("role") == "assistant"]
    if not all(isinstance(c, str) for c in contents):
        raise BadRecord("assistant message content must be a string")
    # The assistant turns are consecutive pieces of one solution.
    return ["".join(contents)]


def _release_texts(record: dict[str, Any]) -> list[str]:
    code = record["code"]
    if not isinstance(code, list) or not all(isinstance(c, str) for c in code):
        raise BadRecord("field 'code' must be a list of strings")
    return code  # several entries when the file holds several samples


def _mathsolve_blocks(record: dict[str, Any], position: int, line: int,
                      protocols: Callable[[str], Protocol]) -> list[Block]:
    name = record["protocol"]
    calls = record["tool_calls"]
    if not isinstance(name, str):
        raise BadRecord("field 'protocol' must be a string")
    if not isinstance(calls, list):
        raise BadRecord("field 'tool_calls' must be a list")
    protocols(name)  # an unknown protocol makes the record unreadable here, not mid-run
    blocks = []
    for index, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("code"), str) \
                or not isinstance(call.get("observation"), str):
            raise BadRecord(f"tool call {index} must have 'code' and 'observation' strings")
        tool = call.get("tool") if isinstance(call.get("tool"), str) else None
        blocks.append(Block(record.get("id", position), line, index + 1, call["code"], call["observation"],
                            name, result_only=False, tool=tool, index=index))
    return blocks


# ---------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Invalid:
    """A line that is no JSON value within jsonsafe's bounds; ``message`` says why."""

    message: str


@dataclass(frozen=True)
class RecordLine:
    """One non-blank line of a records file."""

    position: int  # 0-based among the file's records (blank lines not counted)
    number: int  # 1-based line number in the file
    record: object  # the decoded JSON value, or Invalid


class RecordFile:
    """A JSONL records file, decoded by textdecode's rules when opened.

    Opening raises what reading a file the user named raises (OSError -> IOFailure,
    missing or binary -> UsageError); ``warnings`` says what the decoding replaced.
    """

    def __init__(self, path: Path) -> None:
        from mathsolve.core.problems import read_text  # inputs reads ground truths from this package

        self.path = Path(path)
        decoded = read_text(self.path, "a records file")
        self.warnings: tuple[str, ...] = tuple(decoded.warnings)
        self._lines = split_lines(decoded.text)

    def lines(self, offset: int = 0, limit: int | None = None) -> Iterator[RecordLine]:
        """The records from the ``offset``-th, at most ``limit`` of them, each parsed by jsonsafe.

        A hostile line is that record's Invalid only. A whole file read without one JSON
        object in it is a UsageError, raised once the lines are all read.
        """
        position, objects = -1, 0
        for number, line in enumerate(self._lines, start=1):
            if not line.strip():
                continue
            position += 1
            if position < offset:
                continue
            if limit is not None and position >= offset + limit:
                return
            try:
                record: object = loads(line)
            except JSONInputError as exc:  # unparsable, too deep, too long
                yield RecordLine(position, number, Invalid(str(exc)))
                continue
            objects += isinstance(record, dict)
            yield RecordLine(position, number, record)
        # Only a window that started at the first record has seen every line of the file.
        if offset == 0 and not objects:
            raise UsageError(f"{self.path} has no readable records (is it JSONL?)")
