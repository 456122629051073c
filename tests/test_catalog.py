"""The model catalog data (models/*.toml) and its views (`mathsolve models`, `models show`)."""

from __future__ import annotations

import json
import sys
from importlib import resources

import pytest
from typer.testing import CliRunner

from mathsolve import registry
from mathsolve.catalog import ModelCard, cards_from_toml
from mathsolve.cli.views.catalog import conversion_help
from mathsolve.cli import app
from mathsolve.errors import EXIT_UNKNOWN_MODEL, EXIT_USAGE, UnknownModelError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

runner = CliRunner()

# The protocols a catalog entry may name (some are implemented elsewhere, in parallel).
PROTOCOLS = {"tora", "mathcoder", "alpaca-cot", "numina", "qwen-tir", "qwen-cot", "deepseek-cot"}

TORA = {"tora-7b", "tora-13b", "tora-70b", "tora-code-7b", "tora-code-13b", "tora-code-34b"}
MUMATH = {
    "mumath-code-l-7b", "mumath-code-cl-7b", "mumath-code-l-13b", "mumath-code-cl-13b",
    "mumath-code-cl-34b", "mumath-code-l-70b", "mumath-code-cl-70b",
}
MATHCODER = {
    "mathcoder-l-7b", "mathcoder-cl-7b", "mathcoder-l-13b", "mathcoder-cl-13b",
    "mathcoder-l-70b", "mathcoder-cl-34b",
}
MATHGENIE = {"mathgenie-internlm2-20b", "mathgenie-mixtral-8x7b"}
DART = {
    f"dart-math-{base}-{variant}"
    for base in ("llama3-8b", "mistral-7b", "dsmath-7b", "llama3-70b")
    for variant in ("uniform", "prop2diff")
}
OTHERS = {"numinamath-7b-tir", "deepseek-math-7b-rl", "qwen2.5-math-1.5b", "qwen2.5-math-7b"}
ALL_NAMES = TORA | MUMATH | MATHCODER | MATHGENIE | DART | OTHERS

# Exactly the files shared/reference/checkpoints.md marks [I] (name inferred, not seen).
INFERRED = {
    "mumath-code-cl-7b:Q4_K_M",
    "mumath-code-l-7b:Q4_K_M", "mumath-code-l-7b:Q6_K", "mumath-code-l-7b:Q8_0",
}
# Checkpoints with no known GGUF conversion (released ones must be converted).
NO_GGUF = {
    "mathcoder-l-7b", "mathcoder-cl-13b", "mathcoder-l-70b",
    "mathgenie-internlm2-20b", "mathgenie-mixtral-8x7b",
    "dart-math-llama3-8b-uniform", "dart-math-mistral-7b-uniform", "dart-math-mistral-7b-prop2diff",
    "dart-math-dsmath-7b-uniform", "dart-math-llama3-70b-uniform", "dart-math-llama3-70b-prop2diff",
    "mumath-code-l-13b", "mumath-code-cl-13b", "mumath-code-cl-34b", "mumath-code-l-70b",
    "mumath-code-cl-70b",
}
UNPUBLISHED = {"mathcoder-cl-13b", "mathcoder-l-70b"}
# OpenMath-Nemotron (models/openmath-nemotron.toml): no file name of its conversions was seen on the Hub.
OPENMATH = {f"openmath-nemotron-{size}" for size in ("1.5b", "7b", "14b", "32b")}
PROTOCOLS |= {"openmath-tir", "openmath-cot"}
ALL_NAMES |= OPENMATH
INFERRED |= {f"openmath-nemotron-1.5b:{q}" for q in ("Q4_K_M", "Q6_K", "Q8_0")} | {
    "openmath-nemotron-7b:Q4_K_M", "openmath-nemotron-7b:Q5_K_M", "openmath-nemotron-7b:Q8_0",
    "openmath-nemotron-14b:Q4_K_M", "openmath-nemotron-14b:Q8_0",
    "openmath-nemotron-32b:Q4_K_M", "openmath-nemotron-32b:Q8_0",
}
# gpt-oss (models/gpt-oss.toml): ggml-org's file names were seen in users' code, not on a Hub page.
PROTOCOLS |= {"harmony"}
ALL_NAMES |= {"gpt-oss-20b", "gpt-oss-120b"}
INFERRED |= {"gpt-oss-20b:MXFP4", "gpt-oss-120b:MXFP4"}
# Qwen3 (models/qwen3.toml): file names and sizes from Hub listings.
PROTOCOLS |= {"qwen3-tir"}
ALL_NAMES |= {"qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3.5-4b"}


def builtin_files() -> list:
    root = resources.files("mathsolve.models")
    return sorted((p for p in root.iterdir() if p.name.endswith(".toml")), key=lambda p: p.name)


