"""One-shot executions: ``run_python`` runs a block of Python alone in a FRESH
confined interpreter; ``run_program`` runs any program (a third-party backend: bc,
gp, Maxima, Lean ...) with arguments and stdin under the same confinement.

``run_python``'s semantics (those of the ToRA executor the reference numbers were
measured with):

* every call runs the code alone in a FRESH interpreter process (``python``,
  default ``sys.executable``, so the install's sympy/numpy are importable): no
  state from earlier calls, no pre-imported names;
* ``prelude`` (e.g. the imports the Numina protocol prepends) runs first, in the
  same namespace, compiled separately so the code's line numbers do not move;
* the code is exec'd in an EMPTY globals dict: ``__name__`` resolves through the
  builtins to ``"builtins"``, never ``"__main__"``; the last expression is not
  printed;
* stdout and stderr are captured separately, as UTF-8 text (invalid bytes are
  replaced); the model's output is returned raw: result formatting ("Done",
  truncation) belongs to the caller;
* any exception ending the code, ``BaseException`` included (the reference used a
  bare ``except:``), gives ``status="error"`` and ``error`` = the last line of the
  formatted traceback, e.g. ``NameError: name 'x' is not defined``. So
  ``sys.exit(3)`` is ``"SystemExit: 3"`` and ``sys.exit()`` is ``"SystemExit"``;
  output printed before it is kept in ``stdout``. A ``MemoryError`` gives
  ``status="memory"`` (``error`` still holds its line);
* ``traceback`` is then the whole traceback, as ``python main.py`` would print it:
  the code is compiled as file ``CODE_FILENAME`` (``"main.py"``), its frames show
  their source lines, and the sandbox's own frames are left out (so a SyntaxError
  has no "Traceback" header, only the ``File "main.py", line N`` part). The prelude's
  frames are ``"<prelude>"``. Over-long tracebacks keep their first and last 10,000
  characters;
* the wall-clock limit starts when the code (prelude included) starts, not when
  the interpreter is spawned: a slow start on a loaded machine does not eat the
  code's budget. ``duration_s`` is the wall time of the whole call.

Known differences from the reference's in-process ``exec``: output written to
file descriptor 1 directly (``os.write(1, ...)``, child processes) is captured
too, and the reference's refusal of code containing ``input(`` or ``os.system(``
is the caller's business (here ``input()`` simply meets end-of-file).

``run_program``'s: the same runner applies the same limits (wall clock from when the
program starts, CPU, memory, file size, open files, processes, no network where the
kernel allows it, a fresh private working directory removed afterwards, the whole
process group and everything else it started killed at the end) and then ``execve``s
the program: no Python runs between the limits and it. It gets a minimal
environment (its own folder first on PATH, ``env`` added on top), ``stdin`` as its
standard input (a private, already unlinked file; /dev/null when empty), and its
stdout and stderr come back apart, capped, decoded as UTF-8 with replacement.
Status: ``ok`` (exit 0), ``error`` (``error`` = ``Exited with code N`` or ``Killed by
signal SIGSEGV``), ``timeout``, ``memory`` (a death or non-zero exit that says so on
stderr: ``out of memory``, ``std::bad_alloc`` ...; ``error`` says how it ended) or
``output-limit``. A program that is not found is ``status="error"``,
``error="program not found: NAME"``; no ``traceback`` or ``display``, ever. The
program runs as PID 1 of its PID namespace where there is one: it can still start
(and reap) processes of its own, and everything goes when it exits.

Neither ever runs the untrusted code in the caller's process, and nothing is set up
with ``preexec_fn`` (unsafe in the threaded llama.cpp process): the limits are
applied by the runner (``mathsolve/sandbox/runner/``), trusted code started by path
that runs in the new process before the code. The code travels in a file in the
private temporary directory, never on a command line.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence

from mathsolve.sandbox.process import child_env, find_interpreter, signal_name
from mathsolve.sandbox.result import ExecResult, SandboxError
from mathsolve.sandbox.run import MEMORY_MARKERS, Run
from mathsolve.tools.base import Limits


def run_python(
    code: str, *, limits: Limits = Limits(), prelude: str = "", python: str | None = None
) -> ExecResult:
    """Execute ``code`` in a fresh, confined interpreter and return what happened.

    Never raises for anything the code does; raises ``SandboxError`` when the
    sandbox cannot be started (``Limits`` refuses nonsensical values when it is made).
    """
    if os.name != "posix":
        raise SandboxError("the Python sandbox needs a POSIX system (Linux or macOS)")
    interpreter = find_interpreter(python)
    started = time.monotonic()
    run = Run.start(interpreter, limits, {"code": code, "prelude": prelude})
    try:
        run.collect()
    finally:
        run.finish()
    return run.result(time.monotonic() - started)


def run_program(
    argv: Sequence[str],
    *,
    stdin: str | bytes = b"",
    limits: Limits = Limits(),
    env: Mapping[str, str] | None = None,
) -> ExecResult:
    """Run ``argv`` (the program, found on the caller's PATH or ``env["PATH"]``, then
    its arguments) in the sandbox with ``stdin`` as its input; see the module docstring.

    Never raises for anything the program does, nor when it is missing; raises
    ``SandboxError`` when the sandbox cannot be started and ``ValueError`` or
    ``TypeError`` for malformed arguments.
    """
    if os.name != "posix":
        raise SandboxError("the sandbox needs a POSIX system (Linux or macOS)")
    args = _checked_argv(argv)
    extra = _checked_env(env)
    if isinstance(stdin, str):
        data = stdin.encode("utf-8")
    elif isinstance(stdin, (bytes, bytearray, memoryview)):
        data = bytes(stdin)
    else:
        raise TypeError(f"stdin must be str or bytes, not {type(stdin).__name__}")
    interpreter = find_interpreter(None)  # the runner's; the program replaces it
    started = time.monotonic()
    found = shutil.which(args[0], path=extra.get("PATH"))
    if found is None:
        return ExecResult(status="error", stdout="", stderr="", error=f"program not found: {args[0]}",
                          duration_s=time.monotonic() - started)
    program = {"path": os.path.abspath(found), "argv": args, "env": extra}
    run = ProgramRun.start(interpreter, limits, {"program": program}, stdin=data)
    try:
        run.collect()
    finally:
        run.finish()
    return run.result(time.monotonic() - started)


class ProgramRun(Run):
    """A one-shot runner whose child becomes the program."""

    @classmethod
    def job_fields(cls, fields: dict, workdir: str) -> dict:
        # The minimal environment, with the program's folder first on PATH, then the caller's additions.
        program = fields["program"]
        return {"program": {**program, "env": {**child_env(workdir, program["path"]), **program["env"]}}}

    def protections(self) -> tuple[str, ...]:
        return tuple(name for name in super().protections() if name != "isolated-python")

    def _classify_exit(self, code: object, sig: object, cpu_s: object,
                       one_shot: bool | None = None) -> tuple[str, str | None]:
        status, error = super()._classify_exit(code, sig, cpu_s, one_shot)
        if status == "memory" and isinstance(sig, int):  # not Python's MemoryError: say how it died
            return status, f"Killed by signal {signal_name(sig)}"
        failed = status == "error" and isinstance(code, int) and code != 0
        if failed and any(marker in self.stderr for marker in MEMORY_MARKERS):
            return "memory", error  # a program that failed to allocate, and said so
        return status, error


def _checked_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, (str, bytes)) or not argv:
        raise ValueError(f"argv must be a non-empty sequence of strings, e.g. ['bc', '-q'], got {argv!r}")
    args = list(argv)
    for arg in args:
        if not isinstance(arg, str) or "\0" in arg:
            raise ValueError(f"argv items must be strings without NUL characters, got {arg!r}")
    if not args[0]:
        raise ValueError("argv[0], the program, must not be empty")
    return args


def _checked_env(env: Mapping[str, str] | None) -> dict[str, str]:
    extra = dict(env or {})
    for name, value in extra.items():
        if not (isinstance(name, str) and name and "=" not in name and "\0" not in name):
            raise ValueError(f"not an environment variable name: {name!r}")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"environment variable {name} must be a string without NUL characters")
    return extra
