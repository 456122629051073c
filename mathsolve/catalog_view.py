"""Presenting the catalog: `mathsolve models` and `mathsolve models show NAME`."""

from __future__ import annotations

from typing import Any

from mathsolve.catalog import ModelCard


def _size(nbytes: int | None) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes else "?"


def catalog_rows(*, family: str | None = None, protocol: str | None = None) -> list[dict[str, Any]]:
    """One row per catalog entry (default quantisation), with what is downloaded."""
    from mathsolve import hub, registry

    rows = []
    for card in registry.catalog():
        if family and card.family != family.lower():
            continue
        if protocol and card.protocol != protocol.lower():
            continue
        downloaded = []
        if card.has_gguf:
            for quant, f in card.files.items():
                if hub.cached_file(card.repo, f.file) is not None:
                    downloaded.append(quant)
        default = card.files.get(card.default_quant or "") if card.has_gguf else None
        rows.append(
            {
                "name": card.name,
                "family": card.family,
                "protocol": card.protocol,
                "params": card.params,
                "quant": default.quant if default else None,
                "size_bytes": default.approx_bytes if default else None,
                "verified": default.verified if default else None,
                "gsm8k": card.scores.get("gsm8k"),
                "math": card.scores.get("math"),
                "downloaded": downloaded,
                "gguf": card.has_gguf,
            }
        )
    return rows


def print_catalog(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(caption="* file name inferred, confirmed against the Hub before download; "
                  "`mathsolve models show NAME` for details")
    for column in ("model", "protocol", "params", "quant", "size", "GSM8K", "MATH", "downloaded"):
        table.add_column(
            column,
            justify="right" if column in ("size", "GSM8K", "MATH") else "left",
            no_wrap=column in ("model", "protocol", "quant", "size"),
        )
    for r in rows:
        quant = (r["quant"] or "no GGUF") + ("" if r["verified"] in (True, None) else "*")
        table.add_row(
            r["name"], r["protocol"], r["params"], quant,
            _size(r["size_bytes"]) if r["gguf"] else "-",
            f"{r['gsm8k']:.1f}" if r["gsm8k"] else "-", f"{r['math']:.1f}" if r["math"] else "-",
            ", ".join(r["downloaded"]) or "-",
        )
    Console().print(table)


def conversion_help(card: ModelCard) -> str:
    return (
        f"No GGUF conversion of {card.checkpoint} is known. Convert it yourself:\n"
        f"  huggingface-cli download {card.checkpoint} --local-dir {card.name}-hf\n"
        f"  python convert_hf_to_gguf.py {card.name}-hf --outfile {card.name}-f16.gguf --outtype f16\n"
        f"  llama-quantize {card.name}-f16.gguf {card.name}-Q4_K_M.gguf Q4_K_M   # optional\n"
        f"  mathsolve --model {card.name}-Q4_K_M.gguf --protocol {card.protocol} \"...\"\n"
        "convert_hf_to_gguf.py ships in the llama-cpp-python source distribution under vendor/llama.cpp/ "
        "(with its requirements file); llama-quantize is built from the same tree."
    )


def show_card(name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from mathsolve import hub, registry

    card = registry.catalog().get(name)
    console = Console()
    console.print(f"[bold]{card.name}[/bold]  ({card.family}, protocol {card.protocol})")
    console.print(f"checkpoint: {card.checkpoint}   base: {card.base or '?'}   params: {card.params or '?'}")
    console.print(f"context: {card.context}   licence: {card.license or '?'}")
    if card.scores:
        scores = ", ".join(f"{k.upper()} {v}" for k, v in card.scores.items())
        console.print(f"published: {scores}" + (f" ({card.scores_note})" if card.scores_note else ""))
    if card.notes:
        console.print(card.notes)
    if not card.has_gguf:
        console.print(conversion_help(card), markup=False, highlight=False)
        return
    table = Table(title=f"GGUF files in {card.repo}", title_justify="left")
    for column in ("quant", "file", "size", "name", "downloaded"):
        table.add_column(column)
    for quant, f in card.files.items():
        cached = hub.cached_file(card.repo, f.file)
        table.add_row(
            quant + (" (default)" if quant == card.default_quant else ""), f.file, _size(f.approx_bytes),
            "verified" if f.verified else "inferred", str(cached) if cached else "-",
        )
    console.print(table)
