"""Answer equivalence grading and ground-truth parsing.

:func:`math_equal` follows ToRA's grader: numbers are compared with
``isclose(rel_tol=1e-4)``; brackets, tuples, intervals, sets and matrices are compared
element by element; anything else goes to sympy (LaTeX parse or ``parse_expr``, then
``simplify(a - b) == 0`` or numeric evaluation within ``rel_tol=1e-3``).

Security: model output is untrusted and sympy's parsers ``eval`` text, so every sympy
step runs in a separate worker process (:mod:`mathsolve._grading_worker`), started on
first need, reused, and killed and restarted when a comparison exceeds its time limit
(a time-out counts as "not equal"). String and number comparisons stay in this process:
they are what almost every GSM8K-style record needs, and they never evaluate anything.
"""

from __future__ import annotations

import atexit
import json
import math
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

from mathsolve.answer import find_last_boxed, strip_string
from mathsolve.errors import MathsolveError

__all__ = [
    "DEFAULT_TIMEOUT",
    "Grader",
    "GradingError",
    "latex_parser_available",
    "math_equal",
    "parse_ground_truth",
    "DATASETS",
]

DEFAULT_TIMEOUT = 3.0  # seconds per comparison, as in the reference evaluation
_WORKER_START_TIMEOUT = 120.0  # importing sympy + antlr on a cold disk can be slow
_WORKER_PATH = Path(__file__).with_name("_grading_worker.py")
_MAX_DEPTH = 4  # nesting of tuples/sets/matrices worth descending into


class GradingError(MathsolveError):
    """The grader cannot work (worker failed to start, LaTeX parser missing)."""


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
# The worker process
# ---------------------------------------------------------------------------


class _Worker:
    """One running sympy worker process and the thread that reads its answers."""

    def __init__(self, workdir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(_WORKER_PATH)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        # A reader thread rather than select(): it works on every platform and lets the
        # caller wait on a queue with a timeout.
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()
        self.next_id = 0

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)  # end of stream: the worker died

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """Next message, or ``None`` on time-out or when the worker died."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:
                return None
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours; the protocol channel should never carry this
            if isinstance(message, dict):
                return message

    def send(self, request: dict[str, Any]) -> bool:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Stop the process now (used after a time-out: it may be stuck in sympy)."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def stop(self) -> None:
        """Ask the process to finish (stdin EOF), killing it if it does not."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


# ---------------------------------------------------------------------------
# The grader
# ---------------------------------------------------------------------------


@dataclass
class _Rules:
    """Settings of one top-level comparison, shared by its element comparisons."""

    # time.monotonic() value after which the answer is "not equal"; pushed back by the
    # time a worker takes to start, which is no part of the comparison.
    deadline: float
    percent: bool


