"""The router's rules, and `mathsolve tools` / `tools run` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathsolve.cli import app
from mathsolve.errors import EXIT_USAGE, UsageError
from mathsolve.tools import ToolResult, ToolRouter, imported_modules

runner = CliRunner()


class Backend:
    def __init__(self, name: str, imports: tuple[str, ...] = (), claim: str | None = None, broken: bool = False) -> None:
        self.name, self.description, self.imports = name, name, imports
        self._claim, self._broken = claim, broken

    def run(self, code, *, limits, prelude=""):
        return ToolResult(self.name, "ok")

    def claims(self, code, language):
        if self._broken:
            raise RuntimeError("plugin bug")
        return self._claim is not None and self._claim in code


def _router(explicit=None):
    tools = {
        "python": Backend("python"),
        "broken": Backend("broken", broken=True),
        "lean": Backend("lean", claim="#lean"),
        "sympy": Backend("sympy", imports=("sympy",)),
        "numeric": Backend("numeric", imports=("numpy", "mpmath", "scipy")),
    }
    return ToolRouter(tools, explicit=explicit)


def _route(code, language="python", stateful=False, explicit=None):
    route = _router(explicit).route(code, fence_language=language, default="python", stateful=stateful)
    return route.tool.name, route.reason


def test_rules_in_order() -> None:
    assert _route("import sympy", explicit="numeric") == ("numeric", "explicit")
    assert _route("import sympy", language="numeric") == ("numeric", "fence")
    assert _route("#lean\nimport sympy") == ("lean", "claim")
    assert _route("import sympy as sp\nprint(sp.pi)") == ("sympy", "imports")
    assert _route("from numpy import array\nimport mpmath, sympy") == ("numeric", "imports")  # covers 2 of 3
    assert _route("import math\nprint(1)") == ("python", "default")


def test_python_fence_is_generic_and_a_broken_claim_is_skipped() -> None:
    assert _route("import sympy", language="python") == ("sympy", "imports")
    assert _route("import sympy", language="py") == ("sympy", "imports")


def test_stateful_protocols_keep_every_block_on_one_backend() -> None:
    assert _route("import sympy", stateful=True) == ("python", "default")
    assert _route("#lean", stateful=True) == ("python", "default")
    assert _route("import sympy", stateful=True, explicit="numeric") == ("numeric", "explicit")


def test_unknown_explicit_and_missing_default() -> None:
    with pytest.raises(UsageError, match="unknown tool 'nope'"):
        ToolRouter({}, explicit="nope")
    with pytest.raises(UsageError, match="no tool backend"):
        ToolRouter({}).route("x", fence_language=None, default="python")


def test_imported_modules() -> None:
    assert imported_modules("import sympy as sp, numpy\nfrom scipy.optimize import root\nfrom . import x") == [
        "sympy", "numpy", "scipy",
    ]
    # Code that does not parse is read line by line.
    assert imported_modules("import sympy\nfrom mpmath import mp\nx = (") == ["sympy", "mpmath"]
    assert imported_modules("print('import os')") == []


def test_the_chosen_backend_is_in_the_transcript() -> None:
    from mathsolve.api import Solver
    from mathsolve.engines.scripted import ScriptedEngine

    code_round = "```python\nimport sympy\nprint(1)\n```\n```output"
    solver = Solver(engine=ScriptedEngine([code_round, "\\boxed{1}"]), protocol="tora", model="s")
    solver.tools = _router().tools
    call = solver.solve("q")["tool_calls"][0]
    assert (call["tool"], call["route"]) == ("sympy", "imports")


def test_tools_lists_the_backends() -> None:
    r = runner.invoke(app, ["tools", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["python"]["plugin"] == "python" and rows["python"]["sessions"] is True
    r = runner.invoke(app, ["tools"], env={"COLUMNS": "120"})
    assert r.exit_code == 0 and "python" in r.stdout and "Routing:" in r.stdout


def test_tools_run_prints_the_observation_byte_for_byte(tmp_path: Path) -> None:
    block = tmp_path / "block.py"
    block.write_text("x = 6 * 7\nprint(x)\n")
    r = runner.invoke(app, ["tools", "run", "python", str(block)])
    assert r.exit_code == 0, r.output
    assert r.stdout == "\n```output\n42\n```\n"
    r = runner.invoke(app, ["tools", "run", "python", "-"], input="x = 1\n")
    assert r.stdout == "\n```output\nDone\n```\n"
    r = runner.invoke(app, ["tools", "run", "python", "-", "--protocol", "mathcoder"], input="x = 2\nx * 21\n")
    assert r.stdout == "<|execution|>42<|endofblock|>"
    r = runner.invoke(app, ["tools", "run", "python", "-", "--json"], input="1/0\n")
    out = json.loads(r.stdout)
    assert out["result"]["status"] == "error" and out["observation"] == "\n```output\nZeroDivisionError: division by zero\n```\n"


def test_tools_run_errors_are_one_line() -> None:
    r = runner.invoke(app, ["tools", "run", "nope", "-"], input="x")
    assert r.exit_code == EXIT_USAGE and "unknown tool 'nope'" in r.output
    r = runner.invoke(app, ["tools", "run", "python", "missing.py"])
    assert r.exit_code == EXIT_USAGE and "no such file" in r.output
