"""Property tests of the edges: settings from any source, any question argument, any
bytes of problem input. Each property is the contract the CLI relies on: a value is
accepted within its range or refused as a UsageError, never anything else."""

from __future__ import annotations

import io
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mathsolve.errors import MathsolveError, UsageError
from mathsolve.settings import SPECS, Settings

NUMERIC = [name for name, spec in SPECS.items() if hasattr(spec.parse, "range")] + ["threads"]

# What a user can put in an environment variable or on the command line: any text, with
# extra weight on the shapes that broke things (numbers at and beyond the edges, NaN, inf).
RAW_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["nan", "inf", "-inf", "1e308", "-0", "0x10", "1_000", " 7 ", "٣", "2.5", "-1", "0", "true"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
# What a TOML config file can hold.
TOML_VALUE = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(), st.booleans(),
    st.text(max_size=20), st.lists(st.integers(), max_size=3),
)


def _within(name: str, value) -> bool:
    parse = SPECS[name].parse
    if value is None:
        return True
    if not hasattr(parse, "range"):
        return value >= 1  # threads: 1 to 4 x cores
    low, high, low_open = parse.range
    return math.isfinite(value) and (value > low if low_open else value >= low) and value <= high


@settings(max_examples=400)
@given(name=st.sampled_from(sorted(SPECS)), raw=RAW_TEXT)
def test_any_environment_value_is_accepted_in_range_or_refused_naming_it(name: str, raw: str) -> None:
    env = {f"MATHSOLVE_{name.upper()}": raw}
    try:
        value = getattr(Settings(env=env), name)
    except UsageError as exc:
        assert name in exc.message and f"MATHSOLVE_{name.upper()}" in exc.message
        return
    if name in NUMERIC:
        assert _within(name, value), (name, raw, value)


@settings(max_examples=300)
@given(name=st.sampled_from(sorted(SPECS)), value=TOML_VALUE)
def test_any_typed_value_is_accepted_in_range_or_refused_naming_it(name: str, value) -> None:
    """Flags and the TOML config file hand the parser typed values (bool, float, list)."""
    try:
        parsed = getattr(Settings({name: value}), name)
    except UsageError as exc:
        assert name in exc.message and "flag" in exc.message and "\n" not in exc.message
        return
    if name in NUMERIC:
        assert not isinstance(parsed, bool) and _within(name, parsed), (name, value, parsed)


@settings(max_examples=300)
@given(text=st.text(min_size=0, max_size=2000))
def test_any_single_argument_is_a_question_or_a_clear_refusal(text: str) -> None:
    from mathsolve.cli.solve import question_or_files as _question_or_files
    from mathsolve.core.problems import is_directory

    try:
        question, sources = _question_or_files([text], None)
    except UsageError as exc:
        assert "\n" not in exc.message
        assert not text.strip() or is_directory(text), (text, exc.message)
        return
    if question is None:
        assert sources == [text]  # "-", or the name of something that exists
    else:
        question.encode("utf-8")  # always writable, whatever the argument held
        assert question.strip() and sources == []


@settings(max_examples=200)
@given(raw=st.binary(max_size=600))
def test_any_argument_bytes_are_decoded_as_documented(raw: bytes) -> None:
    import os

    from mathsolve.core.problems import is_problem_file
    from mathsolve.files.decode import decode_argument

    raw = raw.replace(b"\x00", b"")  # argv cannot hold NUL
    argument = os.fsdecode(raw)  # as Python hands argv over
    assert isinstance(is_problem_file(argument), bool)
    text, warning = decode_argument(argument)
    text.encode("utf-8")
    try:
        assert text == raw.decode("utf-8") and warning is None
    except UnicodeDecodeError:
        assert warning is not None and "U+FFFD" in warning and text == raw.decode("utf-8", "replace")


JSON_ISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=200)
@given(records=st.lists(st.one_of(JSON_ISH, st.fixed_dictionaries({"id": st.integers(0, 3), "question": st.text(max_size=30)})),
                        max_size=8))
def test_any_jsonl_gives_one_problem_or_one_input_error_per_line(records) -> None:
    import json

    from mathsolve.core.problems import read_problems

    data = "\n".join(json.dumps(r) for r in records) + "\n"
    # Named .jsonl, as a file would be (stdin starting with "[" is read as one JSON array).
    problems = list(read_problems(["-"], stdin=io.BytesIO(data.encode("utf-8", "surrogatepass")), shown_as=["in.jsonl"]))
    lines = [line for line in data.split("\n") if line.strip()]
    assert len(problems) == len(lines)
    seen: dict[str, str] = {}
    for problem in problems:
        assert (problem.question is None) == (problem.error is not None)
        if problem.question is not None:
            problem.question.encode("utf-8")
            assert seen.setdefault(problem.id, problem.question).strip() == problem.question.strip()  # ids never collide


@settings(max_examples=300)
@given(raw=st.binary(max_size=2000))
def test_any_bytes_on_stdin_are_problems_or_one_clear_error(raw: bytes) -> None:
    from mathsolve.core.problems import read_problems

    try:
        problems = list(read_problems(["-"], stdin=io.BytesIO(raw)))
    except MathsolveError as exc:
        assert exc.exit_code == 2 and "\n" not in exc.message
        return
    for problem in problems:
        assert problem.question is None or "\x00" not in problem.question
        if problem.question is not None:
            problem.question.encode("utf-8")


@pytest.mark.parametrize("text", ["[" * 100_000, "{" * 50_000 + '"a": 1', '{"a": ' + "9" * 10_000 + "}"])
def test_pathological_json_lines_are_input_errors_or_values(text: str) -> None:
    from mathsolve.core.problems import read_problems

    data = text.encode() + b'\n{"question": "ok"}\n'
    problems = list(read_problems(["-"], stdin=io.BytesIO(data), shown_as=["in.jsonl"]))
    assert problems[-1].question == "ok" and len(problems) == 2