class Grader:
    """Decides whether a predicted answer equals a reference answer.

    Use as a context manager (or call :meth:`close`) so the sympy worker is stopped.
    ``percent`` accepts the reference times or divided by 100 for numbers, as ToRA's
    grader does; it is off by default because it also accepts "100" for "1" (see
    :func:`math_equal`).
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        percent: bool = False,
        require_latex: bool = True,
        workdir: Path | None = None,
    ) -> None:
        self.timeout = timeout
        self.percent = percent
        self.require_latex = require_latex
        self._workdir_arg = workdir
        self._workdir: Path | None = None
        self._worker: _Worker | None = None
        self._latex: bool | None = None
        self._latex_error: str | None = None
        self._lock = threading.RLock()
        self.restarts = 0  # workers killed after a time-out (for diagnostics and tests)

    # -- context management -------------------------------------------------

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker process and remove its scratch directory."""
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None
            if self._workdir is not None and self._workdir_arg is None:
                shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # -- public API ---------------------------------------------------------

    def equal(
        self, prediction: object, reference: object, *, timeout: float | None = None, percent: bool | None = None
    ) -> bool:
        """Whether ``prediction`` is equivalent to ``reference`` (within the time limit).

        ``timeout`` and ``percent`` override the grader's settings for this call.
        """
        limit = self.timeout if timeout is None else timeout
        rules = _Rules(deadline=time.monotonic() + limit, percent=self.percent if percent is None else percent)
        return self._equal(str(prediction).strip(), str(reference).strip(), rules, 0)

    def latex_available(self) -> bool:
        """Whether the worker can parse LaTeX (starts the worker if needed).

        With ``require_latex`` (the default) a worker without it raises
        :class:`GradingError` instead.
        """
        with self._lock:
            self._ensure_worker()
            return bool(self._latex)

    @property
    def worker_pid(self) -> int | None:
        """Process id of the running worker, ``None`` when none runs."""
        worker = self._worker
        return worker.process.pid if worker is not None and worker.alive else None

    # -- comparison steps ---------------------------------------------------

    def _equal(self, prediction: str, reference: str, rules: _Rules, depth: int) -> bool:
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
        verdict = _compare_numbers(p, r, rules.percent)
        if verdict is not None:
            return verdict
        p, r = _unwrap_grouping(p), _unwrap_grouping(r)
        if p == r:
            return True
        verdict = self._compare_structures(p, r, rules, depth)
        if verdict is not None:
            return verdict
        return self._symbolic_equal(p, r, rules)

    def _all_equal(self, predictions: list[str], references: list[str], rules: _Rules, depth: int) -> bool:
        return len(predictions) == len(references) and all(
            self._equal(p, r, rules, depth + 1) for p, r in zip(predictions, references)
        )

    def _unordered_equal(self, predictions: list[str], references: list[str], rules: _Rules, depth: int) -> bool:
        """Multiset equality: every reference element matched by a distinct prediction."""
        if len(predictions) != len(references):
            return False
        unused = list(predictions)
        for reference in references:
            match = next((i for i, p in enumerate(unused) if self._equal(p, reference, rules, depth + 1)), None)
            if match is None:
                return False
            unused.pop(match)
        return True

    def _compare_structures(self, prediction: str, reference: str, rules: _Rules, depth: int) -> bool | None:
        """Verdict for compound answers; ``None`` when neither side is compound."""
        ps, rs = _parse_structure(prediction), _parse_structure(reference)
        if ps is None and rs is None:
            return None
        if ps is None or rs is None or depth >= _MAX_DEPTH:
            # A tuple is never a scalar; too-deep nesting is left to plain equality.
            return False
        if ps.kind == "matrix" and rs.kind == "matrix":
            return len(ps.items) == len(rs.items) and all(
                self._all_equal(p_row, r_row, rules, depth) for p_row, r_row in zip(ps.items, rs.items)
            )
        p_vector, r_vector = ps.flat_vector(), rs.flat_vector()
        if p_vector is not None or r_vector is not None:
            # A column vector written as a tuple: "(1,2)" for pmatrix(1 \\ 2).
            p_items = p_vector if p_vector is not None else ps.items
            r_items = r_vector if r_vector is not None else rs.items
            if ps.kind in ("matrix", "seq", "list") and rs.kind in ("matrix", "seq", "list"):
                return self._all_equal(p_items, r_items, rules, depth)
            return False
        if ps.kind == "union" or rs.kind == "union":
            return ps.kind == rs.kind and self._all_equal(ps.items, rs.items, rules, depth)
        if ps.kind == "seq" and rs.kind == "seq":
            # Intervals: "[0,1)" is not "[0,1]"; tuples keep their order.
            return ps.brackets == rs.brackets and self._all_equal(ps.items, rs.items, rules, depth)
        if "set" in (ps.kind, rs.kind):
            if {ps.kind, rs.kind} <= {"set", "list"}:
                return self._unordered_equal(ps.items, rs.items, rules, depth)
            return False
        if ps.kind == "list" and rs.kind == "list":
            # Comma-separated answers ("Enter all solutions") are unordered.
            return self._all_equal(ps.items, rs.items, rules, depth) or self._unordered_equal(
                ps.items, rs.items, rules, depth
            )
        # A bare list against a tuple: compare the elements in order (ToRA strips the brackets).
        return self._all_equal(ps.items, rs.items, rules, depth)

    # -- the worker ---------------------------------------------------------

    def _ensure_worker(self) -> _Worker:
        """Start the worker if none runs; raise :class:`GradingError` if it cannot."""
        if self._worker is not None and self._worker.alive:
            return self._worker
        if self._worker is not None:
            self._worker.kill()
            self._worker = None
        if self._workdir is None:
            # The worker runs in a scratch directory of its own: even a file written
            # by a sympy bug lands there, never in the user's directory.
            self._workdir = self._workdir_arg or Path(tempfile.mkdtemp(prefix="mathsolve-grader-"))
        worker = _Worker(self._workdir)
        hello = worker.receive(_WORKER_START_TIMEOUT)
        if hello is None or not hello.get("ready"):
            worker.kill()
            raise GradingError(f"the sympy grading worker did not start ({sys.executable} -I {_WORKER_PATH})")
        self._latex = bool(hello.get("latex"))
        self._latex_error = hello.get("latex_error")
        if self.require_latex and not self._latex:
            worker.stop()
            raise GradingError(
                "LaTeX answers cannot be graded: sympy's parse_latex does not work "
                f"({self._latex_error}); install antlr4-python3-runtime 4.11 "
                "(pip install 'antlr4-python3-runtime==4.11.*')"
            )
        self._worker = worker
        return worker

    def _symbolic_equal(self, prediction: str, reference: str, rules: _Rules) -> bool:
        """Ask the worker; a time-out kills it (it may be stuck) and counts as not equal."""
        with self._lock:
            if rules.deadline <= time.monotonic():
                return False
            starting = time.monotonic()
            worker = self._ensure_worker()
            rules.deadline += time.monotonic() - starting
            deadline = rules.deadline
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            worker.next_id += 1
            request_id = worker.next_id
            if not worker.send({"id": request_id, "op": "equal", "a": prediction, "b": reference}):
                self._discard_worker()
                return False
            while True:
                reply = worker.receive(remaining)
                if reply is None:
                    self._discard_worker()
                    return False
                if reply.get("id") == request_id:
                    return bool(reply.get("equal"))
                remaining = deadline - time.monotonic()  # a stale reply: keep waiting

    def _discard_worker(self) -> None:
        """Kill the current worker; the next symbolic comparison starts a fresh one."""
        if self._worker is not None:
            self._worker.kill()
            self._worker = None
            self.restarts += 1


