"""Warm mode's zygote (``WarmPython``, job key ``"warm"``): the session layout
(supervisor, init, one long-lived process), but the long-lived process imports the
preload modules once, then forks one child per block and never runs model code
itself::

    init --forks--> zygote: imports the preload modules; per request on CONTROL_FD:
                      |     fork, wait, kill everything the block started, empty
                      |     the scratch directories, {"result": {"id": ...}} on STATUS_FD
                      +--forks--> block: new process group, its own limits, the
                                  interpreter's signal handlers, fresh RNG seeds, then
                                  execute() exactly like run_child; its result goes to
                                  the zygote on a private pipe (STATUS_FD is closed).

Requests: {"id", "code", "prelude", "cpu_s", "memory_mb"}; {"kill": id} ends that
block early (the parent's wall clock or output cap). The zygote ignores every
signal it can (a block may signal its parent), so only SIGKILL or SIGSTOP stop it;
it exits when the control pipe closes. Its death ends the whole run (init exits
with it), and the parent starts a new one for the next block.

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys

from .block import block_child
from .kernel import (
    LIBC,
    LINUX,
    PR_SET_CHILD_SUBREAPER,
    STARTUP_HANDLERS,
    Reporter,
    exit_report,
    flush_stdio,
    prctl,
    set_handler,
)
from .scratch import Scratch
from .supervise import children_of, ignore_signal

_RESULT_CAP = 4 * 1024 * 1024  # bytes of a block's private result pipe kept (its tail)


class ControlLines:
    """JSON requests from the parent, one per line, read without blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.partial = b""
        self.eof = False
        os.set_blocking(fd, False)

    def read(self) -> list:
        messages = []
        while not self.eof:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            lines = (self.partial + chunk).split(b"\n")
            self.partial = lines.pop()
            for line in lines:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    messages.append(message)
        return messages


def serve_warm(job: dict, reporter: Reporter, got: list, namespaces: list) -> None:
    """The zygote's life: preload, then one forked child per block, until the
    control pipe closes. Never returns."""
    import gc

    for signum in STARTUP_HANDLERS:
        if signum != signal.SIGCHLD:
            set_handler(signum, signal.SIG_IGN)
    try:  # CPU limits are per block (each child's own clock); the zygote's is open
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, hard))
    except (OSError, ValueError):
        pass
    os.chdir("/")  # blocks chdir into the work dir by path: it is re-made after each
    preloaded = preload(job["warm"]["preload"])
    random_module = sys.modules.get("random")  # loaded by a preload module, or not at all
    rngs = [] if random_module is None else [
        obj for obj in gc.get_objects()
        if isinstance(obj, random_module.Random) and not isinstance(obj, random_module.SystemRandom)]
    gc.freeze()  # the preloaded objects: children's collections skip them (fewer copied pages)
    if LINUX and LIBC is not None:
        try:  # orphans of a block re-parent to us, so the sweep reaches them
            prctl(PR_SET_CHILD_SUBREAPER, 1)
        except OSError:
            pass
    scratch = Scratch(job["workdir"], "ipcns" in namespaces)
    scratch.clean()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, ignore_signal)  # a Python handler, so SIGCHLD wakes select()
    control = ControlLines(job["control_fd"])
    context = {"job": job, "rngs": rngs, "wake": (wake_r, wake_w), "control": control,
               "pidns": "pidns" in namespaces, "zygote": os.getpid()}
    enforced = ["memory-limit"] if sys.platform != "darwin" and _as_unlimited() else []
    reporter.send({"ready": got + enforced, "preloaded": preloaded})
    pending: list = []
    while True:
        while not pending:
            if control.eof:
                os._exit(0)  # the parent closed us, or is gone
            select.select([control.fd], [], [])
            pending += [m for m in control.read() if "code" in m]  # a stale kill is dropped
        request = pending.pop(0)
        result, clean = run_warm_block(request, context, scratch)
        if not clean:  # a block left something we cannot remove: the next gets a new zygote
            result["retiring"] = True
        reporter.send({"result": result})
        if not clean:
            os._exit(0)


