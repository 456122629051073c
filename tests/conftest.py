"""Shared fixtures: an isolated user environment and tiny real GGUF models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.hub_server import FakeHub
from mathsolve.testkit import write_tiny_gguf

# Property tests keep no example database (hypothesis still caches some tables in .hypothesis/,
# which git ignores), and never fail on a slow example (the machines are shared; a deadline
# would make them flaky, not stricter).
hypothesis_settings.register_profile("mathsolve", database=None, deadline=None)
hypothesis_settings.load_profile("mathsolve")

SHARED = Path(__file__).resolve().parents[2] / "shared"
QWEN_CHATML = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


@pytest.fixture(autouse=True)
def isolated_user(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the developer's config, caches or Hugging Face cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    (home / "config.toml").write_text("")  # a named config file must exist
    monkeypatch.setenv("MATHSOLVE_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    import os

    # Every setting a developer may have exported (MATHSOLVE_MODEL, MATHSOLVE_GRADER, ...)
    # and the plugin switches; the config file named above stays.
    for name in [n for n in os.environ if n.startswith("MATHSOLVE_") and n != "MATHSOLVE_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    from mathsolve.plugins import reset_plugin_manager

    reset_plugin_manager()
    return home


@pytest.fixture(scope="session")
def tiny_bpe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen-like model: byte-level BPE with the ChatML control tokens."""
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-bpe.gguf", tokenizer="bpe", special_tokens=QWEN_CHATML)


@pytest.fixture(scope="session")
def tiny_spm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-2-like model: SentencePiece with byte fallback, BOS added."""
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-spm.gguf", tokenizer="spm")


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A started FakeHub, with HF_ENDPOINT pointing at it and HF_HUB_CACHE in tmp_path."""
    from huggingface_hub import constants

    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub read these when it was imported; pin them so no test leaves this machine:
    # a developer's HF_HUB_OFFLINE would block every request, and with telemetry on, the first
    # request of a process also GETs `<import-time endpoint>/api/agent-harnesses`.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    yield server
    server.stop()
