"""`mnemoray synth`: synthesize persona memory datasets on Ray Data."""

from __future__ import annotations

from pathlib import Path

import typer

from mnemoray.cli.common import fail, flag_overrides, friendly_errors
from mnemoray.config import load_config
from mnemoray.config.synth import RoleMemoConfig

app = typer.Typer(help="Synthesize memory datasets.", no_args_is_help=True)


def progress_printer():
    """A rich progress bar with one task per stage."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int | None) -> None:  # total None: not known yet (stream mode)
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done)

    return bar, update


@app.command("rolememo")
@friendly_errors
def rolememo(
    config: Path = typer.Option(..., help="YAML config, e.g. configs/synth/rolememo_local.yaml"),
    personas: Path = typer.Option(None, help="seed personas: MSC pairs JSON, or JSON/JSONL with description/facts"),
    out: Path = typer.Option(None, help="output folder (stages/, dataset/, stats.json, report.md)"),
    limit: int = typer.Option(None, help="use the first N valid personas"),
    target_tokens: int = typer.Option(None, help="history length in tokens of the configured tokenizer"),
    address: str = typer.Option(None, help="Ray cluster address (default: start local Ray)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. dialogue.rounds=12"),
) -> None:
    """Persona -> insights -> fact/query pairs -> dialogues -> histories, each with its checks.

    Rerunning with the same --out resumes: finished work is skipped, nothing is duplicated.
    """
    extra = flag_overrides({"personas": personas, "out": out, "limit": limit, "target_tokens": target_tokens,
                            "ray.address": address}) + list(overrides or [])
    cfg = load_config(RoleMemoConfig, config, extra)
    from mnemoray.distributed.data.synth_rolememo import run_rolememo

    bar, update = progress_printer()
    try:
        with bar:
            stats = run_rolememo(cfg, progress=update, log=bar.console.print)
    except ValueError as err:
        fail(str(err))
    h = stats["histories"]
    typer.echo(f"{h['count']} histories ({h['queries']} queries, median {h['median']:,} tokens); "
               f"{stats['totals']['llm_calls']} LLM calls; dataset in {cfg.out}/dataset, report in {cfg.out}/report.md")


@app.command("realmem")
@friendly_errors
def realmem(
    config: Path = typer.Option(..., help="YAML config, e.g. configs/synth/realmem_local.yaml"),
    personas: Path = typer.Option(None, help="RealMem's all_persona_topic/ folder, or persona JSON/JSONL records"),
    projects: int = typer.Option(None, help="projects (goals) per persona"),
    max_turns: int = typer.Option(None, help="most turns of a session (user + assistant)"),
    target_tokens: int = typer.Option(None, help="history length in tokens of the configured tokenizer"),
    limit: int = typer.Option(None, help="use the first N valid personas"),
    out: Path = typer.Option(None, help="output folder (stages/, dataset/, stats.json, report.md)"),
    address: str = typer.Option(None, help="Ray cluster address (default: start local Ray)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. dialogue.min_turns=8"),
) -> None:
    """Project outlines -> events -> session plans -> user / assistant / evaluator / memory-manager
    dialogues under time control -> histories in RealMem's format, many personas at once.

    Rerunning with the same --out resumes: finished work is skipped, nothing is duplicated.
    """
    from mnemoray.config.synth import RealMemSynthConfig

    extra = flag_overrides({"personas": personas, "plan.projects": projects, "dialogue.max_turns": max_turns,
                            "target_tokens": target_tokens, "limit": limit, "out": out,
                            "ray.address": address}) + list(overrides or [])
    cfg = load_config(RealMemSynthConfig, config, extra)
    from mnemoray.distributed.data.synth_realmem import run_realmem

    bar, update = progress_printer()
    try:
        with bar:
            stats = run_realmem(cfg, progress=update, log=bar.console.print)
    except ValueError as err:
        fail(str(err))
    h, s = stats["histories"], stats["sessions"]
    typer.echo(f"{h['count']} histories, {h['sessions']} sessions ({s['queries']} query turns, median "
               f"{h['median']:,} tokens); {stats['totals']['llm_calls']} LLM calls; "
               f"files in {cfg.out}/dataset, report in {cfg.out}/report.md")
    from mnemoray.synth.realmem.report import notes

    for note in notes(stats):
        typer.echo(f"note: {note}")