# ---------------------------------------------------------------------------
# Module-level conveniences
# ---------------------------------------------------------------------------

_default_grader: Grader | None = None
_default_lock = threading.Lock()
_exit_hook_registered = False


def _shared_grader() -> Grader:
    """The lazily created grader behind :func:`math_equal`, stopped at exit."""
    global _default_grader, _exit_hook_registered
    with _default_lock:
        if _default_grader is None:
            _default_grader = Grader()
            if not _exit_hook_registered:
                atexit.register(_close_shared_grader)
                _exit_hook_registered = True
        return _default_grader


def _close_shared_grader() -> None:
    global _default_grader
    if _default_grader is not None:
        _default_grader.close()
        _default_grader = None


def math_equal(
    prediction: str, reference: str, *, timeout: float = DEFAULT_TIMEOUT, percent: bool = False
) -> bool:
    """Whether ``prediction`` is mathematically equivalent to ``reference``.

    Both are normalised with :func:`strip_string` first. Numbers compare with
    ``isclose(rel_tol=1e-4)``; compound answers element by element; the rest via sympy
    in a worker process, under ``timeout`` seconds (a time-out means "not equal").

    ``percent=True`` applies ToRA's percent forms literally: the reference times or
    divided by 100 also matches. It is off by default because it makes "100" equal to
    "1"; the re-grading of published results (:func:`mathsolve.grade.grade_file`) turns
    it on, since the published figures count those matches (ToRA-Code-34B GSM8K:
    0.7 for a 70% pass rate is right, but so is 0.05 for 5 pounds).
    """
    return _shared_grader().equal(prediction, reference, timeout=timeout, percent=percent)


def latex_parser_available() -> bool:
    """Whether sympy's ``parse_latex(r"\\frac{1}{2}")`` works in the grading worker.

    It needs ``antlr4-python3-runtime`` of the 4.11 series (sympy 1.12-1.14). Without it
    LaTeX answers would silently grade as wrong, so graders refuse to run instead.
    """
    try:
        # The shared grader's worker is then ready for the math_equal calls that follow.
        return _shared_grader().latex_available()
    except GradingError:
        return False


