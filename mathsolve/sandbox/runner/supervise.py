"""The supervisor's life after the fork: wait for the child, kill whatever it left
behind, report how it ended. Also the signal handlers that carry the parent's
requests down (SIGTERM: take everything down; SIGINT: interrupt a session's block).

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import os
import select
import signal

from .kernel import LINUX, Reporter, exit_report


class Watch:
    """What the signal handlers act on (module state: a handler gets no arguments of ours)."""

    # The child's pid until it has been reaped; in a session's init, the worker's.
    live_child: int | None = None
    # Orphans re-parent to us (no PID namespace): kill_descendants must look for them.
    subreaper: bool = False


WATCH = Watch()


def children_of(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (Linux /proc)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # state ppid pgrp session ...
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(name))
    return found


def kill_descendants(child: int | None) -> None:
    """Kill the child (while unreaped its pid cannot be recycled), then our other
    children until none is left. As a subreaper, every descendant whose parent
    dies becomes our child and is killed in a later round. With a PID namespace,
    killing the child (its PID 1) is enough: the kernel kills the rest."""
    if child is not None:
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    me = os.getpid()
    while True:
        # /proc may be the sandbox's own (mounted by the child in a shared mount
        # namespace); its pids then mean nothing here, hence the explicit kill above.
        for pid in children_of(me) if LINUX and WATCH.subreaper else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _on_sigterm(signum, frame) -> None:
    # The parent asks for a clean stop (timeout, output cap): take everything down.
    kill_descendants(WATCH.live_child)
    os._exit(0)


def forward_sigint(signum, frame) -> None:
    # Session mode: the parent interrupts a timed-out block; the supervisor passes
    # it to init, init to the worker (each holds its child in WATCH.live_child).
    if WATCH.live_child is not None:
        try:
            os.kill(WATCH.live_child, signal.SIGINT)
        except OSError:
            pass


def ignore_signal(signum, frame) -> None:
    pass  # a Python handler: the signal still wakes select() through the wakeup fd


def _wait_watching_parent(child: int, lifeline: int):
    """Session mode: wait for the child while reaping the orphans a subreaper
    inherits, and take everything down when the parent PROCESS is gone (its end
    of the lifeline pipe is closed: we read end-of-file)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, ignore_signal)  # a Python handler, so SIGCHLD wakes select()
    while True:
        while True:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == child:
                return status, usage
            if pid == 0:
                break
        ready, _, _ = select.select([lifeline, wake_r], [], [], 5.0)
        if lifeline in ready and not os.read(lifeline, 1):
            kill_descendants(child)
            os._exit(0)
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except OSError:
                pass


def supervise(child: int, reporter: Reporter, subreaper: bool, lifeline: int | None = None) -> None:
    """Wait for the child, clean up after it, report how it ended, then exit."""
    WATCH.live_child, WATCH.subreaper = child, subreaper
    signal.signal(signal.SIGTERM, _on_sigterm)  # installed after fork: the code never sees it
    try:
        if lifeline is None:
            _, status, usage = os.wait4(child, 0)
        else:
            status, usage = _wait_watching_parent(child, lifeline)
    except ChildProcessError:  # pragma: no cover - cannot happen for our own child
        reporter.send({"exit": {"code": None}})
        os._exit(0)
    WATCH.live_child = None
    if subreaper:
        kill_descendants(None)  # background processes the code left behind
    reporter.send({"exit": exit_report(status, usage)})
    os._exit(0)
