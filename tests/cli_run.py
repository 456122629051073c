"""Running the real `mathsolve` entry point in tests: in this process (fast, streams
captured) or as a subprocess (signals, closed or broken pipes, file descriptors)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

ENTRY = str(Path(sys.executable).with_name("mathsolve"))


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """stderr lines that are not llama.cpp's own notices."""
        return [line for line in self.stderr.splitlines() if line.strip() and not line.startswith("llama_")]


def run_cli(*args: str, input: str | bytes | None = None, env: dict[str, str | None] | None = None) -> Result:
    """`mathsolve ARGS` through `mathsolve.cli.main`, the function the installed command runs
    (so usage errors, exit codes and stream handling are the real ones)."""
    from mathsolve.cli import main

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    code: int | str | None = None
    with CliRunner().isolation(input=input, env=env) as (out, err, _):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out.getvalue().decode("utf-8", "replace"), err.getvalue().decode("utf-8", "replace")
    assert isinstance(code, int), f"main() ended without an exit code: {code!r}"
    return Result(code, stdout, stderr)


def run_process(args: list[str], *, input: bytes | None = None, timeout: float = 120, shell: bool = False,
                **kw) -> Result:
    """The installed command in a subprocess (or a shell line with `shell=True`)."""
    env = dict(os.environ, **kw.pop("env", {}))
    command = args if not shell else ["bash", "-c", args[0]]
    proc = subprocess.run(command, input=input, capture_output=True, timeout=timeout, env=env, **kw)
    return Result(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))
