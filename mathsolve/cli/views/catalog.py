"""Presenting the catalog: `mathsolve models` and `mathsolve models show NAME`."""

from __future__ import annotations

import os
import re
from typing import Any

from mathsolve.catalog import Catalog, GGUFFile, ModelCard
from mathsolve.errors import UsageError
from mathsolve.sizes import format_size

# Size column of the table for entries without a file to download.
CONVERT = "convert"  # released weights, no GGUF conversion known
UNPUBLISHED = "n/a"  # scores published, weights never released


def _size(nbytes: int | None) -> str:
    return format_size(nbytes) if nbytes else "?"


def _check_filter(kind: str, value: str | None, known: list[str]) -> str | None:
    """`value` lower-cased, or a UsageError naming the known values."""
    if value is None:
        return None
    wanted = value.strip().lower()
    if wanted not in known:
        raise UsageError(f"unknown {kind} {value!r}; known: {', '.join(known)}")
    return wanted


def _known_protocols(catalog: Catalog) -> list[str]:
    """Protocols of catalog entries plus every registered protocol (which may have no entry)."""
    from mathsolve import registry

    return sorted(set(catalog.protocols()) | set(registry.protocols()))


def catalog_rows(*, family: str | None = None, protocol: str | None = None) -> list[dict[str, Any]]:
    """One row per catalog entry (default quantisation), with what is downloaded.

    An unknown `family` or `protocol` is a UsageError (exit 2) that lists the known values.
    """
    from mathsolve import registry

    catalog = registry.catalog()
    family = _check_filter("family", family, catalog.families())
    protocol = _check_filter("protocol", protocol, _known_protocols(catalog)) if protocol else None
    rows = []
    for card in catalog:
        if family and card.family != family:
            continue
        if protocol and card.protocol != protocol:
            continue
        downloaded, broken = _cache_state(card) if card.has_gguf else ([], [])
        default = card.files.get(card.default_quant or "") if card.has_gguf else None
        rows.append(
            {
                "name": card.name,
                "family": card.family,
                "protocol": card.protocol,
                "checkpoint": card.checkpoint,
                "params": card.params,
                "quant": default.quant if default else None,
                "size_bytes": default.approx_bytes if default else None,
                "verified": default.verified if default else None,
                "gsm8k": card.scores.get("gsm8k"),
                "math": card.scores.get("math"),
                "downloaded": downloaded,
                "broken": broken,
                "gguf": card.has_gguf,
                "released": card.released,
            }
        )
    return rows


def _cache_state(card: ModelCard) -> tuple[list[str], list[str]]:
    """(quantisations downloaded, quantisations whose cached file is not a usable GGUF).

    A broken file is not downloaded: a solve fetches it again, `mathsolve rm` deletes it.
    """
    from mathsolve import hub

    downloaded, broken = [], []
    if not card.repo or not hub.has_repo(card.repo):
        return downloaded, broken
    for quant, f in card.files.items():
        if hub.cached_file(card.repo, f.file) is not None:
            downloaded.append(quant)
        elif hub.broken_cached_file(card.repo, f.file) is not None:
            broken.append(quant)
    return downloaded, broken


def _downloaded_cell(row: dict[str, Any]) -> str:
    return ", ".join(row["downloaded"] + [f"{quant} (broken)" for quant in row["broken"]]) or "-"


def _size_cell(row: dict[str, Any]) -> str:
    if not row["released"]:
        return UNPUBLISHED
    if not row["gguf"]:
        return CONVERT
    return _size(row["size_bytes"])


def _score_cell(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def print_catalog(rows: list[dict[str, Any]]) -> None:
    """The catalog as a table that fits 100 columns (the size is in the name, so no params column)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        caption=(
            f"* file name inferred, confirmed on the Hub before download.  {CONVERT}: no GGUF known, "
            f"`mathsolve models show NAME` says how to make one.  {UNPUBLISHED}: no weights published.  "
            "GSM8K/MATH: published scores (setting in `models show`)."
        ),
        caption_justify="left",
    )
    # Narrower than 100 columns, only the protocol and downloaded columns give way (folded).
    for column in ("model", "protocol", "quant", "size", "GSM8K", "MATH", "downloaded"):
        folds = column in ("protocol", "downloaded")
        table.add_column(
            column,
            justify="right" if column in ("size", "GSM8K", "MATH") else "left",
            no_wrap=not folds,
            overflow="fold" if folds else "ellipsis",
        )
    for r in rows:
        quant = (r["quant"] or "-") + ("*" if r["verified"] is False else "")
        cells = (r["name"], r["protocol"], quant, _size_cell(r), _score_cell(r["gsm8k"]), _score_cell(r["math"]),
                 _downloaded_cell(r))
        table.add_row(*(Text(cell) for cell in cells))  # plugins' names are text, never markup
    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(width=100)  # piped: no terminal to fit, keep whole rows for grep & co.
    console.print(table if rows else "no catalog entry matches these filters")


def _converter_source() -> tuple[str, str]:
    """(pip requirement, unpacked folder) of the llama-cpp-python source distribution, pinned to
    the installed version so the converter matches the llama.cpp that will load its output."""
    try:
        from importlib.metadata import version

        installed = version("llama_cpp_python")
    except Exception:  # noqa: BLE001 - not installed as a distribution: any version does
        return "llama-cpp-python", "llama_cpp_python-*"
    return f"llama-cpp-python=={installed}", f"llama_cpp_python-{installed}"


def _approx_size_note(params: str) -> str:
    """Rough output sizes for a dense model of `params` ("7B", "1.5B"); empty when unknown."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)B", params.strip())
    if not match:
        return ""
    billions = float(match.group(1))
    return (
        f" (for {params}: about {2 * billions:.0f} GB as f16, {1.07 * billions:.0f} GB as Q8_0, "
        f"{0.6 * billions:.0f} GB as Q4_K_M)"
    )


