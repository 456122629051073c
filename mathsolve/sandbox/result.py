"""What a sandboxed execution returns (``ExecResult``), what the sandbox raises when
it fails itself (``SandboxError``), and the file name the code's frames carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The file name the code's frames carry in ``ExecResult.traceback`` (the code is
#: compiled under it; a session's blocks are shown under it too). Protocols that
#: filter tracebacks (Numina's reference kept the lines naming the code file)
#: look for it.
CODE_FILENAME = "main.py"


class SandboxError(RuntimeError):
    """The sandbox itself failed (interpreter missing, runner crashed): not the code's fault."""


@dataclass
class ExecResult:
    """Outcome of one execution.

    ``status``: "ok" | "error" | "timeout" | "memory" | "output-limit".
    ``error``: last traceback line when the code raised (status "error", or
    "memory" for a MemoryError); a short description when the process died
    otherwise (``Killed by signal SIGSEGV``, ``Exited with code 3``); None else.
    ``traceback``: the full traceback text when the code raised (frames of the
    code in ``CODE_FILENAME``, with their source lines); None otherwise,
    including timeouts and deaths without an exception.
    ``display``: ``PythonSession`` only: repr() of the block's final bare
    expression when it is not None (a notebook's Out); None otherwise.
    """

    status: str
    stdout: str
    stderr: str
    error: str | None
    duration_s: float
    protections: tuple[str, ...] = field(default_factory=tuple)
    traceback: str | None = None
    display: str | None = None


def status_text(value: object) -> str | None:
    """A string from the status channel, made safe to print (lone surrogates are
    possible in exception messages); None for anything else."""
    if not isinstance(value, str):
        return None
    return value.encode("utf-8", "replace").decode("utf-8")
