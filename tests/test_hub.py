"""mathsolve.hub against a real local HTTP server standing in for the Hugging Face Hub.

Every download here is real: huggingface_hub talks HTTP to `FakeHub` on 127.0.0.1 and writes the
standard cache layout under tmp_path. The server's request log is the witness for "no network".
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from mathsolve import hub
from mathsolve.cli.views.progress import RichDownloadProgress
from mathsolve.errors import DownloadError
from mathsolve.hub import fetch as hub_fetch
from mathsolve.hub.progress import bar_class

from tests.hub_server import FakeHub

REPO = "acme/tiny-math-GGUF"
GGUF = "tiny-math.Q4_K_M.gguf"
MB = 1_000_000


def _noise(size: int, seed: str) -> bytes:
    """Deterministic, incompressible-looking bytes (so a wrong offset is caught)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _payload(size: int, seed: str = "x") -> bytes:
    """A valid GGUF file of exactly `size` bytes (at least 64): one int8 tensor of noise.

    Downloads of `.gguf` files are checked, so what the stand-in serves must be a real GGUF; the
    noise keeps every byte position distinct, and the exact size keeps byte counts easy to assert.
    """
    def header(n: int) -> bytes:
        name = b"w"
        return (b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + struct.pack("<Q", len(name)) + name
                + struct.pack("<IQIQ", 1, n, 24, 0))  # 1 dim of n elements, type I8, offset 0

    data_start = -(-len(header(0)) // 32) * 32
    assert size >= data_start, f"a GGUF payload needs at least {data_start} bytes"
    head = header(size - data_start)
    return head + bytes(data_start - len(head)) + _noise(size - data_start, seed)


def _cache() -> Path:
    return hub.cache_root()


def _blobs() -> Path:
    return _cache() / f"models--{REPO.replace('/', '--')}" / "blobs"


def _gets(server: FakeHub, filename: str = GGUF) -> list:
    return server.requests_for("GET", f"/resolve/main/{filename}")


# -- first download, cache layout, progress ------------------------------------------------------


def test_first_download_writes_hf_cache_layout_and_shows_progress(fake_hub: FakeHub) -> None:
    data = _payload(MB)
    fake_hub.add_file(REPO, GGUF, data)
    out = io.StringIO()

    assert hub.cached_file(REPO, GGUF) is None
    bar = RichDownloadProgress(Console(file=out, force_terminal=True, width=120))
    path = hub.download(REPO, GGUF, progress=bar)

    commit = fake_hub.commit(REPO)
    repo_dir = _cache() / "models--acme--tiny-math-GGUF"
    assert path == repo_dir / "snapshots" / commit / GGUF
    assert path.is_symlink()
    assert path.resolve() == (repo_dir / "blobs" / hashlib.sha256(data).hexdigest()).resolve()
    assert (repo_dir / "refs" / "main").read_text() == commit
    assert path.read_bytes() == data
    assert hub.cached_file(REPO, GGUF) == path
    assert len(_gets(fake_hub)) == 1
    shown = out.getvalue()
    assert GGUF in shown
    assert "1.0/1.0 MB" in shown  # downloaded/total reached the end


def test_the_download_bar_goes_to_stderr_by_default(fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    fake_hub.add_file(REPO, GGUF, _payload(1000))
    hub.download(REPO, GGUF, progress=RichDownloadProgress())
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is for results only
    assert GGUF in captured.err


def test_download_without_progress_prints_nothing(fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    fake_hub.add_file(REPO, GGUF, _payload(1000))
    hub.download(REPO, GGUF)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # not even huggingface_hub's own tqdm bar


# -- cached: zero requests ------------------------------------------------------------------------


def test_second_download_makes_no_request_even_with_the_hub_down(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, GGUF, _payload(4096))
    first = hub.download(REPO, GGUF)
    fake_hub.clear_requests()

    assert hub.download(REPO, GGUF) == first
    assert fake_hub.requests == []

    fake_hub.stop()
    assert hub.download(REPO, GGUF) == first
    assert hub.cached_file(REPO, GGUF) == first
    assert fake_hub.requests == []


def test_file_from_an_older_commit_still_counts_as_cached(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, GGUF, _payload(2048, "a"))
    older = hub.download(REPO, GGUF)
    fake_hub.add_file(REPO, "other.Q8_0.gguf", _payload(1024, "b"))  # a new commit on main
    hub.download(REPO, "other.Q8_0.gguf")  # moves refs/main to it
    fake_hub.clear_requests()

    assert hub.cached_file(REPO, GGUF) == older
    assert hub.download(REPO, GGUF) == older
    assert fake_hub.requests == []


# -- interrupted transfers ------------------------------------------------------------------------


def test_dropped_connection_is_resumed_with_a_range_request(fake_hub: FakeHub) -> None:
    # huggingface_hub keeps what it has written to disk, and it writes 10 MiB chunks: the file
    # must be bigger than one chunk for a resume to start past zero.
    data = _payload(12 * 1024 * 1024)
    drop_at = 11 * 1024 * 1024
    fake_hub.add_file(REPO, GGUF, data)
    fake_hub.drop_after(REPO, GGUF, drop_at)

    path = hub.download(REPO, GGUF)

    assert path.read_bytes() == data
    first, second = _gets(fake_hub)
    assert first.range is None
    assert second.range is not None
    assert second.range.startswith("bytes=") and second.range.endswith("-")
    resumed_from = int(second.range[len("bytes=") : -1])
    assert 0 < resumed_from <= drop_at
    assert not list(_blobs().glob("*.incomplete"))


def test_failed_download_leaves_no_partial_and_the_next_call_completes(fake_hub: FakeHub) -> None:
    data = _payload(300_000)
    fake_hub.add_file(REPO, GGUF, data)
    fake_hub.drop_after(REPO, GGUF, 100_000)  # first GET breaks mid-body...
    fake_hub.fail_next_get(REPO, GGUF, 500)  # ...and the retry fails outright

    with pytest.raises(DownloadError) as failure:
        hub.download(REPO, GGUF)

    assert "500" in failure.value.message and "\n" not in failure.value.message
    assert hub.cached_file(REPO, GGUF) is None
    assert not list(_blobs().glob("*.incomplete"))
    path = hub.download(REPO, GGUF)
    assert path.read_bytes() == data


def test_a_partial_file_is_never_returned_while_downloading(fake_hub: FakeHub) -> None:
    data = _payload(300_000)
    fake_hub.add_file(REPO, GGUF, data)
    fake_hub.bytes_per_second = 600_000  # about half a second
    result: dict[str, object] = {}

    def fetch() -> None:
        result["path"] = hub.download(REPO, GGUF)

    worker = threading.Thread(target=fetch)

    worker.start()
    saw_partial = False
    while worker.is_alive():
        assert hub.cached_file(REPO, GGUF) is None
        saw_partial = saw_partial or (_blobs().is_dir() and any(_blobs().glob("*.incomplete")))
        time.sleep(0.02)
    worker.join()

    assert saw_partial, "the download should have gone through a temporary .incomplete file"
    assert hub.cached_file(REPO, GGUF) == result["path"]
    assert Path(str(result["path"])).read_bytes() == data


def test_orphaned_partial_from_a_killed_process_is_swept(fake_hub: FakeHub) -> None:
    data = _payload(5000)
    fake_hub.add_file(REPO, GGUF, data)
    _blobs().mkdir(parents=True)
    orphan = _blobs() / f"{hashlib.sha256(data).hexdigest()}.0badf00d.incomplete"
    orphan.write_bytes(data[:1234])

    assert hub.download(REPO, GGUF).read_bytes() == data
    assert not orphan.exists()


# -- errors ---------------------------------------------------------------------------------------


def test_connection_refused_names_the_url_and_the_model_flag(fake_hub: FakeHub) -> None:
    fake_hub.stop()
    started = time.monotonic()

    with pytest.raises(DownloadError) as failure:
        hub.download(REPO, GGUF)

    message = failure.value.message
    assert f"{fake_hub.endpoint}/{REPO}/resolve/main/{GGUF}" in message
    assert "--model" in message and "refused" in message
    assert "\n" not in str(failure.value)
    assert time.monotonic() - started < 3, "no backoff when the Hub cannot be reached"


def test_dns_failure_is_reported_as_such(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx2
    import huggingface_hub

    def unresolvable(*_args: object, **_kwargs: object) -> None:
        raise httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unresolvable)
    with pytest.raises(DownloadError, match="DNS lookup failed.*--model"):
        hub.download(REPO, GGUF)


def test_missing_file_is_a_404_download_error(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, GGUF, _payload(100))
    with pytest.raises(DownloadError, match=r"missing\.gguf is not in acme/tiny-math-GGUF.*404"):
        hub.download(REPO, "missing.gguf")
    assert fake_hub.requests_for("GET") == []


def test_missing_repo_is_a_404_download_error(fake_hub: FakeHub) -> None:
    with pytest.raises(DownloadError, match=r"acme/nothing-here not found.*404"):
        hub.download("acme/nothing-here", GGUF)


def test_gated_repo_says_to_set_hf_token(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, GGUF, _payload(100), gated=True)
    with pytest.raises(DownloadError, match="gated.*HF_TOKEN"):
        hub.download(REPO, GGUF)


def test_offline_mode_without_the_file_cached_is_an_error(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add_file(REPO, GGUF, _payload(100))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE.*--model"):
        hub.download(REPO, GGUF)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        hub.list_gguf_files(REPO)
    assert fake_hub.requests == []


def test_offline_mode_with_the_file_cached_returns_it(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add_file(REPO, GGUF, _payload(100))
    path = hub.download(REPO, GGUF)
    fake_hub.clear_requests()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert hub.download(REPO, GGUF) == path
    assert fake_hub.requests == []


def test_not_enough_disk_space_is_refused_before_any_byte(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add_file(REPO, GGUF, _payload(50_000))
    monkeypatch.setattr(hub_fetch, "free_disk_bytes", lambda: 10_000)

    with pytest.raises(DownloadError, match="not enough disk space.*HF_HUB_CACHE"):
        hub.download(REPO, GGUF)
    assert _gets(fake_hub) == []


def test_disk_full_during_the_transfer_is_a_download_error(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.file_download as file_download

    fake_hub.add_file(REPO, GGUF, _payload(50_000))

    def write_then_fill_the_disk(url: str, temp_file: io.BufferedWriter, **_kwargs: object) -> None:
        temp_file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_download, "http_get", write_then_fill_the_disk)
    with pytest.raises(DownloadError, match="disk full"):
        hub.download(REPO, GGUF)
    assert hub.cached_file(REPO, GGUF) is None
    assert not list(_blobs().glob("*.incomplete"))


# -- listing --------------------------------------------------------------------------------------


def test_list_gguf_files_returns_names_and_sizes(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, GGUF, _payload(3000))
    fake_hub.add_file(REPO, "split/tiny-math.Q8_0-00001-of-00002.gguf", _payload(2000))
    fake_hub.add_file(REPO, "README.md", b"# card")

    assert hub.list_gguf_files(REPO) == {
        "split/tiny-math.Q8_0-00001-of-00002.gguf": 2000,
        GGUF: 3000,
    }


def test_list_gguf_files_errors_are_download_errors(fake_hub: FakeHub) -> None:
    with pytest.raises(DownloadError, match="not found"):
        hub.list_gguf_files("acme/nothing-here")
    fake_hub.stop()
    started = time.monotonic()
    with pytest.raises(DownloadError, match="cannot reach"):
        hub.list_gguf_files(REPO)
    assert time.monotonic() - started < 3


def test_the_stand_in_serves_the_tree_listing_huggingface_hub_expects(fake_hub: FakeHub) -> None:
    from huggingface_hub import HfApi

    fake_hub.add_file(REPO, GGUF, _payload(3000))
    fake_hub.add_file(REPO, "split/part-00001.gguf", _payload(100))
    listing = HfApi(endpoint=fake_hub.endpoint).list_repo_tree(REPO, recursive=True)
    tree = {entry.path: entry for entry in listing}

    assert tree[GGUF].size == 3000 and tree[GGUF].lfs is not None
    assert tree["split/part-00001.gguf"].size == 100
    assert "split" in tree  # the folder entry


# -- what came is checked --------------------------------------------------------------------------

ERROR_PAGE = b"<!DOCTYPE html>\n<html><body>Service unavailable</body></html>\n"


def test_an_error_page_served_as_a_gguf_is_refused_and_only_its_own_files_go(fake_hub: FakeHub) -> None:
    kept = _payload(5000, "kept")
    fake_hub.add_file(REPO, "tiny-math.Q8_0.gguf", kept)
    other = hub.download(REPO, "tiny-math.Q8_0.gguf")
    fake_hub.add_file(REPO, GGUF, ERROR_PAGE)

    with pytest.raises(DownloadError) as failure:
        hub.download(REPO, GGUF)

    message = failure.value.message
    assert message == (
        f"the Hub sent {GGUF} for {REPO}, but it is not a GGUF model ({len(ERROR_PAGE)} bytes, "
        "starts with '<!DOCTYPE html>'); nothing was kept"
    )
    assert hub.cached_file(REPO, GGUF) is None and hub.broken_cached_file(REPO, GGUF) is None
    assert not (_blobs() / hashlib.sha256(ERROR_PAGE).hexdigest()).exists()
    assert sorted(p.name for p in _blobs().iterdir()) == [hashlib.sha256(kept).hexdigest()]
    assert hub.cached_file(REPO, "tiny-math.Q8_0.gguf") == other and other.read_bytes() == kept


def test_files_other_than_gguf_are_not_checked(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, "README.md", ERROR_PAGE)
    assert hub.download(REPO, "README.md").read_bytes() == ERROR_PAGE


def test_a_gguf_with_a_corrupt_header_is_refused(fake_hub: FakeHub) -> None:
    data = bytearray(_payload(4000))
    data[24:32] = struct.pack("<Q", 2**56)  # the first tensor name's length
    fake_hub.add_file(REPO, GGUF, bytes(data))

    with pytest.raises(DownloadError, match=f"not a usable GGUF model \\({GGUF} is corrupt"):
        hub.download(REPO, GGUF)
    assert not _blobs().parent.exists()


def test_the_size_the_hub_announces_is_the_one_checked(fake_hub: FakeHub) -> None:
    """A size known from elsewhere (the catalog) gives way to the Hub's for the file it serves now."""
    fake_hub.add_file(REPO, GGUF, _payload(3000))
    assert hub.download(REPO, GGUF, size=4000).stat().st_size == 3000


def test_cached_file_skips_a_broken_copy_for_a_good_older_one(fake_hub: FakeHub) -> None:
    good = _payload(2048, "a")
    fake_hub.add_file(REPO, GGUF, good)
    older = hub.download(REPO, GGUF)
    fake_hub.add_file(REPO, "README.md", b"new card")  # a new commit on main
    repo_dir = _blobs().parent
    newer = repo_dir / "snapshots" / fake_hub.commit(REPO) / GGUF
    newer.parent.mkdir(parents=True)
    newer.write_bytes(ERROR_PAGE)  # another tool's broken copy, in the snapshot refs/main names
    (repo_dir / "refs" / "main").write_text(fake_hub.commit(REPO))

    assert hub.cached_file(REPO, GGUF) == older
    assert hub.broken_cached_file(REPO, GGUF) is None  # a good copy exists: nothing to report


# -- removal --------------------------------------------------------------------------------------


def test_remove_cached_frees_exactly_the_file_size(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, GGUF, _payload(7000, "a"))
    fake_hub.add_file(REPO, "tiny-math.Q8_0.gguf", _payload(9000, "b"))
    hub.download(REPO, GGUF)
    kept = hub.download(REPO, "tiny-math.Q8_0.gguf")
    repo_dir = kept.parents[2]

    assert hub.remove_cached(REPO, GGUF) == 7000
    assert hub.cached_file(REPO, GGUF) is None
    assert kept.read_bytes() == _payload(9000, "b")
    assert hub.remove_cached(REPO, GGUF) == 0

    assert hub.remove_cached(REPO, "tiny-math.Q8_0.gguf") == 9000
    assert not repo_dir.exists()  # nothing left: no empty repo folder lingers in the cache


def test_remove_cached_keeps_a_blob_another_file_links_to(fake_hub: FakeHub) -> None:
    same = _payload(6000)
    fake_hub.add_file(REPO, GGUF, same)
    fake_hub.add_file(REPO, "copy.gguf", same)
    hub.download(REPO, GGUF)
    twin = hub.download(REPO, "copy.gguf")

    assert hub.remove_cached(REPO, GGUF) == 0
    assert twin.read_bytes() == same
    assert hub.remove_cached(REPO, "copy.gguf") == 6000


def test_remove_cached_clears_every_revision_and_counts_the_blob_once(fake_hub: FakeHub) -> None:
    from huggingface_hub import hf_hub_download

    data = _payload(8000)
    fake_hub.add_file(REPO, GGUF, data)
    old = hub.download(REPO, GGUF)
    fake_hub.add_file(REPO, "README.md", b"new card")  # new commit, same GGUF blob
    # Another tool sharing the cache links the same blob from the new snapshot.
    new = Path(hf_hub_download(REPO, GGUF, cache_dir=hub.cache_root(), endpoint=fake_hub.endpoint))
    assert new != old and new.resolve() == old.resolve()

    assert hub.remove_cached(REPO, GGUF) == 8000
    assert not os.path.lexists(old) and not os.path.lexists(new)
    assert hub.cached_file(REPO, GGUF) is None


def test_remove_cached_collects_a_payload_shared_by_repos_once_unused(fake_hub: FakeHub) -> None:
    # Xet downloads move each payload into a cache-wide store shared by all repos (the repo blob
    # becomes a link into it). Build that layout with huggingface_hub's own publishing code.
    from huggingface_hub.utils._shared_blobs import publish_blob_to_shared_store

    data = _payload(5000)
    xet_hash = hashlib.sha256(b"xet:" + data).hexdigest()
    twin_repo = "acme/tiny-math-reupload-GGUF"
    paths = {}
    for repo in (REPO, twin_repo):
        fake_hub.add_file(repo, GGUF, data)
        paths[repo] = hub.download(repo, GGUF)
        blob = Path(os.path.abspath(paths[repo].parent / os.readlink(paths[repo])))
        assert publish_blob_to_shared_store(
            blob_path=str(blob),
            xet_hash=xet_hash,
            cache_dir=hub.cache_root(),
            expected_size=len(data),
        )
    payload = hub.cache_root() / "blobs" / xet_hash[:2] / xet_hash
    assert payload.is_file() and paths[REPO].read_bytes() == data

    assert hub.remove_cached(REPO, GGUF) == 0  # the other repo still uses the payload
    assert paths[twin_repo].read_bytes() == data
    assert hub.remove_cached(twin_repo, GGUF) == len(data)
    assert not payload.exists()


def test_remove_cached_handles_the_no_symlink_layout(fake_hub: FakeHub) -> None:
    # Where symlinks are unavailable (Windows without developer mode) the snapshot holds the file.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = _cache() / "models--acme--tiny-math-GGUF"
    (repo_dir / "snapshots" / commit).mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    (repo_dir / "snapshots" / commit / GGUF).write_bytes(_payload(4321))

    assert hub.cached_file(REPO, GGUF) == repo_dir / "snapshots" / commit / GGUF
    assert hub.remove_cached(REPO, GGUF) == 4321
    assert hub.cached_file(REPO, GGUF) is None


def test_remove_cached_of_something_never_cached_is_zero(fake_hub: FakeHub) -> None:
    assert hub.remove_cached(REPO, GGUF) == 0
    with pytest.raises(DownloadError):
        hub.remove_cached(REPO, "../../outside.gguf")


# -- environment ----------------------------------------------------------------------------------


def test_cache_root_follows_the_environment_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_root() == (tmp_path / "xdg" / "huggingface" / "hub").resolve()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.cache_root() == (tmp_path / "home" / "hub").resolve()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "explicit"))
    assert hub.cache_root() == (tmp_path / "explicit").resolve()
    assert not hub.cache_root().exists() and hub.free_disk_bytes() > 0


# -- progress adapter -----------------------------------------------------------------------------


def test_progress_adapter_draws_one_bar_for_a_xet_download() -> None:
    # Real GGUF files on the Hub come through Xet, which drives the bar through its own reporter.
    from types import SimpleNamespace

    from huggingface_hub.utils._xet_progress_reporting import XetDownloadProgressReporter

    out = io.StringIO()
    bar = RichDownloadProgress(Console(file=out, force_terminal=True, width=120))
    reporter = XetDownloadProgressReporter(
        reconstruction_desc="x", total=2 * MB, log_level=30, tqdm_class=bar_class(bar, GGUF)
    )
    with reporter:
        for done in (MB, 2 * MB):
            report = SimpleNamespace(
                total_bytes_completed=done,
                total_transfer_bytes_completed=done // 2,
                total_bytes_completion_rate=1e6,
                total_transfer_bytes_completion_rate=5e5,
                total_bytes=2 * MB,
            )
            reporter.update_progress(report, {})
    assert bar._progress is not None and len(bar._progress.tasks) == 1
    bar.stop()

    shown = out.getvalue()
    assert "2.0/2.0 MB" in shown
    assert shown.count(GGUF) >= 1 and "x:" not in shown  # our label, not huggingface_hub's


def test_importing_the_module_stays_light() -> None:
    # The CLI imports mathsolve.hub on every run; huggingface_hub and rich load only when used.
    probe = "import sys, mathsolve.hub; print(sorted({'huggingface_hub', 'rich'} & set(sys.modules)))"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
