"""math-verify worker: judges answers with Hugging Face's math-verify in a process of its own.

Started as ``python -I <this file>`` by :class:`mathsolve.scoring.mathverify_grader.MathVerifyGrader`;
it imports nothing from mathsolve (standard library and math-verify only), so ``-I`` keeps
the environment, the user site and the current directory out of its import path.

Why a process: math-verify parses LaTeX into sympy and simplifies it, which can run for
minutes on a hostile answer ("10^{10^{10^{10}}}"). Its own time limits are SIGALRM alarms,
which only work in the main thread: called from any other thread (a concurrent batch grades
in worker threads) math-verify cannot arm them. Here every comparison runs in this
process's main thread, so the alarms work, and the parent kills the process when an answer
is late anyway (an alarm cannot interrupt C code that never returns to the interpreter).

Protocol: JSON lines. On start ``{"ready": true, "available": <bool>, "version": <str|null>,
"error": <str|null>}``; then for every ``{"id": n, "op": "equal", "gold": str, "answer": str,
"timeout": <whole seconds>}`` the answer ``{"id": n, "equal": bool}`` (``{"id": n, "error":
str}`` for a malformed request).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

_MEMORY_LIMIT_BYTES = 4 * 1024**3

# math-verify's LaTeX extraction looks for an answer inside a math environment (or
# \boxed{}); a bare "2\frac{1}{3}" parses to nothing. An answer outside one is wrapped in
# $...$, the rule NVIDIA NeMo-Skills applies before calling math-verify
# (nemo_skills/evaluation/math_grader.py, math_equal: "math_verify.parse expects input to
# be in latex environment, e.g. $...$").
_LATEX_ENVIRONMENT = re.compile(r"\$.*\$|\\\(.*\\\)|\\\[.*\\\]|\\boxed\{", re.DOTALL)


def _limit_memory() -> None:
    """Cap the address space where the platform allows it (POSIX only)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = _MEMORY_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(hard, _MEMORY_LIMIT_BYTES)
        if soft == resource.RLIM_INFINITY or soft > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


def _load() -> tuple[Any, str | None, str | None]:
    """(the math_verify module or None, its version, why it cannot be used)."""
    try:
        import math_verify
        from importlib.metadata import version

        # Parse once: latex2sympy2_extended needs an ANTLR runtime it ships a parser for.
        if not math_verify.verify(math_verify.parse("$\\frac{1}{2}$"), math_verify.parse("$0.5$")):
            return None, None, "math-verify does not parse \\frac{1}{2} (an ANTLR runtime it does not support?)"
        return math_verify, version("math-verify"), None
    except Exception as exc:  # ImportError, an unsupported ANTLR runtime, ...
        return None, None, f"{type(exc).__name__}: {exc}"


def in_latex_environment(text: str) -> str:
    """``text`` as math-verify's LaTeX extraction expects it."""
    return text if _LATEX_ENVIRONMENT.search(text) else f"${text}$"


def equal(math_verify: Any, gold: str, answer: str, seconds: int) -> bool:
    """math-verify's verdict: ``verify(parse(gold), parse(answer))``, in that order (verify is
    not symmetric), each step under math-verify's own ``seconds`` alarm."""
    parsed_gold = math_verify.parse(in_latex_environment(gold), parsing_timeout=seconds)
    parsed_answer = math_verify.parse(in_latex_environment(answer), parsing_timeout=seconds)
    return bool(math_verify.verify(parsed_gold, parsed_answer, timeout_seconds=seconds))


def _answer(math_verify: Any, request: dict[str, Any]) -> dict[str, Any]:
    ident = request.get("id")
    gold, answer, seconds = request.get("gold"), request.get("answer"), request.get("timeout")
    valid_seconds = isinstance(seconds, int) and not isinstance(seconds, bool) and seconds >= 1
    if request.get("op") != "equal" or not isinstance(gold, str) or not isinstance(answer, str) or not valid_seconds:
        return {"id": ident, "error": f"bad request {request!r:.200}"}
    try:
        return {"id": ident, "equal": equal(math_verify, gold, answer, seconds)}
    except (Exception, RecursionError, MemoryError):
        # math-verify returns False on its own errors; anything escaping it means the same.
        return {"id": ident, "equal": False}


def _private_protocol_channel() -> Any:
    """Move the protocol to a private copy of stdout and point fd 1 at stderr: sympy and
    antlr may print to stdout, which would corrupt the JSON stream."""
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def main() -> None:
    """Serve comparison requests until stdin closes."""
    protocol = _private_protocol_channel()
    _limit_memory()
    math_verify, version, error = _load()
    hello = {"ready": True, "available": math_verify is not None, "version": version, "error": error}
    protocol.write(json.dumps(hello) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            protocol.write(json.dumps({"id": None, "error": f"bad JSON: {exc}"}) + "\n")
            continue
        if math_verify is None:
            reply = {"id": request.get("id"), "error": f"math-verify is unavailable: {error}"}
        else:
            reply = _answer(math_verify, request)
        protocol.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
