"""Whole-file outputs (`grade --per-record`, `replay --mismatches`): written atomically,
and never over the input or a file mathsolve did not write. (Records files and the run
lock are covered through the CLI in tests/test_hostile_cli.py.)"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from mathsolve.errors import IOFailure, UsageError
from mathsolve.files.outputs import check_replaceable, write_jsonl

# ---------------------------------------------------------------------------
# Writing output files
# ---------------------------------------------------------------------------

KEYS = {"index", "status"}
ROWS = [{"index": 0, "status": "ok"}, {"index": 1, "status": "é"}]


def _rows(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_write_jsonl_creates_and_replaces_its_own_files(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_jsonl(ROWS, out, keys=KEYS)
    assert _rows(out) == ROWS
    write_jsonl(ROWS[:1], out, keys=KEYS)  # an earlier output: replaced
    assert _rows(out) == ROWS[:1]
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    write_jsonl(ROWS, empty, keys=KEYS)  # an empty file may be replaced
    assert _rows(empty) == ROWS
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_write_jsonl_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_jsonl(ROWS, out, keys=KEYS)
    out.chmod(0o640)
    write_jsonl(ROWS, out, keys=KEYS)
    assert out.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize(
    "content",
    [
        b"my notes\n",
        b'{"index": 0}\n',  # an object without all the keys
        b'[1, 2]\n',
        b'{"index": 0, "status": "ok"}\n{"other": 1}\n',  # every sniffed line must qualify
        b"\xff\xfe binary",
    ],
)
def test_write_jsonl_leaves_other_files_alone(tmp_path: Path, content: bytes) -> None:
    out = tmp_path / "precious.txt"
    out.write_bytes(content)
    with pytest.raises(UsageError, match="was not written by mathsolve; not overwriting it"):
        write_jsonl(ROWS, out, keys=KEYS, option="--per-record")
    assert out.read_bytes() == content


def test_write_jsonl_refuses_the_input_and_directories(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"index": 0, "status": "ok"}\n')  # even one that looks like an output
    with pytest.raises(UsageError, match="is the input file"):
        write_jsonl(ROWS, source, keys=KEYS, sources=[source])
    link = tmp_path / "link.jsonl"
    link.symlink_to(source)
    with pytest.raises(UsageError, match="is the input file"):
        check_replaceable(link, keys=KEYS, sources=[source])
    with pytest.raises(UsageError, match="is a directory"):
        write_jsonl(ROWS, tmp_path, keys=KEYS)
    assert source.read_bytes() == b'{"index": 0, "status": "ok"}\n'


def test_write_jsonl_follows_a_symbolic_link_to_an_earlier_output(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    write_jsonl(ROWS, real, keys=KEYS)
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    write_jsonl(ROWS[:1], link, keys=KEYS)
    assert link.is_symlink() and _rows(real) == ROWS[:1]


def test_an_unwritable_directory_is_an_io_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: permission bits do not stop root, and tests may run as root.
    def denied(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(IOFailure, match=r"^cannot write .*out\.jsonl: Permission denied$"):
        write_jsonl(ROWS, tmp_path / "out.jsonl", keys=KEYS)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.jsonl"
    write_jsonl(ROWS, out, keys=KEYS)
    before = out.read_bytes()

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(IOFailure, match=r"^cannot write .*out\.jsonl: No space left on device$"):
        write_jsonl(ROWS[:1], out, keys=KEYS)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_missing_directory_is_an_io_failure(tmp_path: Path) -> None:
    with pytest.raises(IOFailure, match="No such file or directory"):
        write_jsonl(ROWS, tmp_path / "nowhere" / "out.jsonl", keys=KEYS)
