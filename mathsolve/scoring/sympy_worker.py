"""Sympy comparison worker: runs in its own process, never in the grader's process.

Model-written answers are untrusted, and sympy's ``parse_expr``/``sympify`` build Python
source and ``eval`` it. This worker therefore runs as a separate interpreter
(``python -I <this file>``), started and killed by :class:`mathsolve.scoring.grader.Grader`.
It is self-contained (standard library + sympy only, no ``mathsolve`` import) so that it
works whether or not the package is installed, and ``-I`` keeps environment variables,
the user site and the current directory out of its import path.

Defence in depth on top of the process boundary:
* ``parse_expr`` only ever sees strings made of a small character whitelist with no
  ``__``, no attribute access and no quotes, evaluated with an empty ``__builtins__`` and
  a namespace holding only a few sympy constructors and functions;
* the address space is capped, so a "10^{10^{10}}" answer fails with MemoryError
  instead of swapping the machine (the parent kills the worker on time-outs).

Protocol: JSON lines. On start the worker writes
``{"ready": true, "latex": <bool>, "latex_error": <str|null>}``; then for every request
``{"id": n, "op": "equal", "a": str, "b": str}`` it answers ``{"id": n, "equal": bool}``
(``{"id": n, "error": str}`` if the request itself was malformed). ``{"op": "ping"}``
answers ``{"id": n, "pong": true}``.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Any

_MEMORY_LIMIT_BYTES = 4 * 1024**3

_PLAIN_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# Characters parse_expr may see. No quotes, brackets other than (), backslashes,
# semicolons, colons, "@", "=", "[" ... so no strings, subscripts, lambdas or statements.
_SAFE_EXPR_RE = re.compile(r"[0-9A-Za-z+\-*/^(). ,]*")
# Attribute access ("x.func") and dunder names are the usual sandbox escapes.
_ATTRIBUTE_RE = re.compile(r"\.\s*[A-Za-z_]")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_NAME_LENGTH = 8


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


def _check_latex() -> tuple[bool, str | None]:
    """Whether ``parse_latex`` works here (it needs antlr4-python3-runtime 4.11)."""
    try:
        import sympy
        from sympy.parsing.latex import parse_latex

        value = parse_latex(r"\frac{1}{2}")
        if sympy.simplify(value - sympy.Rational(1, 2)) != 0:
            return False, f"parse_latex returned {value!r} for \\frac{{1}}{{2}}"
        return True, None
    except Exception as exc:  # ImportError, antlr version mismatch, ...
        return False, f"{type(exc).__name__}: {exc}"


def _safe_namespace() -> dict[str, Any]:
    """The only names ``parse_expr`` code can reach: sympy constructors and functions."""
    import sympy

    names = (
        "Symbol Integer Float Rational Function Mul Add Pow "
        "pi E I oo sqrt exp log ln sin cos tan cot sec csc asin acos atan "
        "sinh cosh tanh Abs floor ceiling factorial binomial"
    ).split()
    namespace: dict[str, Any] = {name: getattr(sympy, name) for name in names if hasattr(sympy, name)}
    namespace["ln"] = sympy.log
    namespace["__builtins__"] = {}
    return namespace


def _is_safe_for_parse_expr(text: str) -> bool:
    """Whether ``text`` is harmless to hand to ``parse_expr`` (which calls ``eval``)."""
    if len(text) > 500 or not _SAFE_EXPR_RE.fullmatch(text):
        return False
    if "__" in text or _ATTRIBUTE_RE.search(text):
        return False
    # Long identifiers are never maths here; they are how Python names are spelt.
    return all(len(name) <= _MAX_NAME_LENGTH for name in _NAME_RE.findall(text))


def _latex_to_python(text: str) -> str:
    """Light LaTeX-to-Python rewriting for the ``parse_expr`` fallback."""
    text = text.replace("\\pi", "pi").replace("\\infty", "oo")
    text = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", text)
    text = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", text)
    text = text.replace("\\times", "*").replace("\\cdot", "*")
    text = text.replace("{", "(").replace("}", ")")
    return text


def _parse_latex_strict(text: str) -> Any:
    """``parse_latex`` refusing partial parses where sympy supports it (1.13+).

    The lenient default recovers from syntax errors by dropping input: "2**10" reads
    as 2 and "3 + " as 3, which would make wrong answers equal. Strict parsing fails
    instead, and the caller falls back to ``parse_expr``.
    """
    from sympy.parsing.latex import parse_latex

    try:
        return parse_latex(text, strict=True)
    except TypeError:  # sympy 1.12 has no "strict"
        return parse_latex(text)


def _parse_latex(text: str) -> Any:
    """LaTeX reading (strict), with "\\pi" as the constant; ``None`` on failure."""
    import sympy

    try:
        expr = _parse_latex_strict(text)
    except Exception:
        return None
    # sympy's LaTeX parser reads "\pi" as a plain symbol named "pi"; a decimal answer
    # like 3.14159 can only be compared with the constant.
    try:
        return expr.subs(sympy.Symbol("pi"), sympy.pi)
    except Exception:
        return expr


def _parse_python(text: str) -> Any:
    """Python-syntax reading with ``parse_expr`` (whitelisted text only); ``None`` on failure."""
    python_text = _latex_to_python(text)
    if not _is_safe_for_parse_expr(python_text):
        return None
    try:
        from sympy.parsing.sympy_parser import (
            convert_xor,
            implicit_multiplication_application,
            parse_expr,
            standard_transformations,
        )

        transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
        return parse_expr(python_text, local_dict={}, global_dict=_safe_namespace(), transformations=transformations)
    except Exception:
        return None


def _parse(text: str) -> Any:
    """Parse an answer into a sympy object, or return ``None``."""
    import sympy

    text = text.strip()
    if not text:
        return None
    if _PLAIN_NUMBER_RE.fullmatch(text):
        # parse_latex would read "3.54e-07" as 3.54*e - 7.
        return sympy.Rational(text) if re.fullmatch(r"[+-]?\d+", text) else sympy.Float(text)
    # Text without LaTeX markup is usually Python-style ("sqrt(2)/2", "2**10", printed
    # by the model's code): as LaTeX, "sqrt(2)" would be the product s*q*r*t(2).
    if "\\" in text or "{" in text:
        readers = (_parse_latex, _parse_python)
    else:
        readers = (_parse_python, _parse_latex)
    for reader in readers:
        expr = reader(text)
        if expr is not None:
            return expr
    return None


def _numbers_close(a: Any, b: Any) -> bool:
    """Numeric evaluation of both sides agrees (the fallback when simplify gives up).

    The reference tolerance rel_tol=1e-3 is meant for decimal approximations ("0.333"
    for 1/3). Between two exact expressions it would accept "1001" for 2003/2 or
    22/7 for pi, so exact forms must agree to 1e-9 (only covering simplify's misses).
    """
    import sympy

    approximate = any(expr.has(sympy.Float) for expr in (a, b))
    rel_tol = 1e-3 if approximate else 1e-9
    try:
        va, vb = complex(sympy.N(a)), complex(sympy.N(b))
    except (TypeError, ValueError, AttributeError, OverflowError):
        return False
    if any(math.isnan(v) or math.isinf(v) for v in (va.real, va.imag, vb.real, vb.imag)):
        return False
    return abs(va - vb) <= rel_tol * max(abs(va), abs(vb))


def _difference_is_zero(a: Any, b: Any) -> bool:
    import sympy

    try:
        return bool(sympy.simplify(a - b) == 0)
    except Exception:
        return False


def _relations_equal(a: Any, b: Any) -> bool:
    """Equations/inequalities: same relation and the same ``lhs - rhs``."""
    if type(a) is not type(b):
        return False
    da, db = a.lhs - a.rhs, b.lhs - b.rhs
    if _difference_is_zero(da, db):
        return True
    # "x = 2" and "2 = x" are the same equation, not so for inequalities.
    import sympy

    return isinstance(a, sympy.Equality) and _difference_is_zero(da, -db)


def symbolic_equal(a_text: str, b_text: str) -> bool:
    """Whether two answers are mathematically equal according to sympy."""
    import sympy

    a, b = _parse(a_text), _parse(b_text)
    if a is None or b is None:
        return False
    relational = sympy.core.relational.Relational
    if isinstance(a, relational) or isinstance(b, relational):
        return isinstance(a, relational) and isinstance(b, relational) and _relations_equal(a, b)
    try:
        if a == b:
            return True
    except Exception:
        pass
    return _difference_is_zero(a, b) or _numbers_close(a, b)


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    ident = request.get("id")
    op = request.get("op")
    if op == "ping":
        return {"id": ident, "pong": True}
    if op == "equal" and isinstance(request.get("a"), str) and isinstance(request.get("b"), str):
        try:
            return {"id": ident, "equal": symbolic_equal(request["a"], request["b"])}
        except (Exception, RecursionError, MemoryError):
            # Any failure inside sympy means "could not show equality".
            return {"id": ident, "equal": False}
    return {"id": ident, "error": f"bad request {request!r:.200}"}


def _private_protocol_channel() -> Any:
    """Move the protocol to a private copy of stdout and point fd 1 at stderr.

    sympy or antlr may print to stdout (antlr prints version warnings), which would
    corrupt the JSON stream.
    """
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def main() -> None:
    """Serve comparison requests until stdin closes."""
    protocol = _private_protocol_channel()
    _limit_memory()
    sys.setrecursionlimit(10_000)
    latex_ok, latex_error = _check_latex()
    protocol.write(json.dumps({"ready": True, "latex": latex_ok, "latex_error": latex_error}) + "\n")
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
        protocol.write(json.dumps(_answer(request)) + "\n")


if __name__ == "__main__":
    main()
