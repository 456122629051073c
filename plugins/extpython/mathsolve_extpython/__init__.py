"""mathsolve-extpython: run the model's code blocks with ANOTHER Python interpreter.

An example third-party plugin, meant to be copied. It imports only mathsolve's plugin
API (`mathsolve.plugin`) and is found through the `mathsolve` entry-point group (see
pyproject.toml).

Why: to reproduce a paper's numbers you may want the model's code to meet the
paper's environment, e.g. a venv pinned to the sympy version it used, while
mathsolve itself runs on a current Python.

- The tool `extpython` runs each block in the sandbox with the interpreter named by
  $MATHSOLVE_EXTPYTHON (a path, or a command name on PATH; default `python3`).
- It CLAIMS blocks whose first line is a shebang naming a Python interpreter
  (`#!/usr/bin/env python3.12`, `#!/opt/venv/bin/python`) and runs them with that
  interpreter when it exists, else with the configured one.
- The command `mathsolve extpython-info` shows the interpreter, its version and its sympy.
"""

from __future__ import annotations

import os
import re
import shutil

import typer

from mathsolve.plugin import Limits, ToolResult, hookimpl

ENV_VAR = "MATHSOLVE_EXTPYTHON"
DEFAULT_INTERPRETER = "python3"

# A shebang's program, directly (`#!/opt/venv/bin/python`) or through env
# (`#!/usr/bin/env python3.12`, `#!/usr/bin/env -S python3 -u`).
_SHEBANG = re.compile(r"#!\s*(?:\S*/)?env\s+(?:-\S*\s+)*(\S+)|#!\s*(\S+)")
_PYTHON_NAME = re.compile(r"python[0-9.]*")


def configured_interpreter() -> str:
    """The interpreter from $MATHSOLVE_EXTPYTHON, else `python3`."""
    return os.environ.get(ENV_VAR, "").strip() or DEFAULT_INTERPRETER


def shebang_interpreter(code: str) -> str | None:
    """The Python interpreter a block's first line names, or None (no shebang, or not Python)."""
    first_line = code.lstrip("\r\n").split("\n", 1)[0].strip()
    match = _SHEBANG.match(first_line)
    if match is None:
        return None
    program = match.group(1) or match.group(2)
    return program if _PYTHON_NAME.fullmatch(os.path.basename(program)) else None


class ExtPythonTool:
    """A tool backend: `name`, `description` and `run` are required; `claims` is optional."""

    name = "extpython"
    description = f"Python on another interpreter (${ENV_VAR}, or a block's #! line)"

    def claims(self, code: str, language: str | None) -> bool:
        # The router asks every backend with `claims` before looking at imports.
        # Say yes only for blocks that are unmistakably yours: here, a Python shebang.
        return shebang_interpreter(code) is not None

    def interpreter_for(self, code: str) -> str:
        pinned = shebang_interpreter(code)
        if pinned is not None and shutil.which(pinned) is not None:
            return pinned
        return configured_interpreter()

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult:
        # Imported here, not at the top: loading the plugin at start-up stays cheap.
        from mathsolve.plugin import SandboxError, run_python

        interpreter = self.interpreter_for(code)
        try:
            result = run_python(code, limits=limits, prelude=prelude, python=interpreter)
        except SandboxError as exc:
            # A missing or broken interpreter is a result, not a crash: the solve goes on.
            return ToolResult(
                tool=self.name,
                status="error",
                error=f"extpython cannot run {interpreter!r}: {exc} (set {ENV_VAR} to a Python 3.8+ interpreter)",
            )
        # The sandbox's ExecResult becomes what the loop wants; never format it here.
        return ToolResult.from_exec(self.name, result)


@hookimpl
def register_tools(register):
    register(ExtPythonTool())


# What `mathsolve extpython-info` runs, in the sandbox like any block, so it shows
# exactly what the model's code will meet.
_INFO_CODE = """\
import sys
try:
    import sympy
    sympy_version = sympy.__version__
except ImportError:
    sympy_version = "not installed"
print("interpreter:", sys.executable)
print("python:", sys.version.split()[0])
print("sympy:", sympy_version)
"""


@hookimpl
def register_commands(cli):
    @cli.command("extpython-info")
    def extpython_info() -> None:
        """The interpreter the extpython tool uses, its version and its sympy version."""
        source = f"${ENV_VAR}" if os.environ.get(ENV_VAR, "").strip() else "default"
        result = ExtPythonTool().run(_INFO_CODE, limits=Limits(timeout_s=30))
        if result.status != "ok":
            typer.echo(f"error: {result.error}", err=True)
            raise typer.Exit(2)
        typer.echo(f"configured: {configured_interpreter()} ({source})")
        typer.echo(result.stdout, nl=False)