def _unpublished_help(card: ModelCard, catalog: Catalog | None) -> str:
    siblings = [
        c.name for c in (catalog or []) if c.family == card.family and c.released and c is not card
    ]
    text = (
        f"{card.checkpoint}: its authors published scores for it but no weights, so there is "
        "nothing to download or convert."
    )
    if siblings:
        text += f"\nPublished checkpoints of this family: {', '.join(siblings)}."
    return text


def conversion_help(card: ModelCard, catalog: Catalog | None = None) -> str:
    """How to turn the card's Hugging Face checkpoint into a GGUF file and run it."""
    if not card.released:
        return _unpublished_help(card, catalog)
    requirement, src = _converter_source()
    hf_dir = f"{card.name}-hf"
    f16 = f"{card.name}-f16.gguf"
    q4 = f"{card.name}-Q4_K_M.gguf"
    lines = [
        f"No GGUF conversion of {card.checkpoint} is known. Convert it with llama.cpp's "
        "convert_hf_to_gguf.py, which ships inside the llama-cpp-python source distribution "
        "under vendor/llama.cpp/:",
        "  1. Get the converter and its requirements:",
        f"       pip download {requirement} --no-deps --no-binary :all:",
        f"       tar xzf {src}.tar.gz",
        f"       pip install -r {src}/vendor/llama.cpp/requirements/requirements-convert_hf_to_gguf.txt",
        "  2. Download the checkpoint:",
        "       python -c \"from huggingface_hub import snapshot_download; "
        f"snapshot_download('{card.checkpoint}', local_dir='{hf_dir}')\"",
        f"  3. Convert it{_approx_size_note(card.params)}:",
        f"       python {src}/vendor/llama.cpp/convert_hf_to_gguf.py {hf_dir} --outtype f16 --outfile {f16}",
        "  4. Quantise it with the installed llama-cpp-python (optional; or pass --outtype q8_0 in step 3):",
        "       python -c \"import ctypes, llama_cpp as l; p = l.llama_model_quantize_default_params(); "
        "p.ftype = l.LLAMA_FTYPE_MOSTLY_Q4_K_M; "
        f"raise SystemExit(l.llama_model_quantize(b'{f16}', b'{q4}', ctypes.byref(p)))\"",
        "  5. Run it:",
        f"       mathsolve --model {q4} --protocol {card.protocol} \"question\"",
    ]
    if card.convert_notes:
        lines.append("Notes for this checkpoint:")
        lines.extend(f"  - {line.strip()}" for line in card.convert_notes.strip().splitlines() if line.strip())
    return "\n".join(lines)


def _cached_cell(card: ModelCard, quant: str, f: GGUFFile) -> str:
    """Where the file is cached, or what to do about a cached copy that is not a usable GGUF."""
    from mathsolve import hub

    cached = hub.cached_file(card.repo, f.file)
    if cached is not None:
        return str(cached)
    if hub.broken_cached_file(card.repo, f.file) is not None:
        return f"broken: mathsolve rm {card.name}:{quant}"
    return "-"


def show_card(name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from mathsolve import registry

    catalog = registry.catalog()
    card = catalog.get(name)
    console = Console()
    console.print(f"[bold]{card.name}[/bold]  ({card.family}, protocol {card.protocol})", highlight=False)
    checkpoint = card.checkpoint + ("" if card.released else " (weights not published)")
    console.print(
        f"checkpoint: {checkpoint}   base: {card.base or '?'}   params: {card.params or '?'}",
        markup=False, highlight=False,
    )
    console.print(f"context: {card.context}   licence: {card.license or 'see model card'}", markup=False, highlight=False)
    if card.scores:
        scores = ", ".join(f"{k.upper()} {v}" for k, v in card.scores.items())
        console.print(
            f"published: {scores}" + (f" ({card.scores_note})" if card.scores_note else ""),
            markup=False, highlight=False,
        )
    if card.notes:
        console.print(card.notes, markup=False, highlight=False)
    if not card.has_gguf:
        console.print(conversion_help(card, catalog), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(title=f"GGUF files in {card.repo}", title_justify="left")
    for column in ("quant", "file", "size", "name", "downloaded"):
        table.add_column(column)
    for quant, f in card.files.items():
        table.add_row(
            quant + (" (default)" if quant == card.default_quant else ""), f.file, _size(f.approx_bytes),
            "verified" if f.verified else "inferred", _cached_cell(card, quant, f),
        )
    console.print(table)
