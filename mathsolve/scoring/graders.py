"""Which grader judges an answer: ``--grader reference|math-verify|auto``.

``reference``    the 2023-2024 harnesses' rules (:mod:`mathsolve.scoring.equivalence`, run by
                 :class:`~mathsolve.scoring.grader.Grader`): what the published ToRA, MathCoder,
                 DART-Math, Qwen2.5-Math and NuminaMath figures were computed with;
``math-verify``  Hugging Face's math-verify (:class:`~mathsolve.scoring.mathverify_grader.MathVerifyGrader`),
                 what today's harnesses grade with;
``auto``         each record by its protocol's ``grader`` attribute
                 (:attr:`mathsolve.formats.base.Protocol.grader`); reference when the protocol
                 is unknown.

A run resolves ``auto`` once, for its protocol, and records the result in its ``run`` block
(:mod:`mathsolve.core.provenance`); ``mathsolve grade`` resolves it per record, preferring
the grader a record's ``run`` names, so re-grading an eval's records reproduces its figure.
"""

from __future__ import annotations

from typing import Any, Protocol as TypingProtocol

from mathsolve.errors import UsageError

__all__ = ["AUTO", "CHOICES", "GRADERS", "REFERENCE", "Judge", "GraderPool", "effective_grader", "open_grader",
           "protocol_grader"]

REFERENCE = "reference"
MATH_VERIFY = "math-verify"
AUTO = "auto"
GRADERS = (REFERENCE, MATH_VERIFY)
CHOICES = (AUTO, *GRADERS)


class Judge(TypingProtocol):
    """What a grader offers its callers (batches, voting, re-grading)."""

    def equal(self, prediction: str, reference: str) -> bool: ...
    def close(self) -> None: ...


def protocol_grader(protocol: Any) -> str:
    """The grader a protocol asks for; a plugin protocol without the attribute asks for reference."""
    name = getattr(protocol, "grader", REFERENCE)
    if name not in GRADERS:
        raise UsageError(f"protocol {getattr(protocol, 'name', '?')!r} names an unknown grader {name!r} "
                         f"(expected {' or '.join(GRADERS)})")
    return name


def effective_grader(choice: str, protocol: Any | None) -> str:
    """The grader ``choice`` means for records of ``protocol`` (None: unknown protocol)."""
    if choice in GRADERS:
        return choice
    if choice != AUTO:
        raise UsageError(f"unknown grader {choice!r} (expected {', '.join(CHOICES)})")
    return REFERENCE if protocol is None else protocol_grader(protocol)


def open_grader(name: str, *, percent: bool = True, timeout: float | None = None) -> Judge:
    """A new grader of kind ``name``; use it as a context manager (it owns a worker process).

    ``percent`` and ``timeout`` are the reference grader's: ``percent`` keeps the reference
    harnesses' rule that a number also equals the reference times or divided by 100 (the
    published figures count it), ``timeout`` its seconds per comparison. math-verify has
    percent rules and a time limit of its own (MATH_VERIFY_TIMEOUT).
    """
    if name == REFERENCE:
        from mathsolve.scoring.grader import DEFAULT_TIMEOUT, Grader

        return Grader(percent=percent, timeout=DEFAULT_TIMEOUT if timeout is None else timeout)
    if name == MATH_VERIFY:
        from mathsolve.scoring.mathverify_grader import INSTALL_HINT, MathVerifyGrader, math_verify_installed

        if not math_verify_installed():  # said now, not after the first problem is solved
            raise UsageError(f"--grader math-verify needs the math-verify package; {INSTALL_HINT}")
        return MathVerifyGrader()
    raise UsageError(f"unknown grader {name!r} (expected {' or '.join(GRADERS)})")


class GraderPool:
    """One grader of each kind, opened on first need (re-grading a file whose records ask
    for different graders); a context manager that closes them all."""

    def __init__(self, *, percent: bool = True, timeout: float | None = None) -> None:
        self.percent, self.timeout = percent, timeout
        self._open: dict[str, Judge] = {}

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get(self, name: str) -> Judge:
        if name not in self._open:
            self._open[name] = open_grader(name, percent=self.percent, timeout=self.timeout)
        return self._open[name]

    def close(self) -> None:
        for grader in self._open.values():
            grader.close()
        self._open.clear()
