"""Run untrusted code (the model's Python, or any program) in a separate, confined
process: the sandbox's public API, for tool backends and third-party plugins (keep it
small; nothing outside this package imports its submodules)::

    run_python(code, *, limits=Limits(), prelude="", python=None) -> ExecResult
    run_program(argv, *, stdin=b"", limits=Limits(), env=None) -> ExecResult
    PythonSession(*, limits=Limits(), python=None)   .run(code) -> ExecResult, .close()
    WarmPython(preload=(), *, python=None)   .run(code, *, limits=Limits(), prelude="") -> ExecResult,
                                             .close(), .preloaded
    WarmPool(preload=(), *, python=None)     the same run(), one zygote per block in flight;
                                             .close(), .preloaded, .size
    capabilities(python=None) -> dict[str, bool | str]
    Limits (the tool contract's, from mathsolve.tools.base), ExecResult, SandboxError,
    PROTECTIONS, CODE_FILENAME

``run_python``: each call's code alone in a FRESH interpreter, ToRA's executor
semantics. ``run_program``: a program with arguments and stdin, the same limits, no
Python between them and the program. ``PythonSession``: ONE interpreter for many
blocks, a notebook kernel's semantics. ``WarmPython``/``WarmPool``: ``run_python``'s
semantics and results, with the ``preload`` modules imported once in a confined
zygote that forks a fresh child per block. See docs/sandbox.md.

Where things are::

    result.py       ExecResult, SandboxError, CODE_FILENAME
    protections.py  PROTECTIONS (what each confinement means), capabilities()
    oneshot.py      run_python, run_program
    session.py      PythonSession and the long-lived runners it shares with warm.py
    warm.py         WarmPython, WarmPool, the parent's side of the zygote
    run.py          one runner seen from the parent: reading with caps, killing, classifying
    launch.py       starting one: private directory, job file, pipes, the process
    cgroups.py      the pids cgroup of a run
    process.py      interpreter lookup, minimal environment, exit watching, kills
    runner/         the trusted half that runs in the new process (standard library
                    only, started by path): limits, namespaces, then the code
"""

from __future__ import annotations

from mathsolve.sandbox.oneshot import run_program, run_python
from mathsolve.sandbox.protections import PROTECTIONS, capabilities
from mathsolve.sandbox.result import CODE_FILENAME, ExecResult, SandboxError
from mathsolve.sandbox.session import PythonSession
from mathsolve.sandbox.warm import WarmPool, WarmPython
from mathsolve.tools.base import Limits  # the limits are part of the tool contract; re-exported here

__all__ = [
    "CODE_FILENAME",
    "ExecResult",
    "Limits",
    "PROTECTIONS",
    "PythonSession",
    "SandboxError",
    "WarmPool",
    "WarmPython",
    "capabilities",
    "run_program",
    "run_python",
]
