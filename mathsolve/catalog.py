"""The model catalog: released checkpoints and their GGUF conversions, read from data.

Each family is one TOML file under `models/` (shipped as `mathsolve.models`); plugins
add entries through the `register_models` hook. A reference is `NAME` or
`NAME:QUANT` (`tora-code-34b:Q4_K_M`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mathsolve.errors import UnknownModelError, UsageError


@dataclass(frozen=True)
class GGUFFile:
    """One quantisation's file. A model split across files (`NAME-00001-of-00003.gguf`) is
    named by its first part, the one llama.cpp is given; `parts` lists them all, and the
    sizes count them all."""

    quant: str
    file: str
    size: int | None = None  # exact bytes when known
    size_gb: float | None = None  # rounded figure from the Hub page otherwise
    verified: bool = True  # False: name inferred from the converter's convention

    @property
    def parts(self) -> list[str]:
        """Every file of the model, in order: `[file]`, or each part of a split model."""
        from mathsolve.hub.parts import split_parts  # the naming rule lives with the downloads

        return split_parts(self.file)

    @property
    def approx_bytes(self) -> int | None:
        if self.size is not None:
            return self.size
        return int(self.size_gb * 1e9) if self.size_gb is not None else None


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str
    checkpoint: str
    protocol: str
    context: int
    license: str = ""
    params: str = ""
    base: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    scores_note: str = ""
    repo: str | None = None
    default_quant: str | None = None
    files: dict[str, GGUFFile] = field(default_factory=dict)
    notes: str = ""
    source: str = ""
    released: bool = True  # False: the paper reports it, but no weights were published
    convert_notes: str = ""  # extra steps for `models show` when the checkpoint must be converted

    @property
    def has_gguf(self) -> bool:
        return bool(self.repo and self.files)

    def file_for(self, quant: str | None) -> GGUFFile:
        """The GGUF file for `quant` (the card's default when None)."""
        if not self.released:
            raise UnknownModelError(
                f"{self.name} is not runnable: its authors published scores but no weights "
                f"(see `mathsolve models show {self.name}`)"
            )
        if not self.has_gguf:
            raise UnknownModelError(
                f"no GGUF conversion of {self.name} is known; convert {self.checkpoint} yourself "
                f"(see `mathsolve models show {self.name}`) and run it with --model PATH.gguf"
            )
        quant = quant or self.default_quant or next(iter(self.files))
        wanted = quant.upper()
        for q, f in self.files.items():
            if q.upper() == wanted:
                return f
        raise UnknownModelError(
            f"{self.name} has no quantisation {quant!r}; available: {', '.join(self.files)}"
        )


def parse_reference(ref: str) -> tuple[str, str | None]:
    """Split `NAME[:QUANT]`."""
    name, sep, quant = ref.partition(":")
    if not name or (sep and not quant):
        raise UsageError(f"bad model reference {ref!r}: expected NAME or NAME:QUANT")
    return name.strip().lower(), (quant.strip() or None) if sep else None


def cards_from_toml(data: dict[str, Any]) -> list[ModelCard]:
    """Build cards from one family file: family-level keys are defaults for its models."""
    defaults = {k: v for k, v in data.items() if k != "models"}
    cards = []
    for name, entry in data.get("models", {}).items():
        merged = {**defaults, **entry}
        files = {
            quant: GGUFFile(quant=quant, **spec) for quant, spec in merged.pop("files", {}).items()
        }
        cards.append(ModelCard(name=name.lower(), files=files, **merged))
    return cards


def builtin_cards() -> list[ModelCard]:
    cards: list[ModelCard] = []
    # Imported here: plugins import this module for ModelCard at every start-up.
    from importlib import resources

    from mathsolve.settings import toml_module

    tomllib = toml_module()

    root = resources.files("mathsolve.models")
    for item in sorted(root.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".toml"):
            cards.extend(cards_from_toml(tomllib.loads(item.read_text(encoding="utf-8"))))
    return cards


class Catalog:
    """All known cards by name; built-ins first, plugin entries may add more."""

    def __init__(self, cards: list[ModelCard]) -> None:
        self._cards: dict[str, ModelCard] = {}
        for card in cards:
            self.add(card)

    def add(self, card: ModelCard) -> None:
        self._cards[card.name] = card

    def __iter__(self):
        return iter(self._cards.values())

    def __len__(self) -> int:
        return len(self._cards)

    def families(self) -> list[str]:
        return sorted({card.family for card in self._cards.values()})

    def protocols(self) -> list[str]:
        return sorted({card.protocol for card in self._cards.values()})

    def get(self, name: str) -> ModelCard:
        key = name.lower()
        if key in self._cards:
            return self._cards[key]
        import difflib

        close = difflib.get_close_matches(key, list(self._cards), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `mathsolve models`"
        raise UnknownModelError(f"unknown model {name!r}{hint}")

    def resolve(self, ref: str) -> tuple[ModelCard, GGUFFile]:
        name, quant = parse_reference(ref)
        card = self.get(name)
        return card, card.file_for(quant)
