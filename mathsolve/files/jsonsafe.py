"""JSON that users hand us, read without crashing; JSONL lines written whatever they hold.

Reading: ``loads`` parses one JSON text (a JSONL line, usually) and fails in exactly
one way, ``JSONInputError``, with a short message fit for "line N: <message>". The
standard parser can fail in other ways on hostile input, and each of them would end a
whole batch: a line nested thousands of levels deep raises RecursionError, an integer
longer than Python's int string-conversion limit (4,300 digits by default) raises a
plain ValueError, and an enormous line can exhaust memory. Here:

* nesting deeper than ``max_depth`` (100) arrays/objects is refused before parsing, by a
  linear scan that skips string contents (escaped quotes included), so brackets inside
  strings never count;
* a text longer than ``max_chars`` (64 MiB) is refused before any work;
* an integer too long for ``int()`` is kept as its decimal text (a ``str``), not
  refused: ground-truth answers can legitimately be huge integers, and mathsolve
  compares answers as text, so the digits are all that matter;
* ``NaN``, ``Infinity`` and ``-Infinity`` are accepted as floats, as Python's json
  module does by default (they are not standard JSON, but Python's own writer emits
  them, so files written by Python tools contain them).

Writing: ``dump_line`` turns any value into one JSONL line, lone surrogates included.
(Where such lines may be written is mathsolve.files.outputs's job.)
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_MAX_DEPTH",
    "JSONInputError",
    "dump_line",
    "loads",
    "loads_record",
    "nesting_depth",
]

DEFAULT_MAX_DEPTH = 100
DEFAULT_MAX_CHARS = 64 * 1024 * 1024

# Bytes of the bracket-only text (see nesting_depth) -> change of depth.
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_ESCAPE = re.compile(r"\\.", re.DOTALL)


class JSONInputError(ValueError):
    """A JSON text that cannot be used; the message is short and names why."""


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text``, brackets in strings excluded.

    Linear in the length of ``text``. Meant for valid JSON; on invalid text it still
    returns a number (the deepest unclosed run of openers), never raises.
    """
    if "\\" in text:
        # An escape is a backslash and the next character; dropping every such pair from
        # the left removes each escaped quote (and each escaped backslash before a real
        # closing quote), so every quote left delimits a string.
        text = _ESCAPE.sub("", text)
    outside = "".join(text.split('"')[0::2])  # even pieces lie between strings
    brackets = outside.encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def loads(text: str, *, max_depth: int = DEFAULT_MAX_DEPTH, max_chars: int = DEFAULT_MAX_CHARS) -> Any:
    """The value of one JSON text; raises ``JSONInputError`` and nothing else on bad input.

    Integers longer than Python's int conversion limit come back as their decimal text
    (see the module docstring); NaN and Infinity are floats. A leading U+FEFF (a byte
    order mark that survived ``cat a.jsonl b.jsonl``) is ignored.
    """
    if len(text) > max_chars:
        what = "a line" if "\n" not in text.rstrip("\r\n") else "a JSON text"
        raise JSONInputError(f"{what} of {len(text):,} characters (limit {max_chars:,})")
    if text.startswith("\ufeff"):
        text = text[1:]
    # Cheap bound first: fewer openers than the limit, anywhere, cannot nest deeper.
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text) > max_depth:
        raise JSONInputError(f"nested deeper than {max_depth} levels")
    try:
        return _parse(text)
    except RecursionError:  # only if the caller's own stack was already nearly full
        raise JSONInputError(f"nested too deeply to parse (limit {max_depth} levels)") from None
    except MemoryError:
        raise JSONInputError(f"too large to parse in memory ({len(text):,} characters)") from None


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONInputError(_decode_error_message(exc)) from None
    except ValueError:
        pass  # an integer past the int conversion limit: parse again, keeping its text
    try:
        return json.loads(text, parse_int=_int_or_text)
    except ValueError as exc:  # JSONDecodeError included
        message = _decode_error_message(exc) if isinstance(exc, json.JSONDecodeError) else f"invalid JSON: {exc}"
        raise JSONInputError(message) from None


def _int_or_text(digits: str) -> int | str:
    try:
        return int(digits)
    except ValueError:
        return digits  # longer than sys.get_int_max_str_digits() allows


def _decode_error_message(exc: json.JSONDecodeError) -> str:
    where = f"column {exc.colno}" if exc.lineno == 1 else f"line {exc.lineno} column {exc.colno}"
    reason = exc.msg.removesuffix(" at")  # "Invalid control character at": the position follows
    # "invalid JSON: " and the parser's reason, as grade and replay have always reported it.
    return f"invalid JSON: {reason} at {where}"


def loads_record(line: str, *, max_depth: int = DEFAULT_MAX_DEPTH,
                 max_chars: int = DEFAULT_MAX_CHARS) -> dict[str, Any]:
    """``loads`` for a JSONL record: the value must be an object."""
    value = loads(line, max_depth=max_depth, max_chars=max_chars)
    if not isinstance(value, dict):
        raise JSONInputError(f"not a JSON object (a JSON {_json_type(value)})")
    return value


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def dump_line(value: Any) -> bytes:
    """One JSONL line (UTF-8, newline-terminated), whatever strings ``value`` holds.

    Text read from hostile files can hold lone surrogates, which UTF-8 cannot encode;
    they are written as JSON escapes (``\\udc80``), which read back as the same string.
    """
    # Surrogates only occur inside JSON strings, where backslashreplace's "\udc80" is
    # exactly the JSON escape for them.
    return (json.dumps(value, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
