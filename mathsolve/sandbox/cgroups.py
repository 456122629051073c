"""The pids cgroup of a run: a throw-away child cgroup whose ``pids.max`` caps the
sandbox's task count (fork bombs) and whose members can all be killed at the end,
including processes that left the session. Made only where this process may create
one (root, or a delegated cgroup v2); empty ones left by killed callers are removed.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from functools import lru_cache

from mathsolve.sandbox.process import pid_alive

CGROUP_PREFIX = "mathsolve-sandbox-"


@lru_cache(maxsize=1)
def pids_cgroup_parent() -> str | None:
    """Directory under which a child cgroup with the pids controller can be made."""
    try:
        with open("/proc/self/cgroup") as fh:
            memberships = [line.rstrip("\n").split(":", 2) for line in fh]
        with open("/proc/self/mountinfo") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return None
    v1 = _cgroup_v1_pids_dir(memberships, mounts)
    if v1 is not None:
        return v1
    return _cgroup_v2_pids_dir(memberships, mounts)


def _cgroup_mounts(mounts: list[list[str]], fstype: str) -> list[tuple[str, str, list[str]]]:
    """(mount root, mount point, super options) of every mount of ``fstype``."""
    found = []
    for fields in mounts:
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) > sep + 3 and fields[sep + 1] == fstype:
            found.append((fields[3], fields[4], fields[sep + 3].split(",")))
    return found


def _join_cgroup_path(mount_root: str, mount_point: str, path: str) -> str:
    if mount_root != "/" and path.startswith(mount_root):
        path = path[len(mount_root):]
    return os.path.join(mount_point, path.lstrip("/"))


def _cgroup_v1_pids_dir(memberships: list[list[str]], mounts: list[list[str]]) -> str | None:
    for entry in memberships:
        if len(entry) == 3 and "pids" in entry[1].split(","):
            for mount_root, point, options in _cgroup_mounts(mounts, "cgroup"):
                if "pids" in options:
                    return _join_cgroup_path(mount_root, point, entry[2])
    return None


def _cgroup_v2_pids_dir(memberships: list[list[str]], mounts: list[list[str]]) -> str | None:
    own = [entry[2] for entry in memberships if len(entry) == 3 and entry[0] == "0"]
    v2_mounts = _cgroup_mounts(mounts, "cgroup2")
    if not own or not v2_mounts:
        return None
    mount_root, point, _ = v2_mounts[0]
    directory = _join_cgroup_path(mount_root, point, own[0])
    # A v2 cgroup that holds processes cannot enable controllers for children
    # ("no internal processes"), so walk up to one that already delegates pids.
    while directory.startswith(point):
        try:
            with open(os.path.join(directory, "cgroup.subtree_control")) as fh:
                if "pids" in fh.read().split() and os.access(directory, os.W_OK):
                    return directory
        except OSError:
            pass
        if directory == point:
            break
        directory = os.path.dirname(directory)
    return None


@lru_cache(maxsize=1)
def _remove_stale_cgroups(parent: str) -> None:
    """Once per process: remove empty cgroups left by callers that were killed."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(CGROUP_PREFIX):
            continue
        owner = name[len(CGROUP_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not pid_alive(int(owner)):
            try:
                os.rmdir(os.path.join(parent, name))  # fails harmlessly if still populated
            except OSError:
                pass


class PidsCgroup:
    """A throw-away cgroup whose pids.max caps the sandbox's task count."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.procs_file = os.path.join(path, "cgroup.procs")

    @classmethod
    def create(cls, max_tasks: int) -> PidsCgroup | None:
        parent = pids_cgroup_parent()
        if parent is None:
            return None
        _remove_stale_cgroups(parent)
        path = os.path.join(parent, f"{CGROUP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.mkdir(path)
        except OSError:
            return None
        try:
            with open(os.path.join(path, "pids.max"), "w") as fh:
                fh.write(str(max_tasks))
        except OSError:
            cls(path).remove()
            return None
        return cls(path)

    def kill_all(self) -> None:
        """SIGKILL every member, including processes that left the session."""
        kill_file = os.path.join(self.path, "cgroup.kill")  # cgroup v2, Linux 5.14+
        if os.path.exists(kill_file):
            try:
                with open(kill_file, "w") as fh:
                    fh.write("1")
            except OSError:
                pass
        for _ in range(200):  # members may fork while we kill; pids.max bounds them
            pids = self._members()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.002)

    def _members(self) -> list[int]:
        try:
            with open(self.procs_file) as fh:
                return [int(line) for line in fh if line.strip()]
        except (OSError, ValueError):
            return []

    def remove(self) -> None:
        # Killed members leave the cgroup asynchronously: retry briefly.
        deadline = time.monotonic() + 2.0
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # leaves an empty, harmless directory behind
                self.kill_all()
                time.sleep(0.005)

