"""The equivalence rules: when a predicted answer counts as the reference answer.

This is where to change how answers are judged. :func:`equivalent` applies, in order:

1. an empty prediction is wrong; identical text (raw, then after ``strip_string``) is right;
   word answers compare without case;
2. numbers (ToRA's grader): decimal literals with ``isclose(rel_tol=1e-4)`` (plus the
   percent forms when asked), integers and integer fractions exactly, a decimal against a
   fraction within ``rel_tol=1e-3``;
3. compound answers element by element: tuples and intervals in order (brackets must
   agree), sets and "Enter all solutions" lists in any order, matrices cell by cell,
   unions part by part;
4. everything else: the ``symbolic`` callback, which the grader answers with sympy in its
   worker process (:mod:`mathsolve.scoring.sympy_worker`, where the symbolic rules live).

Steps 1-3 are pure string and number work: they never evaluate text, and they are what
almost every GSM8K-style answer needs, so they run in the caller's process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from mathsolve.scoring.answer import strip_string

__all__ = ["equivalent"]

_MAX_DEPTH = 4  # nesting of tuples/sets/matrices worth descending into


# ---------------------------------------------------------------------------
# Numbers (in process)
# ---------------------------------------------------------------------------

_PLAIN_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_INT = r"[+-]?\d+"
_FRAC_RE = re.compile(r"(-?)\\frac\{(" + _INT + r")\}\{(" + _INT + r")\}")
_SLASH_RE = re.compile(r"(" + _INT + r")/(" + _INT + r")")
_SCIENTIFIC_RE = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(?:\*|\\times|×)10\^(?:\{([+-]?\d+)\}|([+-]?\d))")


def _plain_number(text: str) -> float | None:
    """A decimal literal ("12", "-0.5", "3.54e-07", "1,234"), else ``None``.

    Commas are removed only when they form thousands groups: "1,234" is a number but
    "1,2" is a list of two answers. (ToRA drops every comma. The thousands case matters:
    11 ground truths of the GSM8K replay, such as "2,125", are written that way.)
    """
    if _THOUSANDS_RE.fullmatch(text):
        text = text.replace(",", "")
    if not _PLAIN_NUMBER_RE.fullmatch(text):
        return None
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    # A 400-digit literal reads as inf, and inf is "close" to every other inf.
    return value if math.isfinite(value) else None


def _huge_numbers_equal(prediction: str, reference: str) -> bool | None:
    """Exact verdict for decimal literals too large for a float, else ``None``."""
    texts = []
    for text in (prediction, reference):
        if _THOUSANDS_RE.fullmatch(text):
            text = text.replace(",", "")
        if not _PLAIN_NUMBER_RE.fullmatch(text):
            return None
        texts.append(text)
    try:
        return Decimal(texts[0]) == Decimal(texts[1])
    except (InvalidOperation, ValueError):
        return None


def _rational_value(text: str) -> Fraction | None:
    r"""Exact value of ``\frac{a}{b}`` / ``a/b`` with integers a, b, else ``None``."""
    match = _FRAC_RE.fullmatch(text) or _SLASH_RE.fullmatch(text)
    if not match:
        return None
    if match.re is _FRAC_RE:
        sign, numerator, denominator = match.groups()
    else:
        sign, (numerator, denominator) = "", match.groups()
    try:
        numerator_value = -int(numerator) if sign else int(numerator)
        return Fraction(numerator_value, int(denominator))
    except (ValueError, ZeroDivisionError):  # huge literals, zero denominators
        return None


def _scientific_value(text: str) -> float | None:
    r"""Value of ``3.54\times10^{-7}`` / ``3.54*10^{-7}``, else ``None``."""
    match = _SCIENTIFIC_RE.fullmatch(text)
    if not match:
        return None
    mantissa, braced, bare = match.groups()
    try:
        return float(mantissa) * 10.0 ** int(braced if braced is not None else bare)
    except (OverflowError, ValueError):
        return None


def _close(a: float, b: float, rel_tol: float) -> bool:
    try:
        return math.isclose(a, b, rel_tol=rel_tol)
    except (TypeError, OverflowError):
        return False


def _numbers_equal(prediction: float, reference: float, percent: bool) -> bool:
    """ToRA's numeric rule: isclose(rel_tol=1e-4), optionally with percent forms."""
    candidates = [reference, reference / 100, reference * 100] if percent else [reference]
    return any(_close(prediction, item, 1e-4) for item in candidates)


def _integer_value(text: str) -> Fraction | None:
    """An integer literal ("12", "-3", "1,234") as an exact value, else ``None``."""
    if _THOUSANDS_RE.fullmatch(text) and "." not in text:
        text = text.replace(",", "")
    if not re.fullmatch(_INT, text):
        return None
    try:
        return Fraction(int(text))
    except ValueError:  # beyond Python's int/str conversion limit (4300 digits)
        return None


