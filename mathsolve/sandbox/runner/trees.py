"""Removing directory trees the code may have made hostile (unreadable, unwritable
directories; symbolic links, never followed). Used by the warm zygote between blocks
and, in the parent, by ``mathsolve.sandbox`` to remove a run's private directory.

A leaf module: standard library only and nothing of the runner, so that the parent
imports it as ``mathsolve.sandbox.runner.trees`` without the rest of the runner.
"""

from __future__ import annotations

import os


def empty_tree(top: str, keep: str) -> None:
    """Remove everything below ``top`` except the directories leading to ``keep``
    (emptied too). Never follows a symbolic link."""
    try:
        names = os.listdir(top)
    except OSError:
        return
    prefix = top.rstrip("/") + "/"
    inner = keep[len(prefix):].split("/", 1)[0] if keep.startswith(prefix) else None
    for name in names:
        path = prefix + name
        if name == inner and os.path.isdir(path) and not os.path.islink(path):
            try:
                os.chmod(path, 0o700)
            except OSError:
                pass
            empty_tree(path, keep)
        elif os.path.isdir(path) and not os.path.islink(path):
            remove_tree(path)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def remove_tree(path: str) -> None:
    """Remove a directory tree even if the code made parts of it unreadable or
    unwritable (never following a symbolic link)."""
    import shutil  # here, not at the top: most runs of the runner never remove a tree

    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path) or os.path.islink(path):
        return
    try:
        os.chmod(path, 0o700)  # this one first: os.walk cannot list it otherwise
    except OSError:
        pass
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            try:
                os.chmod(os.path.join(dirpath, name), 0o700, follow_symlinks=False)
            except (OSError, NotImplementedError):
                pass
    shutil.rmtree(path, ignore_errors=True)
