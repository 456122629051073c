"""Models published as several GGUF files (gpt-oss-120b: `...-00001-of-00003.gguf` to `-00003`),
against the local stand-in Hub: every part is downloaded into one snapshot folder, the first
part's path is what llama.cpp gets (it opens the rest beside it, checked with a real split
tiny model), the sizes of all parts count, and the parts are cached and removed together."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from unittest import mock

import pytest

from mathsolve import hub
from mathsolve.catalog import GGUFFile
from mathsolve.errors import DownloadError
from mathsolve.hub import fetch as hub_fetch
from mathsolve.hub.parts import split_parts
from mathsolve.testkit import write_tiny_gguf

from tests.hub_server import FakeHub

REPO = "acme/split-math-GGUF"
FIRST = "split-math-00001-of-00003.gguf"
PARTS = [FIRST, "split-math-00002-of-00003.gguf", "split-math-00003-of-00003.gguf"]


@pytest.fixture(scope="module")
def split_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A real tiny model in three parts, as llama.cpp's gguf-split names and writes them: the
    test kit's writer with gguf's own sharding turned on (8 tensors per part)."""
    import gguf

    folder = tmp_path_factory.mktemp("split")
    import mathsolve.testkit.gguf as kit

    with mock.patch.object(kit.gguf, "GGUFWriter", functools.partial(gguf.GGUFWriter, split_max_tensors=8)):
        write_tiny_gguf(folder / "split-math.gguf")
    assert sorted(p.name for p in folder.iterdir()) == PARTS
    return {name: (folder / name).read_bytes() for name in PARTS}


@pytest.fixture
def published(fake_hub: FakeHub, split_model: dict[str, bytes]) -> FakeHub:
    for name, data in split_model.items():
        fake_hub.add_file(REPO, name, data)
    return fake_hub


def _gets(server: FakeHub, name: str) -> int:
    return len([r for r in server.requests_for("GET") if r.path.endswith("/" + name)])


def _forget(entry: Path) -> None:
    """Remove a cached file for good: its snapshot link and the blob it points to."""
    blob = entry.resolve()
    entry.unlink()
    blob.unlink()


def test_the_parts_are_named_as_llama_cpp_names_them() -> None:
    assert split_parts(FIRST) == PARTS
    in_folder = ["Q4_K_M/m-00001-of-00002.gguf", "Q4_K_M/m-00002-of-00002.gguf"]
    assert split_parts(in_folder[0]) == in_folder
    assert split_parts("gpt-oss-20b-mxfp4.gguf") == ["gpt-oss-20b-mxfp4.gguf"]
    assert split_parts("m-00002-of-00003.gguf") == ["m-00002-of-00003.gguf"]  # only a first part names a model
    assert split_parts("m-00001-of-00001.gguf") == ["m-00001-of-00001.gguf"]
    card_file = GGUFFile(quant="MXFP4", file="gpt-oss-120b-mxfp4-00001-of-00003.gguf", size_gb=63.0)
    assert card_file.parts[-1] == "gpt-oss-120b-mxfp4-00003-of-00003.gguf" and len(card_file.parts) == 3


def test_every_part_lands_in_one_folder_and_llama_cpp_loads_the_model(published: FakeHub) -> None:
    from mathsolve.engines.base import Sampling
    from mathsolve.engines.llama import LlamaEngine

    assert hub.cached_file(REPO, FIRST) is None
    path = hub.download(REPO, FIRST)
    assert path.name == FIRST and path.parent.name == published.commit(REPO)
    assert sorted(p.name for p in path.parent.iterdir()) == PARTS
    assert all(_gets(published, name) == 1 for name in PARTS)
    assert hub.cached_file(REPO, FIRST) == path

    engine = LlamaEngine(str(path), n_ctx=256, extra_buffers="off")  # the other parts: found by llama.cpp
    try:
        generation = engine.session("2 + 3 =", special=False, render_special=False).generate(
            stops=(), max_tokens=4, sampling=Sampling())
        assert generation.n_tokens == 4
    finally:
        engine.close()


def test_a_missing_part_means_not_cached_and_only_it_is_fetched(published: FakeHub) -> None:
    path = hub.download(REPO, FIRST)
    _forget(path.parent / PARTS[2])
    assert hub.cached_file(REPO, FIRST) is None
    assert hub.broken_cached_file(REPO, FIRST) is None  # incomplete, not broken

    published.clear_requests()
    assert hub.download(REPO, FIRST) == path
    assert [_gets(published, name) for name in PARTS] == [0, 0, 1]


def test_a_broken_part_is_reported_and_fetched_again(published: FakeHub) -> None:
    path = hub.download(REPO, FIRST)
    second = path.parent / PARTS[1]
    blob = second.resolve()
    blob.write_bytes(blob.read_bytes()[:10])  # a blob cut short, inside its header
    assert hub.cached_file(REPO, FIRST) is None
    assert hub.broken_cached_file(REPO, FIRST) == second

    assert hub.download(REPO, FIRST) == path
    assert hub.cached_file(REPO, FIRST) == path


def test_parts_follow_the_first_when_main_has_moved(published: FakeHub) -> None:
    """The first part cached at an older commit: the model is fetched whole at main's commit,
    the first part linked from its blob rather than downloaded again."""
    old = hub.download(REPO, FIRST)
    for name in PARTS[1:]:
        _forget(old.parent / name)
    published.add_file(REPO, "README.md", b"new card")  # a new commit on main
    published.clear_requests()

    path = hub.download(REPO, FIRST)
    assert path.parent.name == published.commit(REPO) != old.parent.name
    assert sorted(p.name for p in path.parent.iterdir()) == PARTS
    assert [_gets(published, name) for name in PARTS] == [0, 1, 1]


def test_disk_space_is_checked_for_all_parts_before_any_byte(
    published: FakeHub, split_model: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    total = sum(len(data) for data in split_model.values())
    monkeypatch.setattr(hub_fetch, "free_disk_bytes", lambda: total - 1)  # room for any one part
    with pytest.raises(DownloadError, match=f"not enough disk space for {FIRST} with its 2 other parts"):
        hub.download(REPO, FIRST)
    assert published.requests_for("GET") == []


def test_a_part_missing_on_the_hub_is_named(fake_hub: FakeHub, split_model: dict[str, bytes]) -> None:
    for name in PARTS[:2]:
        fake_hub.add_file(REPO, name, split_model[name])
    with pytest.raises(DownloadError, match=r"split-math-00003-of-00003\.gguf is not in acme/split-math-GGUF.*404"):
        hub.download(REPO, FIRST)
    assert fake_hub.requests_for("GET") == []  # the sizes are asked first: nothing was downloaded
    assert hub.cached_file(REPO, FIRST) is None


def test_offline_with_a_part_missing_is_an_error(published: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    path = hub.download(REPO, FIRST)
    (path.parent / PARTS[1]).unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set .* not all the parts of the model"):
        hub.download(REPO, FIRST)


def test_removal_takes_every_part_and_counts_all_their_bytes(
    published: FakeHub, split_model: dict[str, bytes]
) -> None:
    path = hub.download(REPO, FIRST)
    repo_dir = path.parents[2]
    assert hub.remove_cached(REPO, FIRST) == sum(len(data) for data in split_model.values())
    assert not repo_dir.exists() and not os.path.lexists(path)
    assert hub.remove_cached(REPO, FIRST) == 0
