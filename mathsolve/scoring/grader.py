"""The grader client: :class:`Grader` decides whether a prediction equals a reference.

The rules themselves are in :mod:`mathsolve.scoring.equivalence`; this module runs them
and supplies their last step, symbolic equality with sympy. Model output is untrusted and
sympy's parsers ``eval`` text, so every sympy step runs in a separate worker process
(:mod:`mathsolve.scoring.sympy_worker`, started as ``python -I <its file>``), started on
first need, reused, and killed and restarted when a comparison exceeds its time limit (a
time-out counts as "not equal"). String and number comparisons stay in this process:
they are what almost every GSM8K-style record needs, and they never evaluate anything.
"""

from __future__ import annotations

import atexit
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mathsolve.scoring.equivalence import equivalent
from mathsolve.scoring.worker_process import GradingError, WorkerGrader, WorkerProcess

__all__ = ["DEFAULT_TIMEOUT", "Grader", "GradingError", "latex_parser_available", "math_equal"]

DEFAULT_TIMEOUT = 3.0  # seconds per comparison, as in the reference evaluation
_WORKER_START_TIMEOUT = 120.0  # importing sympy + antlr on a cold disk can be slow
# Run as a script, not as a module: it imports nothing from mathsolve (see its docstring).
_WORKER_PATH = Path(__file__).with_name("sympy_worker.py")


# ---------------------------------------------------------------------------
# The grader
# ---------------------------------------------------------------------------


@dataclass
class _Rules:
    """The time limit of one top-level comparison, shared by its element comparisons."""

    # time.monotonic() value after which the answer is "not equal"; pushed back by the
    # time a worker takes to start, which is no part of the comparison.
    deadline: float


class Grader(WorkerGrader):
    """Decides whether a predicted answer equals a reference answer.

    Use as a context manager (or call :meth:`close`) so the sympy worker is stopped.
    ``percent`` accepts the reference times or divided by 100 for numbers, as ToRA's
    grader does; it is off by default because it also accepts "100" for "1" (see
    :func:`math_equal`).
    """

    name = "reference"  # its --grader name (mathsolve.scoring.graders)

    @property
    def script(self) -> Path:  # read when a worker starts: tests point it at a fake worker
        return _WORKER_PATH
    start_timeout = _WORKER_START_TIMEOUT

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        percent: bool = False,
        require_latex: bool = True,
        workdir: Path | None = None,
    ) -> None:
        super().__init__(workdir=workdir)
        self.timeout = timeout
        self.percent = percent
        self.require_latex = require_latex
        self._latex: bool | None = None
        self._latex_error: str | None = None

    # -- public API ---------------------------------------------------------

    def equal(
        self, prediction: object, reference: object, *, timeout: float | None = None, percent: bool | None = None
    ) -> bool:
        """Whether ``prediction`` is equivalent to ``reference`` (within the time limit).

        ``timeout`` and ``percent`` override the grader's settings for this call.
        """
        limit = self.timeout if timeout is None else timeout
        rules = _Rules(deadline=time.monotonic() + limit)
        return equivalent(str(prediction).strip(), str(reference).strip(),
                          percent=self.percent if percent is None else percent,
                          symbolic=lambda p, r: self._symbolic_equal(p, r, rules))

    def latex_available(self) -> bool:
        """Whether the worker can parse LaTeX (starts the worker if needed).

        With ``require_latex`` (the default) a worker without it raises
        :class:`GradingError` instead.
        """
        with self._lock:
            self._ensure_worker()
            return bool(self._latex)

    # -- the worker ---------------------------------------------------------

    def _accept(self, worker: WorkerProcess, hello: dict) -> None:
        self._latex = bool(hello.get("latex"))
        self._latex_error = hello.get("latex_error")
        if self.require_latex and not self._latex:
            worker.stop()
            raise GradingError(
                "LaTeX answers cannot be graded: sympy's parse_latex does not work "
                f"({self._latex_error}); install antlr4-python3-runtime 4.11 "
                "(pip install 'antlr4-python3-runtime==4.11.*')"
            )

    def _symbolic_equal(self, prediction: str, reference: str, rules: _Rules) -> bool:
        """Ask the worker; a time-out kills it (it may be stuck) and counts as not equal."""
        with self._lock:
            if rules.deadline <= time.monotonic():
                return False
            starting = time.monotonic()
            worker = self._ensure_worker()
            rules.deadline += time.monotonic() - starting
            if rules.deadline <= time.monotonic():
                return False
            reply = worker.ask({"op": "equal", "a": prediction, "b": reference}, rules.deadline)
            if reply is None:  # late (it may be stuck in sympy) or dead
                self._discard_worker()
                return False
            return bool(reply.get("equal"))


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

    Both are normalised with :func:`~mathsolve.scoring.answer.strip_string` first.
    Numbers compare with ``isclose(rel_tol=1e-4)``; compound answers element by element;
    the rest via sympy in a worker process, under ``timeout`` seconds (a time-out means
    "not equal").

    ``percent=True`` applies ToRA's percent forms literally: the reference times or
    divided by 100 also matches. It is off by default because it makes "100" equal to
    "1"; the re-grading of published results
    (:func:`mathsolve.scoring.regrade.grade_file`) turns it on, since the published
    figures count those matches (ToRA-Code-34B GSM8K: 0.7 for a 70% pass rate is right,
    but so is 0.05 for 5 pounds).
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

