"""The example third-party plugin (plugins/extpython), end to end as a user meets it.

It must be INSTALLED, like any third-party plugin (./install.sh pip-installs every
plugins/*/pyproject.toml): these tests fail, never skip, when it is not.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathsolve.cli import app
from mathsolve.plugin import Limits, SandboxError, ScriptedEngine, hookimpl, run_python
from mathsolve.plugins import get_plugin_manager, reset_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "plugins" / "extpython"
GUIDE = ROOT / "docs" / "plugins.md"
NOT_INSTALLED = (
    "the example plugin mathsolve-extpython (plugins/extpython) is not installed in this "
    "environment: run ./install.sh, which pip-installs every plugins/*/pyproject.toml"
)
# What the test blocks print: which interpreter ran them.
WHO_RAN = "import sys\nprint('ran on', sys.executable, sys.version.split()[0])\n"

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def installed():
    """The plugin's entry point is visible and points at this checkout's copy."""
    found = {ep.name: ep for ep in metadata.entry_points(group="mathsolve")}
    assert "extpython" in found, NOT_INSTALLED
    ep = found["extpython"]
    assert ep.value == "mathsolve_extpython" and ep.dist is not None, NOT_INSTALLED
    assert ep.dist.name == "mathsolve-extpython", NOT_INSTALLED
    module = ep.load()
    assert Path(module.__file__).resolve().is_relative_to(PLUGIN_DIR.resolve()), (
        f"mathsolve_extpython is imported from {module.__file__}, not from plugins/extpython: "
        "run ./install.sh (an editable install of this checkout)"
    )
    return module


def _works_in_the_sandbox(candidate: str) -> str | None:
    """The interpreter's version when the sandbox can run code with it, else None."""
    try:
        result = run_python("import sys\nprint(sys.version.split()[0])", limits=Limits(timeout_s=30), python=candidate)
    except SandboxError:
        return None
    return result.stdout.strip() if result.status == "ok" else None


@pytest.fixture(scope="module")
def other_python() -> tuple[str, str]:
    """(absolute path, version) of a Python the sandbox can run, preferably NOT the one
    running the tests (e.g. the system's /usr/bin/python3), so the output proves which
    interpreter ran; falls back to sys.executable on machines with only one Python."""
    names = ["/usr/bin/python3", "/usr/local/bin/python3", *(f"python3.{minor}" for minor in range(14, 7, -1))]
    ours = os.path.realpath(sys.executable)
    for name in names:
        path = shutil.which(name)
        if path is None or os.path.realpath(path) == ours:
            continue
        path = os.path.abspath(path)
        version = _works_in_the_sandbox(path)
        if version is not None:
            return path, version
    return sys.executable, platform.python_version()


def _observation(text: str) -> str:
    """How the `tora` protocol shows a block's output to the model."""
    return "\n```output\n" + text + "\n```\n"


# ----------------------------------------------------------------------------- listing


