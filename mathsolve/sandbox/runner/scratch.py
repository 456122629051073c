"""Everything a warm block can write, and how the zygote empties it after each block:
the work dir (re-made at the same path), the private /tmp and /dev/shm, the run's own
temporary directory, and the SysV IPC objects of the private IPC namespace.

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import os

from .kernel import LIBC
from .mounts import PRIVATE_SCRATCH
from .trees import empty_tree

IPC_RMID = 0


class Scratch:
    """Everything a block can write: the work dir (re-made at the same path after
    each block, so blocks see what a fresh run_python sees), the private /tmp and
    /dev/shm, the run's own temporary directory, and SysV IPC objects."""

    def __init__(self, workdir: str, ipcns: bool) -> None:
        self.workdir = workdir
        self.tops = list(PRIVATE_SCRATCH) + [os.path.dirname(workdir)]
        self.modes = {}
        for top in self.tops:
            try:
                self.modes[top] = os.stat(top).st_mode & 0o7777
            except OSError:
                pass
        self.ipcns = ipcns

    def clean(self) -> bool:
        """Empty it all; False if something stayed (the zygote then retires)."""
        for top, mode in self.modes.items():
            try:
                os.chmod(top, mode)  # a block may have chmod-ed them
            except OSError:
                pass
            empty_tree(top, self.workdir)
        try:
            os.makedirs(self.workdir, 0o700, exist_ok=True)
            os.chmod(self.workdir, 0o700)
            fresh = not os.path.islink(self.workdir) and os.listdir(self.workdir) == []
        except OSError:
            fresh = False
        if self.ipcns:  # a private IPC namespace: every object in it was made by a block
            _remove_sysv_ipc()
        return fresh


def _remove_sysv_ipc() -> None:
    if LIBC is None:
        return
    for kind, remove in (("shm", lambda i: LIBC.shmctl(i, IPC_RMID, None)),
                         ("sem", lambda i: LIBC.semctl(i, 0, IPC_RMID)),
                         ("msg", lambda i: LIBC.msgctl(i, IPC_RMID, None))):
        try:
            with open("/proc/sysvipc/" + kind) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 1 and fields[1].isdigit():
                remove(int(fields[1]))
