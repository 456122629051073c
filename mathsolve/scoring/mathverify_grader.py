"""The modern grader: Hugging Face's math-verify judges whether two answers are equal.

Today's harnesses (NeMo-Skills for OpenMath-Nemotron, the gpt-oss and Qwen3 evaluations)
grade with math-verify rather than the 2023-2024 rules of :mod:`mathsolve.scoring.equivalence`.
Answer extraction stays the protocol's (``answer_style`` on ``answer_text``): both graders
judge the same extracted answer, and only the verdict differs. math-verify runs in a worker
process (:mod:`mathsolve.scoring.mathverify_worker`, started as ``python -I <its file>``),
for the reasons the reference grader's sympy does, plus one: math-verify's time limits are
SIGALRM alarms, which only work in a main thread. The worker grades in its main thread, and
the grader kills it when an answer is late (an alarm cannot interrupt C code); a late
answer counts as "not equal".
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

from mathsolve.scoring.grader import GradingError
from mathsolve.scoring.worker_process import WorkerGrader, WorkerProcess

__all__ = ["INSTALL_HINT", "MATH_VERIFY_TIMEOUT", "MathVerifyGrader", "math_verify_installed"]

# Seconds per comparison: math-verify's own default for each of its steps (parse, verify).
MATH_VERIFY_TIMEOUT = 5.0
# The worker gets this much longer than its own alarms before it is killed: an alarm that
# fires answers "not equal" and keeps the warm worker; only a worker stuck where no alarm
# reaches it is killed and restarted.
_GRACE = 1.0
_WORKER_START_TIMEOUT = 120.0  # importing sympy and latex2sympy on a cold disk can be slow
_WORKER_PATH = Path(__file__).with_name("mathverify_worker.py")
INSTALL_HINT = "install it with: pip install 'math-verify>=0.9,<0.10' (./install.sh does)"


def math_verify_installed() -> bool:
    """Whether the math-verify package is importable here (the worker uses this interpreter)."""
    return importlib.util.find_spec("math_verify") is not None


class MathVerifyGrader(WorkerGrader):
    """Decides with math-verify whether a predicted answer equals a reference answer.

    Same use as :class:`mathsolve.scoring.grader.Grader`: ``equal(prediction, reference)``,
    as a context manager (or :meth:`close`) so the worker is stopped.
    """

    name = "math-verify"

    @property
    def script(self) -> Path:  # read when a worker starts: tests point it at a fake worker
        return _WORKER_PATH
    scratch_prefix = "mathsolve-mathverify-"
    start_timeout = _WORKER_START_TIMEOUT

    def __init__(self, *, timeout: float = MATH_VERIFY_TIMEOUT, workdir: Path | None = None) -> None:
        super().__init__(workdir=workdir)
        self.timeout = timeout
        self.version: str | None = None  # math-verify's, once the worker started

    def equal(self, prediction: object, reference: object, *, timeout: float | None = None) -> bool:
        """math-verify's ``verify(parse(reference), parse(prediction))`` (gold first: verify
        is not symmetric), within ``timeout`` seconds (default: the grader's)."""
        prediction, reference = str(prediction).strip(), str(reference).strip()
        if not prediction:
            return False  # an empty answer is never right (math-verify agrees: nothing parses)
        limit = self.timeout if timeout is None else timeout
        seconds = max(1, math.ceil(limit))  # SIGALRM counts whole seconds
        with self._lock:
            worker = self._ensure_worker()
            # Counted from here: starting a worker is no part of the comparison's limit.
            deadline = time.monotonic() + limit + _GRACE
            reply = worker.ask({"op": "equal", "gold": reference, "answer": prediction, "timeout": seconds}, deadline)
            if reply is None:  # late (stuck where no alarm reaches) or dead
                self._discard_worker()
                return False
            return bool(reply.get("equal"))

    def _accept(self, worker: WorkerProcess, hello: dict) -> None:
        if not hello.get("available"):
            worker.stop()
            raise GradingError(f"the math-verify grader cannot run ({hello.get('error')}); {INSTALL_HINT}")
        self.version = hello.get("version")