@pytest.fixture(scope="module")
def cards() -> dict[str, ModelCard]:
    cards: dict[str, ModelCard] = {}
    for item in builtin_files():
        for card in cards_from_toml(tomllib.loads(item.read_text(encoding="utf-8"))):
            assert card.name not in cards, f"{card.name} is defined twice"
            cards[card.name] = card
    return cards


def models_json(*args: str) -> list[dict]:
    r = runner.invoke(app, ["models", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


# -- the data ---------------------------------------------------------------------------------


def test_every_toml_parses_into_cards() -> None:
    files = builtin_files()
    assert {p.name for p in files} >= {"tora.toml", "mathcoder.toml", "dart-math.toml", "numinamath.toml"}
    for item in files:
        data = tomllib.loads(item.read_text(encoding="utf-8"))
        assert data.get("family") and data.get("models"), item.name
        assert cards_from_toml(data), item.name


def test_the_catalog_lists_every_checkpoint(cards: dict[str, ModelCard]) -> None:
    assert set(cards) == ALL_NAMES
    assert {card.name for card in registry.catalog()} >= ALL_NAMES


def test_every_card_is_complete(cards: dict[str, ModelCard]) -> None:
    for card in cards.values():
        assert card.protocol in PROTOCOLS, card.name
        assert card.context >= 2048, card.name
        assert card.license and card.params and card.base and card.checkpoint, card.name
        for key, value in card.scores.items():
            assert key in ("gsm8k", "math", "aime24", "aime25") and 0 < value < 100, card.name
        if card.scores:
            assert card.scores_note, f"{card.name}: scores without a note saying where from"
        if card.has_gguf:
            assert card.default_quant in card.files, card.name
            assert card.repo.count("/") == 1, card.name
        else:
            assert not card.files and not card.repo, card.name


def test_protocols_and_contexts_follow_the_reference_harnesses(cards: dict[str, ModelCard]) -> None:
    by_protocol = {name: cards[name].protocol for name in cards}
    assert {n for n, p in by_protocol.items() if p == "mathcoder"} == MATHCODER | MATHGENIE
    assert {n for n, p in by_protocol.items() if p == "alpaca-cot"} == DART
    assert {n for n, p in by_protocol.items() if p == "tora"} == TORA | MUMATH
    assert by_protocol["numinamath-7b-tir"] == "numina"
    assert by_protocol["deepseek-math-7b-rl"] == "deepseek-cot"
    assert all(cards[n].context == 2048 for n in MATHCODER)
    assert cards["dart-math-llama3-8b-prop2diff"].context == 8192
    assert cards["dart-math-dsmath-7b-uniform"].context == 4096
    assert cards["numinamath-7b-tir"].context == 4096 and cards["deepseek-math-7b-rl"].context == 4096


def test_inferred_file_names_are_flagged_exactly_where_the_reference_says(cards: dict[str, ModelCard]) -> None:
    inferred = {f"{c.name}:{q}" for c in cards.values() for q, f in c.files.items() if not f.verified}
    assert inferred == INFERRED
    # Spot checks against shared/reference/checkpoints.md.
    cl7 = cards["mumath-code-cl-7b"].files
    assert cl7["Q6_K"].verified and cl7["IQ3_M"].verified and not cl7["Q4_K_M"].verified
    assert cards["dart-math-llama3-8b-prop2diff"].files["Q4_K_M"].verified  # "[V name]"
    assert cards["mathcoder-cl-34b"].files["i1-Q4_K_M"].file == "MathCoder-CL-34B.i1-Q4_K_M.gguf"
    assert cards["tora-code-34b"].repo == "TheBloke/tora-code-34b-v1.0-GGUF"  # lower-case b
    assert cards["dart-math-dsmath-7b-prop2diff"].files["Q4_K_M"].size == 4_209_892_192


def test_two_candidate_repos_pick_the_one_with_more_verified_files(cards: dict[str, ModelCard]) -> None:
    numina = cards["numinamath-7b-tir"]
    assert numina.repo == "QuantFactory/NuminaMath-7B-TIR-GGUF" and set(numina.files) == {"Q4_K_M", "Q5_K_M", "Q8_0"}
    assert "bartowski/NuminaMath-7B-TIR-GGUF" in numina.notes
    dart = cards["dart-math-llama3-8b-prop2diff"]
    assert dart.repo == "RichardErkhov/hkust-nlp_-_dart-math-llama3-8b-prop2diff-gguf"
    assert "tensorblock/dart-math-llama3-8b-prop2diff-GGUF" in dart.notes


def test_entries_without_gguf(cards: dict[str, ModelCard]) -> None:
    assert {name for name, card in cards.items() if not card.has_gguf} == NO_GGUF
    assert {name for name, card in cards.items() if not card.released} == UNPUBLISHED
    with pytest.raises(UnknownModelError, match="models show mathcoder-l-7b"):
        cards["mathcoder-l-7b"].file_for(None)
    with pytest.raises(UnknownModelError, match="no weights"):
        cards["mathcoder-l-70b"].file_for(None)


def test_published_scores_spot_checks(cards: dict[str, ModelCard]) -> None:
    assert cards["mathcoder-cl-34b"].scores == {"gsm8k": 81.7, "math": 45.2}
    assert cards["mathcoder-l-70b"].scores == {"gsm8k": 83.9, "math": 45.1}
    assert cards["dart-math-llama3-70b-prop2diff"].scores == {"gsm8k": 89.6, "math": 56.1}
    assert cards["deepseek-math-7b-rl"].scores == {"gsm8k": 88.2, "math": 51.7}
    assert "chain of thought" in cards["deepseek-math-7b-rl"].scores_note
    assert cards["mathgenie-mixtral-8x7b"].scores == {}  # not in our sources: left out, not guessed


# -- the views, through the real CLI ---------------------------------------------------------


def test_models_family_filter() -> None:
    rows = models_json("--family", "dart-math")
    assert {row["name"] for row in rows} == DART
    assert {row["name"] for row in models_json("--family", "DART-Math")} == DART


def test_models_protocol_filter() -> None:
    rows = models_json("--protocol", "mathcoder")
    assert {row["name"] for row in rows} == MATHCODER | MATHGENIE
    assert {row["family"] for row in rows} == {"mathcoder", "mathgenie"}


@pytest.mark.parametrize("option", ["--family", "--protocol"])
def test_unknown_filter_value_is_a_usage_error(option: str) -> None:
    r = runner.invoke(app, ["models", option, "no-such-thing"])
    assert r.exit_code == EXIT_USAGE
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: unknown {option[2:]} 'no-such-thing'; known: ")
    assert r.stdout == ""


def test_models_table_fits_100_columns_and_marks_entries_without_gguf() -> None:
    r = runner.invoke(app, ["models"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 100
    row = {line.split()[0]: line.split() for line in lines if line.split()}
    assert row["mathcoder-l-7b"][1:] == ["mathcoder", "-", "convert", "64.2", "23.3", "-"]
    assert row["mathcoder-l-70b"][3] == "n/a"
    assert row["mumath-code-l-7b"][2] == "Q4_K_M*"  # inferred default file
    assert row["tora-code-34b"][3:7] == ["20.22", "GB", "80.7", "51.0"]


def test_models_show_explains_conversion_with_the_right_checkpoint() -> None:
    r = runner.invoke(app, ["models", "show", "mathcoder-l-7b"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "MathLLMs/MathCoder-L-7B" in out
    assert "vendor/llama.cpp/convert_hf_to_gguf.py" in out and "pip download llama-cpp-python" in out
    assert "snapshot_download('MathLLMs/MathCoder-L-7B'" in out
    assert "mathsolve --model mathcoder-l-7b-Q4_K_M.gguf --protocol mathcoder" in out


def test_models_show_internlm2_and_unpublished_entries() -> None:
    r = runner.invoke(app, ["models", "show", "mathgenie-internlm2-20b"])
    assert r.exit_code == 0, r.output
    assert "snapshot_download('MathGenie/MathGenie-InterLM-20B'" in r.stdout
    assert "InternLM2" in r.stdout and "--protocol mathcoder" in r.stdout
    r = runner.invoke(app, ["models", "show", "mathcoder-cl-13b"])
    assert r.exit_code == 0, r.output
    assert "no weights" in r.stdout and "convert_hf_to_gguf.py" not in r.stdout
    assert "mathcoder-cl-7b" in r.stdout  # points at the published siblings


def test_conversion_help_names_card_protocol_and_sizes(cards: dict[str, ModelCard]) -> None:
    text = conversion_help(cards["dart-math-llama3-70b-prop2diff"])
    assert "hkust-nlp/dart-math-llama3-70b-prop2diff" in text and "--protocol alpaca-cot" in text
    assert "about 140 GB as f16" in text
    assert "mistralai/Mistral-7B-v0.1" in conversion_help(cards["dart-math-mistral-7b-uniform"])


def test_running_an_unpublished_checkpoint_fails_cleanly() -> None:
    r = runner.invoke(app, ["--model", "mathcoder-cl-13b", "What is 2 + 3?"])
    assert r.exit_code == EXIT_UNKNOWN_MODEL, r.output
    assert "no weights" in r.stderr
