"""`mnemoray model`: local model checkpoints (the tiny offline model for now)."""

from __future__ import annotations

from pathlib import Path

import typer

from mnemoray.cli.common import fail, friendly_errors

app = typer.Typer(help="Build local model checkpoints.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Build local model checkpoints."""


@app.command("init-tiny")
@friendly_errors
def init_tiny_cmd(
    out: Path = typer.Option(..., help="folder to write the checkpoint to"),
    arch: str = typer.Option("qwen2", help="qwen2 or llama"),
    seed: int = typer.Option(0, help="same seed -> identical files"),
) -> None:
    """Write a tiny random causal LM + byte-level BPE tokenizer (no download)."""
    if arch not in ("qwen2", "llama"):
        fail(f"unknown --arch '{arch}'; choose qwen2 or llama")
    from mnemoray.llm.tiny import init_tiny

    path = init_tiny(out, arch=arch, seed=seed)  # type: ignore[arg-type]
    typer.echo(str(path))
