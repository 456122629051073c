"""Files mathsolve writes for the user: never one it did not create, one writer at a time.

- `check_target(path, protect=...)` refuses, before anything is opened for writing, an
  output path that is a directory, not a regular file (/dev/null, a pipe), one of the
  inputs, the model, a GGUF file, or the very file stdout already goes to.
- `RunLock(path)` makes a second run on the same output refuse at once, naming the run
  that holds it (or wait for it with `wait=True`). The lock is an advisory `flock` on a
  sidecar file `<output>.lock` that holds the holder's pid and command; the sidecar is
  created by mathsolve and removed when the run ends (a killed run leaves it behind,
  and the next run takes it over: the kernel drops a dead process's lock).

- `write_jsonl(rows, path, keys=...)` replaces a whole-file output (`grade --per-record`,
  `replay --mismatches`) atomically, and only a file whose lines carry the writer's keys.

Whether the *content* of an existing records file is mathsolve's own is the job of its
reader (mathsolve.core.batch.ResultsFile), which knows the record format.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mathsolve.files import jsonsafe
from mathsolve.errors import IOFailure, UsageError

GGUF_MAGIC = b"GGUF"
_LOCK_HEADER = b"mathsolve run lock\n"


def check_target(path: Path, *, protect: tuple[tuple[str, str], ...] = (), what: str = "-o") -> None:
    """Refuse an output path that must not be written. `protect` holds (path, role)
    pairs such as (input file, "an input"), (model file, "the model")."""
    shown = str(path)
    if shown in ("", "."):  # `-o ""` arrives as "."
        raise UsageError(f"{what} needs a file name")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise IOFailure(f"cannot use {shown} as {what}: {exc.strerror or exc}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{what} {shown} is a directory; give a file name inside it")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{what} {shown} is not a regular file (records are appended and re-read to resume); "
                         "for records on stdout use --jsonl")
    if path.suffix.lower() == ".gguf" or (info is not None and _starts_with(path, GGUF_MAGIC)):
        raise UsageError(f"{what} {shown} is a GGUF model file; records go to a .jsonl file")
    for other, role in protect:
        if other and other != "-" and _same_file(path, Path(other)):
            raise UsageError(f"{what} {shown} is {role}; mathsolve never writes to it: choose another output file")
    if info is not None and _same_file_as_stdout(info):
        raise UsageError(f"{what} {shown} is also where stdout goes; two writers would mix their lines")


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(magic)) == magic
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _same_file_as_stdout(info: os.stat_result) -> bool:
    try:
        out = os.fstat(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return stat.S_ISREG(out.st_mode) and (out.st_dev, out.st_ino) == (info.st_dev, info.st_ino)


class RunLock:
    """An exclusive lock on `target` for one run (see the module docstring)."""

    def __init__(self, target: Path, *, wait: bool = False, notify=None) -> None:
        self.target = target
        self.path = target.with_name(target.name + ".lock")
        self.wait = wait
        self.notify = notify
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not self.wait:
                    os.close(fd)
                    raise IOFailure(f"{self.target} is being written by another mathsolve run ({holder}); "
                                    "let it finish, or rerun with --wait") from None
                if self.notify is not None:
                    self.notify(f"waiting for the other run writing {self.target} ({holder})")
                fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder removes the sidecar when it ends: a lock on a removed file locks
            # nothing, so start over on the file the path names now.
            if _same_inode(fd, self.path):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        command = " ".join(sys.argv[1:])[:300]
        os.write(fd, _LOCK_HEADER + f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}: mathsolve {command}\n"
                 .encode("utf-8", "replace"))
        self._fd = fd
        return self

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise IOFailure(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
        head = os.pread(fd, len(_LOCK_HEADER), 0)
        if head and head != _LOCK_HEADER:
            os.close(fd)
            raise UsageError(f"{self.path} exists and is not a mathsolve lock file; "
                             "mathsolve will not overwrite it (move it away, or choose another output)")
        return fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: no one else can be mid-run on it
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    text = os.pread(fd, 1000, 0)[len(_LOCK_HEADER):].decode("utf-8", "replace").strip()
    return text or "pid unknown"


def _same_inode(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# -- whole files: --per-record, --mismatches -----------------------------------------------

# How much of an existing output file is read to recognise it as ours.
_SNIFF_BYTES = 1024 * 1024
_SNIFF_LINES = 5


def check_replaceable(destination: Path, *, keys: Iterable[str], sources: Sequence[Path] = (),
                      option: str = "output") -> Path:
    """The path to write ``destination`` at, after refusing unsafe destinations.

    Refused (UsageError): one of the ``sources`` (the input being read), a directory,
    something other than a regular file, or an existing non-empty file that is not
    JSONL whose first lines are objects holding all of ``keys`` (what the writer emits:
    a file mathsolve wrote before may be replaced, anything else is left alone). A
    symbolic link is followed: the file it points at is the one replaced.
    """
    destination = Path(destination)
    target = destination.resolve() if destination.is_symlink() else destination
    check_target(target, protect=tuple((str(source), "the input file") for source in sources), what=option)
    try:
        if not target.exists():
            return target
        with target.open("rb") as stream:
            head = stream.read(_SNIFF_BYTES + 1)
    except OSError as exc:
        raise IOFailure(f"cannot read {destination}: {exc.strerror or exc}") from None
    if not _written_by_us(head, frozenset(keys)):
        raise UsageError(f"{option} {destination} exists and was not written by mathsolve; "
                         "not overwriting it (remove it or choose another path)")
    return target


def _written_by_us(head: bytes, keys: frozenset[str]) -> bool:
    """Whether the start of a file is JSONL of objects holding all of ``keys``."""
    complete = len(head) <= _SNIFF_BYTES
    try:
        text = head[:_SNIFF_BYTES].decode("utf-8", "strict" if complete else "ignore")
    except UnicodeDecodeError:
        return False
    lines = text.split("\n")
    if not complete:
        lines = lines[:-1]  # the last line was cut by the read
    lines = [line for line in lines if line.strip()][:_SNIFF_LINES]
    if not lines:
        return complete and not text.strip()  # empty (or blank) files may be replaced
    for line in lines:
        try:
            row = jsonsafe.loads(line)
        except jsonsafe.JSONInputError:
            return False
        if not isinstance(row, dict) or not keys <= row.keys():
            return False
    return True


def write_jsonl(rows: Iterable[Any], destination: Path, *, keys: Iterable[str], sources: Sequence[Path] = (),
                option: str = "output") -> None:
    """Write ``rows`` as JSONL at ``destination``, atomically (see ``check_replaceable``).

    The lines go to a temporary file in the same directory, which then replaces the
    destination in one rename: readers see the old file or the whole new one, and a
    failure (disk full, Ctrl-C) leaves the old file as it was. OSError -> IOFailure.
    """
    target = check_replaceable(destination, keys=keys, sources=sources, option=option)
    temporary = _create_temporary(target, destination)
    try:
        with os.fdopen(temporary[1], "wb") as stream:
            for row in rows:
                stream.write(jsonsafe.dump_line(row))
            stream.flush()
            os.fsync(stream.fileno())  # the rename must not land before the data
        os.replace(temporary[0], target)
    except BaseException as exc:
        _remove_quietly(temporary[0])
        if isinstance(exc, OSError):
            raise IOFailure(f"cannot write {destination}: {exc.strerror or exc}") from None
        raise


def _create_temporary(target: Path, destination: Path) -> tuple[Path, int]:
    """A new file beside ``target``, opened for writing, with the mode a plain open would give."""
    for _ in range(100):
        path = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 through the umask: the permissions open(..., "w") would have given.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise IOFailure(f"cannot write {destination}: {exc.strerror or exc}") from None
        _keep_mode(target, descriptor)
        return path, descriptor
    raise IOFailure(f"cannot write {destination}: no free temporary file name beside it")


def _keep_mode(target: Path, descriptor: int) -> None:
    """Give the new file the permissions of the file it replaces, if there is one."""
    if sys.platform == "win32":
        return
    try:
        os.fchmod(descriptor, target.stat().st_mode & 0o7777)
    except OSError:
        pass  # no old file, or not ours to inspect: keep the umask's mode


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
