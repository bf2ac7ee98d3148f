"""`mnemoray data`: check and summarise dataset files before a long job."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mnemoray.cli.common import fail, friendly_errors
from mnemoray.loaders import DATASETS, load_dataset

app = typer.Typer(help="Inspect and validate datasets.", no_args_is_help=True)


@app.command("validate")
@friendly_errors
def validate(
    dataset: str = typer.Option(..., help=DATASETS.help()),
    data: Path = typer.Option(..., help="a dataset file or a folder of files"),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="list invalid records instead of stopping at the first"
    ),
) -> None:
    """Load every record; print counts, or the first error (exit 2)."""
    if dataset not in DATASETS:
        fail(f"unknown dataset '{dataset}'; choose one of {DATASETS.names()}")
    samples, errors = load_dataset(dataset, data, skip_invalid)
    table = Table("history", "sessions", "turns", "queries")
    for entry in samples:
        h = entry.history
        table.add_row(h.id, str(len(h.sessions)), str(sum(len(s.turns) for s in h.sessions)), str(len(entry.queries)))
    console = Console()
    console.print(table)
    for err in errors:
        console.print(f"[yellow]skipped[/yellow] {err}")
    if errors:
        raise typer.Exit(1)
