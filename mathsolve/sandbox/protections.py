"""What confinement the machine grants: the names ``ExecResult.protections`` reports,
and ``capabilities()``, the view ``mathsolve doctor`` prints.

Each item is reported in ``ExecResult.protections`` only when it really took effect;
``capabilities()`` measures them on this machine. On Linux:

==================  ==========================================================
``session-kill``    new session; the whole process group is SIGKILLed at the end
``tmpdir``          fresh private cwd (also HOME and TMPDIR), removed afterwards
``minimal-env``     no parent variables (no tokens/keys): safe PATH, UTF-8
                    locale, TZ; one BLAS/OpenMP thread
``isolated-python`` ``python -I -B``: no PYTHONPATH/user site/script dir on
                    sys.path (the install's site-packages stay importable)
``rlimits``         RLIMIT_CPU (``cpu_s``), RLIMIT_FSIZE, RLIMIT_NOFILE, no core
``memory-limit``    RLIMIT_AS (``memory_mb``, per process)
``cgroup-pids``     a throw-away cgroup with ``pids.max = processes`` (when this
                    process may create one: root, or a delegated cgroup v2)
``nproc``           RLIMIT_NPROC (non-root only: the kernel ignores it for uid 0;
                    inside our user namespace it counts only the sandbox's tasks)
``subreaper``       without a PID namespace, the supervisor is a child subreaper:
                    orphans re-parent to it, and it kills them all at the end,
                    setsid() ones included
``userns``          user namespace (non-root), which unlocks the ones below
``netns``           new network namespace: only a down loopback, no network
``pidns``           new PID namespace; the code is its PID 1, so when it ends
                    the kernel kills everything it started, new sessions too;
                    ``os.getppid()`` is 0 and host processes cannot be signalled
``mountns``         ``readonly-fs``: every mount is read-only;
                    ``tmpfs-workdir``: the cwd is a private tmpfs capped at
                    ``file_size_mb`` (so are /tmp, unless the interpreter
                    lives there, and /dev/shm: code writing there by name
                    works, privately); ``fresh-proc``: /proc shows only the
                    sandbox
``ipcns``/``utsns`` SysV IPC objects and the hostname are private
``no-caps``         all capabilities dropped (bounding set too), so root inside
                    cannot remount, leave the cgroup, load modules, ...
``no-new-privs``    setuid binaries cannot raise privileges
==================  ==========================================================

Root unshares the namespaces directly; other users get them through a user
namespace where the distribution allows unprivileged ones (most do; Ubuntu 24.04
restricts them by default). What is lost without them: network access stays
open, the filesystem stays writable wherever the user can write, and a process
that both leaves the session and kills the supervisor can survive the call
(the ``cgroup-pids`` sweep still catches it when present). As root without a PID
namespace (a container without CAP_SYS_ADMIN) the code can also signal any
host process. Fork bombs are capped by ``cgroup-pids`` or ``nproc``; as root
with neither, only the wall clock bounds them. The memory limit is per process.

macOS gets: ``session-kill``, ``tmpdir``, ``minimal-env``, ``isolated-python``,
``rlimits`` (CPU, file size, open files, core). It does NOT get a memory limit
(RLIMIT_AS is not enforced), network isolation, a process cap, a read-only
filesystem, or a way to catch processes that leave the session. Windows is not
supported (``SandboxError``).

``run_program`` gets the same, but not ``isolated-python`` (the program is not Python).
"""

from __future__ import annotations

import sys

from mathsolve.tools.base import Limits

#: Every protection name that can appear in ``ExecResult.protections``, in report order.
PROTECTIONS: tuple[str, ...] = (
    "session-kill",
    "tmpdir",
    "minimal-env",
    "isolated-python",
    "rlimits",
    "memory-limit",
    "cgroup-pids",
    "nproc",
    "subreaper",
    "userns",
    "netns",
    "pidns",
    "mountns",
    "readonly-fs",
    "tmpfs-workdir",
    "fresh-proc",
    "ipcns",
    "utsns",
    "no-caps",
    "no-new-privs",
)

# Set up by the parent itself, whatever the platform.
PARENT_PROTECTIONS = ("session-kill", "tmpdir", "minimal-env", "isolated-python")


def capabilities(python: str | None = None) -> dict[str, bool | str]:
    """Which protections this machine grants, measured by running a trivial child.

    Keys: every name of ``PROTECTIONS`` (bool), plus ``platform`` and ``python``.
    """
    # Imported here: the runs import this module for PROTECTIONS.
    from mathsolve.sandbox.oneshot import run_python
    from mathsolve.sandbox.process import find_interpreter

    result = run_python("pass", limits=Limits(timeout_s=30), python=python)
    caps: dict[str, bool | str] = {name: name in result.protections for name in PROTECTIONS}
    caps["platform"] = sys.platform
    caps["python"] = find_interpreter(python)
    return caps
