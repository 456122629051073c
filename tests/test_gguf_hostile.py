"""Hostile model files: corrupt headers, unreadable paths, error pages served as models.

Every file here is real bytes on disk; every download goes over HTTP to `FakeHub`. The promise
under test: whatever a model file holds, the reader ends with one `ModelFileError` line (exit 4)
or a result, never a MemoryError, a hang or a traceback; and nothing that is not a GGUF model is
kept in, or reported from, the Hugging Face cache.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import hypothesis
import pytest
from hypothesis import strategies as st
from typer.testing import CliRunner

from mathsolve import hub
from mathsolve.errors import EXIT_BAD_MODEL_FILE, EXIT_DOWNLOAD, ModelFileError
from mathsolve.ggufinfo import read_gguf

from tests.hub_server import FakeHub


runner = CliRunner()
REPO, FILE = "acme/tiny-GGUF", "tiny.F32.gguf"
HTML = b"<!DOCTYPE html>\n<html><head><title>Just a moment...</title></head></html>\n"
QUESTION = "What is 2 + 3?"

# GGUF value types used below.
U8, U32, STRING, ARRAY = 0, 4, 8, 9
F32_TYPE = 0


# -- a small GGUF writer, field by field, so each field can be made hostile -------------------------


def _str(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _str(key.encode()) + struct.pack("<I", vtype) + payload


def _array(itype: int, count: int, items: bytes) -> bytes:
    return struct.pack("<IQ", itype, count) + items


def _tensor(name: str, dims: list[int], ttype: int = F32_TYPE, offset: int = 0) -> bytes:
    return (_str(name.encode()) + struct.pack("<I", len(dims))
            + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ttype, offset))


def _gguf(kvs: list[bytes], tensors: list[bytes], data: bytes = b"", *,
          n_kv: int | None = None, n_tensors: int | None = None) -> bytes:
    """A GGUF v3 file; `n_kv`/`n_tensors` override the counts the header claims."""
    head = (b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if n_tensors is None else n_tensors,
                                  len(kvs) if n_kv is None else n_kv)
            + b"".join(kvs) + b"".join(tensors))
    return head + bytes(-len(head) % 32) + data


def _valid_kvs() -> list[bytes]:
    """One key of every shape the reader handles: scalar, string, arrays flat, of strings, nested."""
    return [
        _kv("general.architecture", STRING, _str(b"llama")),
        _kv("general.alignment", U32, struct.pack("<I", 32)),
        _kv("llama.context_length", U32, struct.pack("<I", 512)),
        _kv("tokenizer.ggml.tokens", ARRAY, _array(STRING, 3, _str(b"a") + _str(b"bc") + _str(b""))),
        _kv("tokenizer.ggml.token_type", ARRAY, _array(U32, 3, struct.pack("<3I", 1, 1, 3))),
        _kv("test.nested", ARRAY, _array(ARRAY, 2, _array(U8, 2, b"\x01\x02") + _array(STRING, 1, _str(b"x")))),
    ]


def valid_gguf() -> bytes:
    """A complete small GGUF: the keys above and one 8x2 f32 tensor with its 64 bytes of data."""
    return _gguf(_valid_kvs(), [_tensor("w", [8, 2])], bytes(64))


HUGE = 2**56


def _corrupt_headers() -> dict[str, bytes]:
    """Each a file the reader must refuse with one line, without allocating what it claims."""
    kvs, tensor = _valid_kvs(), _tensor("w", [8, 2])
    nested = _array(ARRAY, 1, _array(ARRAY, 1, _array(ARRAY, 1, _array(ARRAY, 1, _array(U8, 0, b"")))))
    for _ in range(5):  # 10 levels in all; the reader allows 8
        nested = _array(ARRAY, 1, nested)
    return {
        "huge key length": b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", HUGE) + b"k" * 64,
        "key length past the end": _gguf([struct.pack("<Q", 60_000) + b"k" * 10], [], n_kv=1),
        "huge string value": _gguf([_kv("general.name", STRING, struct.pack("<Q", HUGE) + b"x")], []),
        "huge skipped string": _gguf([_kv("general.notes", STRING, struct.pack("<Q", HUGE) + b"x")], []),
        "huge array count": _gguf([_kv("a", ARRAY, _array(U32, HUGE, b"\0" * 16))], []),
        "array count past the end": _gguf([_kv("a", ARRAY, _array(U32, 100, b"\0" * 16))], []),
        "huge array of strings": _gguf([_kv("a", ARRAY, _array(STRING, HUGE, _str(b"x")))], []),
        "huge nested array count": _gguf([_kv("a", ARRAY, _array(ARRAY, 1, _array(U8, HUGE, b"")))], []),
        "arrays nested too deep": _gguf([_kv("a", ARRAY, nested)], []),
        "huge n_kv": _gguf(kvs, [tensor], bytes(64), n_kv=HUGE),
        "n_kv past the end": _gguf(kvs, [tensor], bytes(64), n_kv=1000),
        "huge n_tensors": _gguf(kvs, [tensor], bytes(64), n_tensors=HUGE),
        "n_tensors past the end": _gguf(kvs, [tensor], bytes(64), n_tensors=500),
        "too many dims": _gguf(kvs, [_tensor("w", [2, 2, 2, 2, 1])], bytes(64)),
        "huge dim count": _gguf(kvs, [_str(b"w") + struct.pack("<I", 2**31)], bytes(64)),
        "dims overflow int64": _gguf(kvs, [_tensor("w", [2**40, 2**40])], bytes(64)),
        "unknown value type": _gguf([_kv("a", 99, b"\0" * 8)], []),
        "unknown array item type": _gguf([_kv("a", ARRAY, _array(77, 1, b"\0" * 8))], []),
        "unknown tensor type": _gguf(kvs, [_tensor("w", [8, 2], ttype=77)], bytes(64)),
        "huge tensor name": _gguf(kvs, [struct.pack("<Q", HUGE) + b"w" * 40], bytes(64)),
        "row not whole blocks": _gguf(kvs, [_tensor("w", [8, 2], ttype=8)], bytes(64)),  # Q8_0: 32/block
        "unaligned tensor offset": _gguf(kvs, [_tensor("w", [8, 2], offset=3)], bytes(64)),
        "alignment zero": _gguf([_kv("general.alignment", U32, struct.pack("<I", 0))], [_tensor("w", [1])], bytes(4)),
        "alignment not a power of two": _gguf([_kv("general.alignment", U32, struct.pack("<I", 24))], []),
        "tensor data missing": valid_gguf()[:-1],
        "zero-length file": b"",
        "html error page": HTML,
        "unsupported version": b"GGUF" + struct.pack("<IQQ", 1, 0, 0),
    }


CORRUPT = _corrupt_headers()


def _refused(path: Path) -> ModelFileError:
    """read_gguf's error for `path`, checked to be one line naming the file, and cheap."""
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError) as caught:
            read_gguf(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = caught.value.message
    assert "\n" not in str(caught.value) and str(path) in message
    assert peak < 4 << 20, f"refusing {path.name} allocated {peak:,} bytes"
    return caught.value


# -- the reader ----------------------------------------------------------------------------------


def test_the_handmade_file_passes(tmp_path: Path) -> None:
    # The baseline the corrupt cases are made from: it must pass, or they prove nothing.
    path = tmp_path / "ok.gguf"
    path.write_bytes(valid_gguf())
    info = read_gguf(path)
    assert info.architecture == "llama" and info.context_length() == 512 and info.n_tensors == 1


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_header_is_one_model_file_error(case: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(CORRUPT[case])
    message = _refused(path).message
    assert any(word in message for word in ("corrupt", "truncated", "not a GGUF", "unsupported")), message


def test_a_cut_anywhere_is_refused(tmp_path: Path) -> None:
    # Truncation inside every section: magic, counts, each key and value, tensor table, data.
    data = valid_gguf()
    path = tmp_path / "cut.gguf"
    for end in range(len(data)):
        path.write_bytes(data[:end])
        with pytest.raises(ModelFileError):
            read_gguf(path)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model.gguf"
    folder.mkdir()
    assert "it is a directory" in _refused(folder).message


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: outcome.append(_catch(lambda: read_gguf(fifo))), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert isinstance(outcome[0], ModelFileError) and "not a regular file" in outcome[0].message


def _catch(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test inspects whatever was raised
        return exc
    raise AssertionError("no error raised")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "locked.gguf"
    path.write_bytes(valid_gguf())
    path.chmod(0)
    try:
        assert "Permission denied" in _refused(path).message
    finally:
        path.chmod(0o600)


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_an_input_output_error_is_refused() -> None:
    # /proc/self/mem is a regular file whose first page is never mapped: reading it fails with EIO.
    message = _refused(Path("/proc/self/mem")).message
    assert message.startswith("cannot read model file /proc/self/mem:")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert "not found" in _refused(tmp_path / "nothing.gguf").message


def test_mutated_files_are_read_or_refused_never_anything_else(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = valid_gguf()
    path = tmp_path_factory.mktemp("mutants") / "mutant.gguf"

    @hypothesis.settings(max_examples=400, deadline=None, database=None, derandomize=True)
    @hypothesis.given(
        cut=st.integers(0, len(base)),
        flips=st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=6),
        fields=st.lists(st.tuples(st.integers(0, len(base) - 8), st.sampled_from([0, 1, 5, 2**31, 2**63, 2**64 - 1])),
                        max_size=2),
    )
    def check(cut: int, flips: list[tuple[int, int]], fields: list[tuple[int, int]]) -> None:
        data = bytearray(base)
        for at, value in fields:  # a length or count field replaced by an extreme value
            data[at:at + 8] = struct.pack("<Q", value)
        for at, value in flips:
            data[at] = value
        _read_or_refuse(path, bytes(data[:cut]))

    check()


def _read_or_refuse(path: Path, data: bytes) -> None:
    """The property: any bytes are read, or refused with one line; never another exception."""
    path.write_bytes(data)
    try:
        read_gguf(path)
    except ModelFileError as exc:
        assert "\n" not in exc.message


def test_mutated_real_models_are_read_or_refused(tiny_bpe: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tiny_bpe.read_bytes()
    header = min(len(base), 16_384)  # the header and tensor table; past them only weights
    path = tmp_path_factory.mktemp("mutants") / "mutant.gguf"

    @hypothesis.settings(max_examples=150, deadline=None, database=None, derandomize=True)
    @hypothesis.given(
        cut=st.one_of(st.integers(0, header), st.just(len(base))),
        flips=st.lists(st.tuples(st.integers(0, header - 1), st.integers(0, 255)), max_size=4),
    )
    def check(cut: int, flips: list[tuple[int, int]]) -> None:
        data = bytearray(base)
        for at, value in flips:
            data[at] = value
        _read_or_refuse(path, bytes(data[:cut]))

    check()


# -- the CLI on a bad --model file -----------------------------------------------------------------


@pytest.mark.parametrize("case", ["huge key length", "huge array count", "zero-length file", "html error page"])
def test_cli_bad_model_file_exits_4_with_one_error_line(case: str, tmp_path: Path) -> None:
    from mathsolve.cli import app

    bad = tmp_path / "BAD.gguf"
    bad.write_bytes(CORRUPT[case])
    r = runner.invoke(app, ["--model", str(bad), "--protocol", "tora", "q"])
    assert r.exit_code == EXIT_BAD_MODEL_FILE, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0]


def test_cli_directory_as_model_exits_4(tmp_path: Path) -> None:
    from mathsolve.cli import app

    (tmp_path / "dir.gguf").mkdir()
    r = runner.invoke(app, ["--model", str(tmp_path / "dir.gguf"), "--protocol", "tora", "q"])
    assert r.exit_code == EXIT_BAD_MODEL_FILE, r.output
    assert r.stderr.strip().splitlines() == [f"error: cannot read model file {tmp_path / 'dir.gguf'}: it is a directory"]


# -- the Hub sends something else -----------------------------------------------------------------


def _register(size: int | None = None) -> None:
    """A catalog entry `tiny` whose file lives on the Hub stand-in."""
    from mathsolve.catalog import GGUFFile, ModelCard
    from mathsolve.hookspecs import hookimpl
    from mathsolve.plugins import get_plugin_manager

    card = ModelCard(name="tiny", family="test", checkpoint="acme/tiny", protocol="qwen-tir", context=512,
                     repo=REPO, default_quant="F32", files={"F32": GGUFFile("F32", FILE, size=size)})

    class Plugin:
        @hookimpl
        def register_models(self, register):
            register(card)

    get_plugin_manager().pm.register(Plugin(), name="tiny-hostile-catalog")


def _run(*args: str):
    from mathsolve.cli import app

    return runner.invoke(app, list(args))


def _listed() -> dict:
    r = _run("models", "--json")
    assert r.exit_code == 0, r.output
    return {row["name"]: row for row in json.loads(r.stdout)}["tiny"]


def _cache_files() -> list[Path]:
    """Every file under the repo's cache folder (locks live elsewhere, and hold no data)."""
    repo_dir = hub.cache_root() / f"models--{REPO.replace('/', '--')}"
    return sorted(p for p in repo_dir.rglob("*") if not p.is_dir()) if repo_dir.exists() else []


def _gets(server: FakeHub) -> int:
    return len(server.requests_for("GET", f"/resolve/main/{FILE}"))


def test_pull_of_an_html_page_exits_5_and_keeps_nothing(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, FILE, HTML)
    _register()
    r = _run("pull", "tiny")
    assert r.exit_code == EXIT_DOWNLOAD, r.output
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the Hub sent tiny.F32.gguf for acme/tiny-GGUF, but it is not a GGUF model")
    assert f"({len(HTML)} bytes, starts with '<!DOCTYPE html>')" in lines[-1] and "nothing was kept" in lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1
    assert _cache_files() == []
    assert hub.cached_file(REPO, FILE) is None
    row = _listed()
    assert row["downloaded"] == [] and row["broken"] == []


def test_pull_of_a_truncated_model_exits_5_and_keeps_nothing(fake_hub: FakeHub, tiny_bpe: Path) -> None:
    data = tiny_bpe.read_bytes()
    fake_hub.add_file(REPO, FILE, data[: len(data) // 2])  # the Hub itself serves half a model
    _register()
    r = _run("pull", "tiny")
    assert r.exit_code == EXIT_DOWNLOAD, r.output
    assert "not a usable GGUF model (tiny.F32.gguf is truncated" in r.stderr and "nothing was kept" in r.stderr
    assert _cache_files() == [] and _listed()["downloaded"] == []


def test_the_hubs_size_wins_over_the_catalogs_and_is_checked(fake_hub: FakeHub, tiny_bpe: Path) -> None:
    """A file replaced upstream (its catalog size is stale) is still the model the Hub serves:
    it is downloaded and checked against the size the Hub announced, and kept as downloaded."""
    fake_hub.add_file(REPO, FILE, tiny_bpe.read_bytes())
    _register(size=tiny_bpe.stat().st_size * 3)
    r = _run("pull", "tiny")
    assert r.exit_code == 0, r.output
    assert _listed()["downloaded"] == ["F32"]
    fake_hub.add_file(REPO, FILE, HTML)  # the upstream file is now an error page
    hub.remove_cached(REPO, FILE)
    r = _run("pull", "tiny")
    assert r.exit_code == EXIT_DOWNLOAD and "not a GGUF model" in r.stderr and _cache_files() == []


def test_a_blob_cut_short_on_disk_is_not_downloaded_when_the_size_is_known(fake_hub: FakeHub, tiny_bpe: Path) -> None:
    data = tiny_bpe.read_bytes()
    fake_hub.add_file(REPO, FILE, data)
    path = hub.download(REPO, FILE, size=len(data))
    path.resolve().write_bytes(data[:-10])  # the blob, cut by a full disk or another tool
    assert hub.cached_file(REPO, FILE) == path  # the size unknown: only the magic is checked
    assert hub.cached_file(REPO, FILE, size=len(data)) is None
    assert hub.broken_cached_file(REPO, FILE, size=len(data)) == path
    assert hub.download(REPO, FILE, size=len(data)).read_bytes() == data
    assert _gets(fake_hub) == 2


def test_a_cached_file_with_wrong_magic_is_downloaded_again_by_the_next_solve(
    fake_hub: FakeHub, tiny_bpe: Path
) -> None:
    data = tiny_bpe.read_bytes()
    fake_hub.add_file(REPO, FILE, data)
    _register()
    r = _run("pull", "tiny")
    assert r.exit_code == 0, r.output
    cached = Path(r.stdout.strip())
    cached.resolve().write_bytes(HTML)  # the blob now holds an error page (an older version kept it)

    row = _listed()
    assert row["downloaded"] == [] and row["broken"] == ["F32"]
    assert "F32 (broken)" in _run("models").stdout
    shown = " ".join(_run("models", "show", "tiny").stdout.split())  # the table may wrap the cell
    assert "broken: mathsolve rm" in shown and "tiny:F32" in shown

    r = _run("--model", "tiny", "--max-tokens", "4", "--json", QUESTION)
    assert r.exit_code == 0, r.output
    assert _gets(fake_hub) == 2
    assert cached.read_bytes() == data
    assert _listed()["downloaded"] == ["F32"]


def test_offline_with_a_broken_cached_file_says_so(fake_hub: FakeHub, tiny_bpe: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub.add_file(REPO, FILE, tiny_bpe.read_bytes())
    _register()
    cached = hub.download(REPO, FILE)
    cached.resolve().write_bytes(HTML)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = _run("--model", "tiny", "--max-tokens", "4", QUESTION)
    assert r.exit_code == EXIT_DOWNLOAD, r.output
    assert "the cached copy is not a usable GGUF" in r.stderr


def test_rm_removes_a_broken_cached_file(fake_hub: FakeHub, tiny_bpe: Path) -> None:
    fake_hub.add_file(REPO, FILE, tiny_bpe.read_bytes())
    _register()
    cached = hub.download(REPO, FILE)
    cached.resolve().write_bytes(HTML)

    r = _run("rm", "tiny")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("removed tiny:F32 (tiny.F32.gguf)")
    assert _cache_files() == [] and _listed()["broken"] == []
    assert _run("rm", "tiny").stdout.startswith("tiny:F32 is not downloaded")
