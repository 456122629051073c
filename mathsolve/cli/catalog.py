"""The model commands: `pull`, `rm`, `models` and `models show`."""

from __future__ import annotations

from typing import Optional

import typer

from mathsolve.cli import failures
from mathsolve.cli.program import app, models_app


@app.command()
@failures.reports_errors
def pull(ref: str = typer.Argument(..., help="Catalog NAME[:QUANT].")) -> None:
    """Download a catalog model into the Hugging Face cache (resumes interrupted downloads)."""
    from mathsolve.core.models import resolve_model
    from mathsolve.cli.views.batch import stderr_console
    from mathsolve.cli.views.progress import RichDownloadProgress

    resolved = resolve_model(ref, progress=RichDownloadProgress(stderr_console()))
    print(resolved.path)


@app.command()
@failures.reports_errors
def rm(ref: str = typer.Argument(..., help="Catalog NAME[:QUANT].")) -> None:
    """Delete a downloaded model file from the cache and say how much space it freed."""
    from mathsolve import hub, registry
    from mathsolve.sizes import format_size

    card, gguf = registry.catalog().resolve(ref)
    freed = hub.remove_cached(card.repo, gguf.file)
    if freed:
        print(f"removed {card.name}:{gguf.quant} ({gguf.file}), freed {format_size(freed)}")
    else:
        print(f"{card.name}:{gguf.quant} is not downloaded; nothing to remove")


@models_app.callback()
@failures.reports_errors
def models(
    ctx: typer.Context,
    family: Optional[str] = typer.Option(None, "--family", help="Only this family (tora, mumath-code, ...)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="Only models of this protocol."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable list."),
) -> None:
    """List the catalog: sizes, published scores, what is downloaded."""
    if ctx.invoked_subcommand is not None:
        return
    from mathsolve.cli.views import show_rows
    from mathsolve.cli.views.catalog import catalog_rows, print_catalog

    show_rows(catalog_rows(family=family, protocol=protocol), as_json=json_out, table=print_catalog)


@models_app.command("show")
@failures.reports_errors
def models_show(name: str = typer.Argument(..., help="Catalog NAME.")) -> None:
    """Everything about one catalog entry, including how to convert it when no GGUF exists."""
    from mathsolve.cli.views.catalog import show_card

    show_card(name)
