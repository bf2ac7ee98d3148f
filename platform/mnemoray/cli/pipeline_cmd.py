"""`mnemoray pipeline run`: the whole loop (synthesize, build memory, SFT, GRPO, export,
serve, evaluate, baselines) as one resumable job with one report."""

from __future__ import annotations

from pathlib import Path

import typer

from mnemoray.cli.common import fail, friendly_errors

app = typer.Typer(help="Run the whole loop as one job.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Run the whole loop as one job."""


@app.command("run")
@friendly_errors
def run_cmd(
    config: Path = typer.Option(..., help="pipeline config, e.g. configs/pipeline/local.yaml"),
    out: str = typer.Option(None, help="output path or URI (s3://, gs://, file://); overrides `out`"),
    from_stage: str = typer.Option(None, "--from", help="run this stage and every one after it again"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. grpo.reward=keyword-count"),
) -> None:
    """Run the loop; a rerun skips finished stages (a killed one resumes). Exit 1 if a stage failed."""
    from mnemoray.config import load_config
    from mnemoray.config.pipeline import PipelineConfig
    from mnemoray.distributed.pipeline import run_pipeline
    from mnemoray.outputs import OutputError
    from mnemoray.pipeline.graph import GraphError

    extra = list(overrides or []) + ([f"out={out}"] if out is not None else [])
    cfg = load_config(PipelineConfig, config, extra)
    try:
        result = run_pipeline(cfg, config_file=str(config), out_key="--out" if out is not None else "out",
                              from_stage=from_stage, log=lambda msg: typer.echo(msg, err=True))
    except (OutputError, GraphError) as err:
        fail(str(err))
        return
    for rec in result.records:
        typer.echo(f"{rec.name:>13}  {rec.status}{': ' + rec.reason if rec.reason else ''}"
                   f"{': ' + rec.error if rec.error else ''}")
    typer.echo(f"report: {result.out.rstrip('/')}/report.md")
    if result.failed:
        raise typer.Exit(1)
