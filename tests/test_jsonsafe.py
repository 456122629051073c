"""jsonsafe: hostile JSON text fails as JSONInputError only; output files are replaced safely."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mathsolve.files.jsonsafe import (
    DEFAULT_MAX_CHARS,
    JSONInputError,
    dump_line,
    loads,
    loads_record,
    nesting_depth,
)

DEEP = 100_000
INT_LIMIT = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0

# ---------------------------------------------------------------------------
# Depth
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, depth",
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ("[[], [], [[]]]", 3),
        # Brackets inside strings never count, escaped quotes included.
        ('["[[[[", "]]]]"]', 1),
        (r'["\"[[[[", "x"]', 1),
        (r'["\\", [[1]]]', 3),  # an escaped backslash does not escape the closing quote
        (r'["\\\"[[", [1]]', 2),
        ('{"k[{": "v}]"}', 1),
    ],
)
def test_nesting_depth(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth
    json.loads(text)  # every case is valid JSON


@pytest.mark.parametrize("opener, closer", [("[", "]"), ('{"a":', "}")], ids=["arrays", "objects"])
def test_deep_nesting_is_refused_before_parsing(opener: str, closer: str) -> None:
    text = opener * DEEP + "1" + closer * DEEP
    with pytest.raises(JSONInputError, match="^nested deeper than 100 levels$"):
        loads(text)
    with pytest.raises(JSONInputError, match="nested deeper"):
        loads(opener * DEEP)  # never closed: the plain parser would recurse all the same


def test_the_depth_limit_is_inclusive_and_configurable() -> None:
    assert loads("[" * 100 + "]" * 100) is not None
    with pytest.raises(JSONInputError, match="deeper than 100"):
        loads("[" * 101 + "]" * 101)
    with pytest.raises(JSONInputError, match="deeper than 3"):
        loads("[[[[]]]]", max_depth=3)


def test_brackets_in_strings_do_not_count_against_the_limit() -> None:
    value = ["[" * DEEP, "{" * DEEP, '\\"' + "[" * DEEP]
    assert loads(json.dumps(value)) == value


# ---------------------------------------------------------------------------
# Size, numbers, syntax
# ---------------------------------------------------------------------------


def test_a_line_longer_than_the_limit_is_refused_with_its_length() -> None:
    with pytest.raises(JSONInputError, match=r"^a line of 1,001 characters \(limit 1,000\)$"):
        loads('"' + "x" * 999 + '"', max_chars=1000)
    assert DEFAULT_MAX_CHARS == 64 * 1024 * 1024


@pytest.mark.skipif(not INT_LIMIT, reason="this Python has no int string-conversion limit")
def test_integers_past_the_conversion_limit_are_kept_as_text() -> None:
    digits = "7" * (INT_LIMIT + 700)
    assert loads(digits) == digits
    assert loads(f'{{"gt": -{digits}, "n": 3}}') == {"gt": "-" + digits, "n": 3}
    assert loads(f"[{digits}, 12]") == [digits, 12]  # short integers stay integers
    assert loads('"' + digits + '"') == digits  # and strings stay strings
    assert loads("9" * INT_LIMIT) == int("9" * INT_LIMIT)  # at the limit: still an int


def test_huge_floats_and_nan_follow_pythons_json() -> None:
    assert loads("1e99999") == math.inf
    assert loads("1" + "0" * 6000 + ".5") == math.inf
    assert math.isnan(loads("NaN")) and loads("-Infinity") == -math.inf


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"a": 1 "b": 2}', "invalid JSON: Expecting ',' delimiter at column 9"),
        ("{not json", "invalid JSON: Expecting property name enclosed in double quotes at column 2"),
        ("", "invalid JSON: Expecting value at column 1"),
        ("[1]\n[2]", "invalid JSON: Extra data at line 2 column 1"),
        ('"\x00"', "invalid JSON: Invalid control character at column 2"),
    ],
)
def test_syntax_errors_are_one_short_line(text: str, message: str) -> None:
    with pytest.raises(JSONInputError) as caught:
        loads(text)
    assert str(caught.value) == message


def test_a_leading_byte_order_mark_is_ignored() -> None:
    assert loads('\ufeff{"a": 1}') == {"a": 1}


def test_loads_record_wants_an_object() -> None:
    assert loads_record('{"q": "1+1"}') == {"q": "1+1"}
    for text, kind in (("[1]", "array"), ('"q"', "string"), ("3", "number"), ("null", "null"), ("true", "boolean")):
        with pytest.raises(JSONInputError, match=f"not a JSON object \\(a JSON {kind}\\)"):
            loads_record(text)


def test_the_depth_scan_is_linear() -> None:
    text = "[" + ",".join(['"a\\"b[["'] * 300_000 + ["[]"] * 300_000) + "]"
    started = time.perf_counter()
    assert nesting_depth(text) == 2
    assert time.perf_counter() - started < 2  # about 0.1 s; quadratic would take minutes


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_parses_or_raises_json_input_error(text: str) -> None:
    try:
        loads(text)
    except JSONInputError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='[]{}"\\:,1 a', max_size=200))
def test_bracket_soup_parses_or_raises_json_input_error(text: str) -> None:
    try:
        loads(text, max_depth=3)
    except JSONInputError:
        pass


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_any_json_value_round_trips(value: Any) -> None:
    assert loads(json.dumps(value)) == value
    assert loads(dump_line(value).decode("utf-8")) == value


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_the_scan_agrees_with_the_value(value: Any) -> None:
    assert nesting_depth(json.dumps(value)) == _depth(value)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def test_lone_surrogates_are_written_as_json_escapes() -> None:
    line = dump_line({"p": "a\udc80b"})
    assert line == b'{"p": "a\\udc80b"}\n'
    assert loads(line.decode("utf-8")) == {"p": "a\udc80b"}
