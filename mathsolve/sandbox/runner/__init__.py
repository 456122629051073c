"""Trusted start-up half of the sandbox (see ``mathsolve.sandbox``): the runner.

The parent starts ``start.py`` of this folder BY PATH in a fresh interpreter
(``python -I -B -X utf8 start.py JOB_FILE STATUS_FD``); that script loads the other
modules as a package under a private name, removes every trace of them again before
any untrusted code runs, and calls ``main``. So no module here may import anything
from the ``mathsolve`` package, and all must stay compatible with any Python 3.8+ a
user may point the sandbox at: standard library only. This file runs in the child
too: it holds nothing but this description.

Why the limits are applied here and not in the parent: the parent may be a heavily
threaded process (llama.cpp), where ``preexec_fn`` is unsafe. Everything below runs
in the sandbox's own process before one byte of untrusted code is compiled, or
before the untrusted program is executed.

Process layout::

    parent (CLI)  --spawns-->  supervisor (start.py; new session)
                                 | joins the pids cgroup, unshares namespaces,
                                 | sets rlimits, then forks:
                                 +--> child: PID 1 of the new PID namespace when
                                      available; mounts, drops capabilities, runs
                                      the untrusted code with exec() in an EMPTY
                                      globals dict, or execve()s the program.

The supervisor waits for the child and reports how it ended. When PID 1 of a PID
namespace exits, the kernel kills every other process of that namespace, so
nothing the code started can outlive it (new sessions included).

Status channel: one JSON object per line on STATUS_FD, separate from the code's
stdout/stderr. In order: ``{"setup": [...]}`` (supervisor), ``{"ready": [...]}``
(child, right before the code starts: the parent starts the wall clock here),
``{"result": {"status": ..., "error": ...}}`` (child, after the code; a program
reports none, unless it could not be executed), and ``{"exit": {...}}``
(supervisor, after the child is gone). The untrusted code runs in the same process
as the child, so it could write to STATUS_FD too; the parent treats those lines as
the code's own claims about itself, never as instructions. A program never sees the
descriptor (it is closed at exec).

Session mode (``PythonSession``, job key ``"session"``): the same confinement, then
one long-lived worker that runs block after block in one namespace::

    supervisor --forks--> init (PID 1 of the PID namespace: reaps orphans, forwards
                           |    SIGINT, reports the worker's death)
                           +--forks--> worker: reads one request per line on
                                       CONTROL_FD, runs it notebook-style, writes
                                       {"result": {"id": ...}} on STATUS_FD.

The parent holds the write ends of CONTROL_FD and of LIFELINE_FD; the supervisor
kills everything when the lifeline reaches end-of-file (the parent died), and the
worker exits when the control pipe does. A timed-out block gets SIGINT (parent ->
supervisor -> init -> worker), which becomes KeyboardInterrupt inside the block.

Warm mode (``WarmPython``, job key ``"warm"``): the session layout, with a zygote in
the worker's place that forks one child per block (see ``zygote``). Program mode
(``run_program``, job key ``"program"``): the one-shot layout, the child execs it.

Modules: ``start`` (entry script), ``main`` (the job), ``kernel`` (libc, rlimits,
the status channel), ``confine`` (the supervisor's confinement), ``supervise``
(waiting, killing what is left), ``mounts`` (read-only view, tmpfs, capabilities),
``child`` (one-shot code or program), ``execute`` (exec and tracebacks),
``session``, ``zygote`` and ``block`` (the long-lived modes), ``scratch`` and
``trees`` (cleaning up; ``trees`` is also the parent's).
"""