def _exact_value(text: str) -> Fraction | None:
    """Exact value of an integer or integer fraction (explicit ``None`` checks: 0 is falsy)."""
    value = _rational_value(text)
    return value if value is not None else _integer_value(text)


def _compare_numbers(prediction: str, reference: str, percent: bool) -> bool | None:
    """Verdict when both sides are simple numbers; ``None`` when one is not.

    Two decimal literals use the reference's rel_tol=1e-4 (plus percent forms when
    enabled). When a fraction is involved the reference reached sympy: exact values
    (integers, integer fractions) must then be exactly equal (ToRA's rel_tol=1e-3
    numeric fallback would accept "1001" for "\\frac{2003}{2}"), while a decimal
    approximation of a fraction ("0.3333" for "\\frac{1}{3}") gets rel_tol=1e-3.
    """
    p_plain, r_plain = _plain_number(prediction), _plain_number(reference)
    if p_plain is not None and r_plain is not None:
        return _numbers_equal(p_plain, r_plain, percent)
    if p_plain is None or r_plain is None:
        huge = _huge_numbers_equal(prediction, reference)
        if huge is not None:
            return huge
    p_exact, r_exact = _exact_value(prediction), _exact_value(reference)
    if p_exact is not None and r_exact is not None:
        return p_exact == r_exact
    p_any = p_exact if p_exact is not None else (p_plain if p_plain is not None else _scientific_value(prediction))
    r_any = r_exact if r_exact is not None else (r_plain if r_plain is not None else _scientific_value(reference))
    if p_any is None or r_any is None:
        return None
    return _close(float(p_any), float(r_any), 1e-3)


# ---------------------------------------------------------------------------
# Structures: tuples, intervals, sets, matrices, unions, bare lists (in process)
# ---------------------------------------------------------------------------