# ---------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------

# Data set name -> canonical name. Each evaluation set stores its answer differently.
_DATASET_ALIASES = {
    "gsm8k": "gsm8k",
    "math": "math",
    "math500": "math500",
    "math-500": "math500",
    "math_500": "math500",
    "svamp": "svamp",
    "asdiv": "asdiv",
    "mawps": "mawps",
    "gsm-hard": "gsm-hard",
    "gsm_hard": "gsm-hard",
    "gsmhard": "gsm-hard",
    "aime24": "aime24",
    "amc23": "amc23",
    "minerva_math": "minerva_math",
    "minerva-math": "minerva_math",
    "minerva": "minerva_math",
    "theoremqa": "theoremqa",
    "theorem_qa": "theoremqa",
    "deepmind-mathematics": "deepmind-mathematics",
    "deepmind_mathematics": "deepmind-mathematics",
    "tora": "tora",
}
DATASETS = tuple(sorted(set(_DATASET_ALIASES.values())))


def _detect_dataset(record: dict[str, Any]) -> str:
    """Guess the data set from the record's field names."""
    keys = set(record)
    if {"question", "gt", "code"} <= keys:
        return "tora"  # released ToRA outputs carry their ground truth as "gt"
    if "Answer" in keys and ("Answer_type" in keys or "theorem" in keys):
        return "theoremqa"
    if {"Answer", "Body", "Equation"} <= keys:
        return "svamp"
    if {"body", "formula", "answer"} <= keys:
        return "asdiv"
    if {"target", "code"} <= keys:
        return "gsm-hard"
    if "target" in keys:
        return "mawps"
    if "answer" in keys and isinstance(record["answer"], str) and "####" in record["answer"]:
        return "gsm8k"
    if "answer" in keys and "unique_id" in keys:
        return "math500"
    if "answer" in keys and "url" in keys:
        return "aime24" if isinstance(record["answer"], str) else "amc23"
    if "solution" in keys and "answer" not in keys:
        return "math"  # MATH and Minerva keep the answer boxed in the solution
    if "answer" in keys:
        return "deepmind-mathematics"
    raise ValueError(f"cannot tell the data set of a record with fields {sorted(keys)}")


def _format_number(value: object) -> str:
    """Ground truths stored as JSON numbers: 27.0 -> "27" (strip_string drops ".0")."""
    return str(value)


def _raw_ground_truth(record: dict[str, Any], dataset: str) -> str:
    if dataset == "gsm8k":
        return str(record["answer"]).split("####")[-1].replace(",", "").strip()
    if dataset in ("math", "minerva_math"):
        boxed = find_last_boxed(str(record["solution"]))
        if boxed is None:
            raise ValueError("the solution has no \\boxed{} answer")
        return boxed
    if dataset == "svamp":
        return _format_number(record["Answer"])
    if dataset == "asdiv":
        # "9 (apples)": the unit in parentheses is not part of the answer.
        return re.sub(r"\(.*?\)", "", str(record["answer"])).strip()
    if dataset in ("mawps", "gsm-hard"):
        return _format_number(record["target"])
    if dataset == "theoremqa":
        return _format_number(record["Answer"])
    if dataset == "tora":
        return str(record["gt"])
    # math500, aime24, amc23, deepmind-mathematics: a plain "answer" field.
    return _format_number(record["answer"])


def parse_ground_truth(record: dict[str, Any], dataset: str | None = None) -> str:
    """The normalised reference answer of an evaluation record.

    ``dataset`` names the evaluation set (see ``DATASETS``); ``None`` detects it from
    the record's fields. Raises ``ValueError`` for an unknown set or a record without
    a usable answer.
    """
    if dataset is None:
        name = _detect_dataset(record)
    else:
        name = _DATASET_ALIASES.get(dataset.lower())
        if name is None:
            raise ValueError(f"unknown data set {dataset!r}; known: {', '.join(DATASETS)}")
    try:
        raw = _raw_ground_truth(record, name)
    except KeyError as exc:
        raise ValueError(f"{name} record has no {exc.args[0]!r} field") from None
    return strip_string(raw)