def _as_unlimited() -> bool:
    """Each block sets its own address-space limit: possible only below an open hard one."""
    return resource.getrlimit(resource.RLIMIT_AS)[1] == resource.RLIM_INFINITY


def preload(names: list) -> list:
    """Import the preload modules (their import-time output goes nowhere); returns
    those that imported. A module that fails is simply not warm: blocks import it
    themselves, and fail as they would in a fresh interpreter."""
    loaded = []
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        for name in names:
            try:
                __import__(name)
                loaded.append(name)
            except BaseException:
                pass
    finally:
        flush_stdio()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)
    return loaded


def run_warm_block(request: dict, context: dict, scratch: Scratch) -> tuple:
    """Fork the block, wait for it (or a kill request), sweep, clean: (result, clean)."""
    result_r, result_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(result_r)
        block_child(request, context, result_w)
    os.close(result_w)
    os.set_blocking(result_r, False)
    try:
        os.setpgid(child, child)  # also done by the child: no window either way
    except OSError:
        pass
    control, (wake_r, _) = context["control"], context["wake"]
    claimed = bytearray()
    killed = False
    reaped = None
    watched = [control.fd, wake_r, result_r]
    while reaped is None and not _has_exited(child):
        for fd in select.select(watched, [], [], 1.0)[0]:
            if fd == result_r and _read_some(result_r, claimed) == 0:
                watched.remove(result_r)
            elif fd == wake_r:
                _drain_fd(wake_r)
            elif fd == control.fd:
                messages = control.read()
                if control.eof or any(m.get("kill") == request.get("id") for m in messages):
                    killed = True
                    _kill_group(child)
                    if control.eof:  # the parent is gone: take everything down, leave
                        sweep(child, context["pidns"])
                        os._exit(0)
        if not hasattr(os, "waitid"):  # no exit check without reaping (macOS before 3.13)
            reaped = _reap(child)
    status_usage = sweep(child, context["pidns"]) or reaped
    while _read_some(result_r, claimed):  # what the (now dead) block wrote last
        pass
    os.close(result_r)
    clean = scratch.clean()
    result = {"id": request.get("id"), "killed": killed}
    if status_usage is not None:
        result["exit"] = exit_report(*status_usage)
    claim = _last_json(claimed)
    if claim is not None:
        for key in ("status", "error", "traceback"):
            result[key] = claim.get(key)
    return result, clean


def _has_exited(pid: int) -> bool:
    """Exit check that does NOT reap: until the sweep, the block's pid (its process
    group id) cannot be recycled for an unrelated group."""
    if not hasattr(os, "waitid"):
        return False
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _reap(pid: int):
    try:
        found, status, usage = os.wait4(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return (status, usage) if found == pid else None


def _kill_group(pgid: int) -> None:
    for kill, target in ((os.killpg, pgid), (os.kill, pgid)):
        try:
            kill(target, signal.SIGKILL)
        except OSError:
            pass


def sweep(child: int, pidns: bool):
    """Kill the block's process group and every other process it started, reap
    them all; returns the block child's (wait status, rusage) when we reaped it.

    In a PID namespace, kill(-1) reaches every process of the namespace but init
    and us; without one, we are a child subreaper, so whatever the block left
    behind re-parents to us and is killed in the next round."""
    found = None
    me = os.getpid()
    while True:
        _kill_group(child)
        if pidns:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        elif LINUX:
            for pid in children_of(me):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            return found
        if pid == child:
            found = (status, usage)


def _read_some(fd: int, into: bytearray):
    """One chunk of a block's result pipe: its size, 0 at end-of-file, None when
    nothing is there now."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError:
        return 0
    into.extend(chunk)
    if len(into) > 2 * _RESULT_CAP:  # junk the code wrote there: keep the tail
        del into[:-_RESULT_CAP]
    return len(chunk)


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass


def _last_json(data: bytearray):
    """The block's result: the last line of its private pipe, if it is one."""
    try:
        value = json.loads(bytes(data).rstrip(b"\n").rsplit(b"\n", 1)[-1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