_OPENERS, _CLOSERS = "([{", ")]}"
_MATRIX_RE = re.compile(r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.DOTALL)


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside any bracket (bracket kinds are not matched,
    so half-open intervals like ``[0,3)`` count as one group)."""
    parts: list[str] = []
    depth = 0
    start = 0
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth -= 1
        elif depth == 0 and text.startswith(separator, pos):
            parts.append(text[start:pos])
            pos += len(separator)
            start = pos
            continue
        pos += 1
    parts.append(text[start:])
    return parts


def _wraps_whole(text: str) -> bool:
    """Whether the first bracket closes at the very end ("(1,2)" yes, "(1)+(2)" no)."""
    depth = 0
    for pos, char in enumerate(text):
        if char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth -= 1
            if depth == 0:
                return pos == len(text) - 1
    return False


class _Structure:
    """A parsed compound answer: ``kind`` is matrix, union, set, seq or list."""

    __slots__ = ("kind", "items", "brackets")

    def __init__(self, kind: str, items: list[Any], brackets: str = "") -> None:
        self.kind = kind
        self.items = items
        self.brackets = brackets

    def flat_vector(self) -> list[str] | None:
        """Elements of a one-row or one-column matrix, else ``None``."""
        if self.kind != "matrix":
            return None
        if len(self.items) == 1:
            return list(self.items[0])
        if all(len(row) == 1 for row in self.items):
            return [row[0] for row in self.items]
        return None


def _parse_structure(text: str) -> _Structure | None:
    """Recognise a compound answer; ``None`` for a scalar."""
    matrix = _MATRIX_RE.fullmatch(text)
    if matrix:
        rows = [row for row in re.split(r"\\\\", matrix.group(2)) if row.strip()]
        return _Structure("matrix", [[cell.strip() for cell in row.split("&")] for row in rows])
    union = _split_top_level(text, "\\cup")
    if len(union) > 1:
        return _Structure("union", union)
    if text.startswith("\\{") and text.endswith("\\}"):
        return _Structure("set", _split_top_level(text[2:-2], ","))
    if len(text) >= 2 and text[0] in _OPENERS and text[-1] in _CLOSERS and _wraps_whole(text):
        items = _split_top_level(text[1:-1], ",")
        if len(items) < 2:
            return None  # "(x+1)" or "{5}" is grouping, not a tuple
        kind = "set" if text[0] == "{" and text[-1] == "}" else "seq"
        return _Structure(kind, items, text[0] + text[-1])
    items = _split_top_level(text, ",")
    if len(items) > 1:
        return _Structure("list", items)
    return None


def _unwrap_grouping(text: str) -> str:
    """``{5}`` / ``(5)`` / ``[5]`` around a whole scalar answer is only grouping."""
    while len(text) >= 2 and text[0] in _OPENERS and text[-1] in _CLOSERS and _wraps_whole(text):
        inner = text[1:-1]
        if len(_split_top_level(inner, ",")) > 1:
            break
        text = inner
    return text


# ---------------------------------------------------------------------------
# The order of the steps
# ---------------------------------------------------------------------------


def equivalent(prediction: str, reference: str, *, percent: bool, symbolic: Callable[[str, str], bool]) -> bool:
    """Whether ``prediction`` counts as ``reference`` (both already stripped of white space).

    ``percent`` also accepts a number equal to the reference times or divided by 100
    (ToRA's percent forms). ``symbolic(prediction, reference)`` decides what the string,
    number and structure rules cannot; it is called on the normalised texts, possibly
    on elements of compound answers.
    """
    return _Judge(percent, symbolic).equal(prediction, reference, 0)


class _Judge:
    """One top-level comparison's settings, shared by the comparisons of its elements."""

    def __init__(self, percent: bool, symbolic: Callable[[str, str], bool]) -> None:
        self.percent = percent
        self.symbolic = symbolic

    def equal(self, prediction: str, reference: str, depth: int) -> bool:
        if not prediction:
            return False  # an empty answer is never right, even against an empty reference
        if prediction == reference:
            return True
        p, r = strip_string(prediction), strip_string(reference)
        if not p:
            return False
        if p == r:
            return True
        # Word answers ("White" / "white", choice letters): case does not matter.
        if p.isalpha() and p.lower() == r.lower():
            return True
        verdict = _compare_numbers(p, r, self.percent)
        if verdict is not None:
            return verdict
        p, r = _unwrap_grouping(p), _unwrap_grouping(r)
        if p == r:
            return True
        verdict = self._compare_structures(p, r, depth)
        if verdict is not None:
            return verdict
        return self.symbolic(p, r)

    def _all_equal(self, predictions: list[str], references: list[str], depth: int) -> bool:
        return len(predictions) == len(references) and all(
            self.equal(p, r, depth + 1) for p, r in zip(predictions, references)
        )

    def _unordered_equal(self, predictions: list[str], references: list[str], depth: int) -> bool:
        """Multiset equality: every reference element matched by a distinct prediction."""
        if len(predictions) != len(references):
            return False
        unused = list(predictions)
        for reference in references:
            match = next((i for i, p in enumerate(unused) if self.equal(p, reference, depth + 1)), None)
            if match is None:
                return False
            unused.pop(match)
        return True

    def _compare_structures(self, prediction: str, reference: str, depth: int) -> bool | None:
        """Verdict for compound answers; ``None`` when neither side is compound."""
        ps, rs = _parse_structure(prediction), _parse_structure(reference)
        if ps is None and rs is None:
            return None
        if ps is None or rs is None or depth >= _MAX_DEPTH:
            # A tuple is never a scalar; too-deep nesting is left to plain equality.
            return False
        if ps.kind == "matrix" and rs.kind == "matrix":
            return len(ps.items) == len(rs.items) and all(
                self._all_equal(p_row, r_row, depth) for p_row, r_row in zip(ps.items, rs.items)
            )
        p_vector, r_vector = ps.flat_vector(), rs.flat_vector()
        if p_vector is not None or r_vector is not None:
            # A column vector written as a tuple: "(1,2)" for pmatrix(1 \\ 2).
            p_items = p_vector if p_vector is not None else ps.items
            r_items = r_vector if r_vector is not None else rs.items
            if ps.kind in ("matrix", "seq", "list") and rs.kind in ("matrix", "seq", "list"):
                return self._all_equal(p_items, r_items, depth)
            return False
        if ps.kind == "union" or rs.kind == "union":
            return ps.kind == rs.kind and self._all_equal(ps.items, rs.items, depth)
        if ps.kind == "seq" and rs.kind == "seq":
            # Intervals: "[0,1)" is not "[0,1]"; tuples keep their order.
            return ps.brackets == rs.brackets and self._all_equal(ps.items, rs.items, depth)
        if "set" in (ps.kind, rs.kind):
            if {ps.kind, rs.kind} <= {"set", "list"}:
                return self._unordered_equal(ps.items, rs.items, depth)
            return False
        if ps.kind == "list" and rs.kind == "list":
            # Comma-separated answers ("Enter all solutions") are unordered.
            return self._all_equal(ps.items, rs.items, depth) or self._unordered_equal(
                ps.items, rs.items, depth
            )
        # A bare list against a tuple: compare the elements in order (ToRA strips the brackets).
        return self._all_equal(ps.items, rs.items, depth)

