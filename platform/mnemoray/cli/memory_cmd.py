"""`mnemoray memory`: build LLM-written memory banks (and their trajectory logs) over datasets."""

from __future__ import annotations

from pathlib import Path

import typer

from mnemoray.cli.common import fail, flag_overrides, friendly_errors
from mnemoray.config import MemoryBuildConfig, load_config
from mnemoray.loaders.registry import DATASETS
from mnemoray.memory.registry import FRAMEWORKS

app = typer.Typer(help="Build memory with memory frameworks.", no_args_is_help=True)


@app.command("build")
@friendly_errors
def build(
    framework: str = typer.Option(None, help=FRAMEWORKS.help(built_by_llm=True)),
    dataset: str = typer.Option(None, help=DATASETS.help()),
    data: Path = typer.Option(None, help="a dataset file or a folder of files"),
    llm: Path = typer.Option(None, help="engine config of the memory model, e.g. configs/llm/tiny_local.yaml"),
    out: Path = typer.Option(None, help="output folder (banks/, trajectories.jsonl, summary.json)"),
    limit: int = typer.Option(None, help="build only the first N histories"),
    sessions: int = typer.Option(None, help="read only the first N sessions of each history"),
    config: Path = typer.Option(None, help="YAML config (configs/memory/*.yaml); options given here override it"),
    address: str = typer.Option(None, help="Ray cluster address (default: start local Ray)"),
    workers: int = typer.Option(None, help="actors building histories in parallel"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. memory.dualmem.chunk_turns=8"),
) -> None:
    """Build one memory bank per history with an LLM memory model; log every call."""
    # flags win over the config file, so they go in as overrides (applied after the file)
    extra = flag_overrides({"dataset": dataset, "data": data, "out": out, "llm": llm, "limit": limit,
                            "max_sessions": sessions, "memory.name": framework, "ray.address": address,
                            "ray.workers": workers}) + list(overrides or [])
    cfg = load_config(MemoryBuildConfig, config, extra)
    if not cfg.llm.exists():
        fail(f"{cfg.llm}: no such LLM engine config")
    from mnemoray.distributed.data.memory_build import run_memory_build

    try:
        summary = run_memory_build(cfg)
    except ValueError as err:
        fail(str(err))
    totals = summary["totals"]
    typer.echo(
        f"{summary['framework']}: {summary['histories']} histories, {totals.get('items', 0)} memory items, "
        f"{totals.get('calls', 0)} memory-model calls ({totals.get('failures', 0)} failed); outputs in {cfg.out}/"
    )