def test_mathsolve_plugins_lists_it_with_what_it_registers() -> None:
    r = runner.invoke(app, ["plugins"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert re.search(r"extpython\W+mathsolve-extpython\W+tools: extpython\W+ok", r.stdout), r.stdout


def test_mathsolve_tools_lists_the_backend_with_its_claim() -> None:
    r = runner.invoke(app, ["tools", "--json"])
    assert r.exit_code == 0, r.output
    row = {row["name"]: row for row in json.loads(r.stdout)}["extpython"]
    assert (row["plugin"], row["claims"], row["sessions"]) == ("extpython", True, False)
    r = runner.invoke(app, ["tools"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and re.search(r"extpython\W+extpython\W+-\W+-\W+yes\W", r.stdout), r.stdout


# -------------------------------------------------------------------------- tools run


def test_tools_run_uses_the_interpreter_named_by_the_environment(monkeypatch, other_python) -> None:
    path, version = other_python
    monkeypatch.setenv("MATHSOLVE_EXTPYTHON", path)
    r = runner.invoke(app, ["tools", "run", "extpython", "-"], input=WHO_RAN)
    assert r.exit_code == 0, r.output
    assert r.stdout == _observation(f"ran on {path} {version}")


def test_a_shebang_pins_the_interpreter_and_a_missing_one_falls_back(monkeypatch, other_python) -> None:
    path, version = other_python
    monkeypatch.setenv("MATHSOLVE_EXTPYTHON", "no-such-python-anywhere")
    r = runner.invoke(app, ["tools", "run", "extpython", "-"], input=f"#!{path}\n{WHO_RAN}")
    assert r.stdout == _observation(f"ran on {path} {version}"), r.output
    monkeypatch.setenv("MATHSOLVE_EXTPYTHON", path)
    r = runner.invoke(app, ["tools", "run", "extpython", "-"], input=f"#!/usr/bin/env python9.99\n{WHO_RAN}")
    assert r.stdout == _observation(f"ran on {path} {version}"), r.output


def test_a_missing_interpreter_is_a_clear_tool_error(monkeypatch, tmp_path: Path) -> None:
    missing = tmp_path / "venv" / "bin" / "python"
    monkeypatch.setenv("MATHSOLVE_EXTPYTHON", str(missing))
    r = runner.invoke(app, ["tools", "run", "extpython", "-", "--json"], input="print(1)\n")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)["result"]
    assert result["status"] == "error" and result["tool"] == "extpython"
    assert str(missing) in result["error"] and "not found" in result["error"] and "MATHSOLVE_EXTPYTHON" in result["error"]


@pytest.mark.parametrize(
    "first_line, interpreter",
    [
        ("#!/usr/bin/env python3.12", "python3.12"),
        ("#!/opt/venv/bin/python", "/opt/venv/bin/python"),
        ("#! /usr/bin/env -S python3 -u", "python3"),
        ("#!/usr/bin/env bash", None),
        ("# a comment", None),
        ("print(1)", None),
    ],
)
def test_which_blocks_it_claims(installed, first_line: str, interpreter: str | None) -> None:
    code = f"{first_line}\nprint(1)\n"
    assert installed.shebang_interpreter(code) == interpreter
    assert installed.ExtPythonTool().claims(code, "python") is (interpreter is not None)
    assert installed.shebang_interpreter(f"x = 1\n{first_line}\n") is None  # the FIRST line only


# --------------------------------------------------- routing in a real solve (CLI)


class ScriptedEnginePlugin:
    """A test plugin: an engine whose "model" writes the given rounds (the public
    register_engines hook), since no small real model writes a shebang on cue."""

    def __init__(self, rounds: list[str]) -> None:
        self.rounds = rounds

    @hookimpl
    def register_engines(self, register):
        register("scripted-example", lambda request: ScriptedEngine(self.rounds))


def _solve_through_the_cli(model: Path, monkeypatch, rounds: list[str]) -> dict:
    reset_plugin_manager()  # load the plugins afresh, honouring MATHSOLVE_LOAD_PLUGINS
    get_plugin_manager().pm.register(ScriptedEnginePlugin(rounds), name="scripted-example")
    # The `engine` setting, here from the environment (`--engine NAME` does the same).
    monkeypatch.setenv("MATHSOLVE_ENGINE", "scripted-example")
    r = runner.invoke(app, ["--model", str(model), "--protocol", "tora", "--json", "Which Python ran this?"])
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert record["engine"]["name"] == "scripted"
    return record


def _shebang_rounds(interpreter: str) -> list[str]:
    return [f"Let me check.\n```python\n#!{interpreter}\n{WHO_RAN}```\n```output", "It ran. \\boxed{5}"]


def test_a_shebang_block_is_routed_to_extpython_by_its_claim(tiny_bpe: Path, monkeypatch, other_python) -> None:
    path, version = other_python
    monkeypatch.setenv("MATHSOLVE_EXTPYTHON", "no-such-python-anywhere")  # only the shebang can pick it
    record = _solve_through_the_cli(tiny_bpe, monkeypatch, _shebang_rounds(path))
    call = record["tool_calls"][0]
    assert (call["tool"], call["route"], call["status"]) == ("extpython", "claim", "ok")
    assert call["observation"] == _observation(f"ran on {path} {version}")
    assert record["answer"] == "5" and call["observation"] in [seg["text"] for seg in record["transcript"]]


def test_without_the_plugin_the_block_falls_back_to_python(tiny_bpe: Path, monkeypatch, other_python) -> None:
    monkeypatch.setenv("MATHSOLVE_LOAD_PLUGINS", "python")
    reset_plugin_manager()
    r = runner.invoke(app, ["tools", "--json"])
    names = [row["name"] for row in json.loads(r.stdout)]
    assert "extpython" not in names and "python" in names
    record = _solve_through_the_cli(tiny_bpe, monkeypatch, _shebang_rounds(other_python[0]))
    call = record["tool_calls"][0]
    assert (call["tool"], call["route"], call["status"]) == ("python", "default", "ok")
    # The built-in backend ignores the shebang (a comment) and runs mathsolve's own Python.
    assert call["observation"] == _observation(f"ran on {sys.executable} {platform.python_version()}")


# ------------------------------------------------------------------ the plugin command


def _mathsolve(*args: str, **env: str) -> subprocess.CompletedProcess:
    # Plugin commands are added when the program starts (mathsolve.cli.main), so this
    # runs the real program rather than the Typer app in-process.
    return subprocess.run(
        [sys.executable, "-m", "mathsolve", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )


def test_the_plugin_command_shows_the_interpreter(other_python) -> None:
    path, version = other_python
    r = _mathsolve("extpython-info", MATHSOLVE_EXTPYTHON=path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == [f"configured: {path} ($MATHSOLVE_EXTPYTHON)", f"interpreter: {path}", f"python: {version}"]
    assert re.fullmatch(r"sympy: (\d+\.\d+\S*|not installed)", lines[3]), r.stdout
    assert "extpython-info" in _mathsolve("--help").stdout


def test_the_plugin_command_reports_a_missing_interpreter() -> None:
    r = _mathsolve("extpython-info", MATHSOLVE_EXTPYTHON="no-such-python-anywhere")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: extpython cannot run 'no-such-python-anywhere'") and "Traceback" not in r.stderr


# ------------------------------------------------------------------------ the guide


def _fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """(info string, text) of every fenced block."""
    pattern = r"^(```|~~~)([^\n]*)\n(.*?)^\1[ \t]*$"
    return [(m.group(2).strip(), m.group(3)) for m in re.finditer(pattern, markdown, re.M | re.S)]


def test_every_snippet_of_the_guide_is_in_the_example_plugin() -> None:
    """docs/plugins.md shows only code that exists, verbatim, in the example plugin (or in
    this test file, for the testing section), so the guide cannot drift from working code."""
    files = [*sorted(PLUGIN_DIR.glob("*/*.py")), PLUGIN_DIR / "pyproject.toml", PLUGIN_DIR / "README.md", Path(__file__)]
    sources = {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in files}
    snippets = [text for info, text in _fenced_blocks(GUIDE.read_text(encoding="utf-8")) if info != "text"]
    assert len(snippets) >= 5
    for snippet in snippets:
        assert any(snippet in text for text in sources.values()), f"not verbatim in {sorted(sources)}:\n{snippet}"


def test_the_guide_quotes_the_router_rules_as_they_are() -> None:
    """The guide's quotes (```text blocks) are lines of the tool contract's and router's docstrings."""
    tools_source = " ".join(" ".join((ROOT / "mathsolve" / "tools" / name).read_text(encoding="utf-8").split())
                            for name in ("base.py", "router.py"))
    quotes = [text for info, text in _fenced_blocks(GUIDE.read_text(encoding="utf-8")) if info == "text"]
    assert quotes
    for line in filter(None, (" ".join(line.split()) for quote in quotes for line in quote.splitlines())):
        assert line in tools_source, f"not in mathsolve/tools/: {line}"
    assert "docs/plugins.md" in (ROOT / "README.md").read_text(encoding="utf-8")
