"""`mnemoray train`: SFT and GRPO of memory models on Ray Train + DeepSpeed."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mnemoray.cli.common import fail, friendly_errors

app = typer.Typer(help="Train memory models (SFT and GRPO on Ray Train with DeepSpeed).", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Train memory models."""


@app.command("sft", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly_errors
def sft_cmd(
    ctx: typer.Context,
    config: Path = typer.Option(..., "--config", help="SFT config YAML (see configs/train/)"),
    out: Path | None = typer.Option(None, "--out", help="output folder (overrides `out`)"),
) -> None:
    """Train; metrics.jsonl, loss.png, data_stats.json and the HF export land in OUT/NAME.

    Extra arguments are key=value config overrides, e.g. schedule.max_steps=50.
    Rerunning with the same `name` resumes from its latest checkpoint.
    """
    from mnemoray.config import load_config
    from mnemoray.config.train import SFTConfig

    overrides = list(ctx.args) + ([f"out={out}"] if out is not None else [])
    cfg = load_config(SFTConfig, config, overrides)
    from mnemoray.distributed.train.sft import run_sft

    try:
        result = run_sft(cfg, log=lambda msg: typer.echo(msg, err=True))
    except ValueError as err:
        fail(str(err))
        return
    summary = {"run_dir": str(result.run_dir), "export": str(result.export_dir) if result.export_dir else None,
               "total_steps": result.total_steps, "final": result.metrics, "error": result.error}
    typer.echo(json.dumps(summary, indent=2))
    if result.error:
        raise typer.Exit(1)


@app.command("grpo", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly_errors
def grpo_cmd(
    ctx: typer.Context,
    config: Path = typer.Option(..., "--config", help="GRPO config YAML (see configs/train/grpo_local.yaml)"),
    out: Path | None = typer.Option(None, "--out", help="output folder (overrides `out`)"),
    steps: int | None = typer.Option(None, "--steps", min=1, help="rollout + update steps (schedule.steps)"),
    reward_fn: str | None = typer.Option(
        None, "--reward-fn", help="PATH.py:FUNCTION, a verl-style compute_score (sync or async) used as the reward"),
) -> None:
    """GRPO / ADRPO: rollouts, rewards from a pool of reward actors, DeepSpeed updates.

    metrics.jsonl (one line per step), report.md, curves.png and the HF export land in
    OUT/NAME. Extra arguments are key=value overrides, e.g. rollout.n=4. Rerunning with the
    same `name` resumes from its latest checkpoint.
    """
    from mnemoray.config import load_config
    from mnemoray.config.grpo import GRPOConfig

    overrides = list(ctx.args) + ([f"out={out}"] if out is not None else [])
    overrides += [f"schedule.steps={steps}"] if steps is not None else []
    overrides += [f"reward.reward={json.dumps(reward_fn)}"] if reward_fn is not None else []
    cfg = load_config(GRPOConfig, config, overrides)
    from mnemoray.distributed.train.grpo import run_grpo

    try:
        result = run_grpo(cfg, log=lambda msg: typer.echo(msg, err=True))
    except ValueError as err:
        fail(str(err))
        return
    summary = {"run_dir": str(result.run_dir), "export": str(result.export_dir) if result.export_dir else None,
               "prompts": result.prompts, "invalid_prompts": result.invalid_prompts, "final": result.metrics,
               "error": result.error}
    typer.echo(json.dumps(summary, indent=2))
    if result.error:
        raise typer.Exit(1)


@app.command("grpo-data")
@friendly_errors
def grpo_data_cmd(
    path: Path = typer.Option(..., "--from", help="the environment's source, e.g. a `memory build` output folder"),
    out: Path = typer.Option(..., "--out", help="file to write: .jsonl (the prompts environment) or .parquet (verl)"),
    environment: str = typer.Option("membuilder", "--environment", help="an RL environment (config registry)"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="skip malformed records instead of stopping"),
    qa_engine: Path | None = typer.Option(None, "--qa-engine", help="membuilder: engine config YAML that writes "
                                          "each session's synthetic QA once (cached) for the membuilder-qa reward"),
    qa_cache: Path | None = typer.Option(None, "--qa-cache", help="QA cache file (default: BUILD/qa_cache.jsonl)"),
    qa_per_session: int = typer.Option(5, "--qa-per-session", min=1, help="questions per session (50/30/20 mix)"),
    qa_setting: list[str] = typer.Option([], "--qa-setting", help="KEY=VALUE for the membuilder-qa reward "
                                         "(k, match, f1_threshold, ...), stored in each prompt's extra_info"),
) -> None:
    """Prompts for `train grpo` (environment.name=prompts) or verl, from an RL environment's source.

    With --qa-engine (membuilder), each session also gets its memory state before the session
    and synthetic questions generated once into the QA cache (a rerun reuses it, an
    interrupted one resumes), for the membuilder-qa reward. The file is rewritten whole and
    atomically (same input, same file), so a rerun is safe.
    """
    from collections import Counter

    from mnemoray.rl.environments import ENVIRONMENTS

    if out.suffix not in (".jsonl", ".parquet"):
        fail(f"{out}: write a .jsonl (prompts environment) or .parquet (verl RL data) file")
    summary: dict = {}
    if qa_engine is not None or environment == "membuilder-qa":
        if environment not in ("membuilder", "membuilder-qa"):
            fail(f"--qa-engine prepares the membuilder environment, not {environment!r}")
        from mnemoray.config.llm import load_engine_config
        from mnemoray.llm.registry import build_engine
        from mnemoray.rewards.dense_qa import DenseQASettings
        from mnemoray.rewards.qa_synth import QASynthSettings
        from mnemoray.rl.environments.membuilder_qa import prepare_membuilder_qa

        settings = {}
        for pair in qa_setting:
            key, sep, raw = pair.partition("=")
            if not sep:
                fail(f"--qa-setting {pair!r}: expected KEY=VALUE")
            try:
                settings[key] = json.loads(raw)
            except json.JSONDecodeError:
                settings[key] = raw
        try:
            DenseQASettings.from_info(settings)
        except (TypeError, ValueError) as err:
            fail(f"--qa-setting: {err}")
        engine = build_engine(load_engine_config(qa_engine, [])) if qa_engine is not None else None
        counts: Counter = Counter()
        try:
            prompts, errors, report = prepare_membuilder_qa(
                path, engine, qa_cache, QASynthSettings(per_session=qa_per_session), settings or None,
                skip_invalid=skip_invalid, counts=counts)
        finally:
            close = getattr(engine, "close", None)
            if callable(close):
                close()
        summary["qa"] = {"cached_sessions": report.cached, "generated_sessions": report.generated,
                         "engine_calls": report.calls, "failed_sessions": report.failed,
                         "dropped_prompts": counts["dropped_no_qa"]}
    else:
        prompts, errors = ENVIRONMENTS.load(ENVIRONMENTS.check(environment))(path, skip_invalid=skip_invalid)
    if not prompts:
        fail(f"{path}: no prompts from the {environment!r} environment")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".parquet":
        from mnemoray.rl.verl import export_verl_parquet

        if "qa" in summary:  # nested, differently shaped per agent: one JSON text column each
            from dataclasses import replace

            from mnemoray.rewards.dense_qa import JSON_KEYS

            prompts = [replace(p, extra_info={k: json.dumps(v, ensure_ascii=False) if k in JSON_KEYS else v
                                              for k, v in p.extra_info.items()}) for p in prompts]
        export_verl_parquet(prompts, tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            for p in prompts:
                f.write(json.dumps({"id": p.id, "prompt": list(p.messages), "data_source": p.data_source,
                                    "ground_truth": p.ground_truth, "extra_info": p.extra_info},
                                   ensure_ascii=False) + "\n")
    tmp.replace(out)
    typer.echo(json.dumps({"out": str(out), "prompts": len(prompts), "invalid": [str(e) for e in errors],
                           **summary}, indent=2))


@app.command("demo-data")
@friendly_errors
def demo_data_cmd(
    out: Path = typer.Option(..., "--out", help="JSONL file to write"),
    n: int = typer.Option(256, min=1, help="number of samples"),
    seed: int = typer.Option(0),
) -> None:
    """Write the copy-a-short-string task (learnable in a few steps) as messages JSONL."""
    from mnemoray.train.demo import write_copy_task

    typer.echo(str(write_copy_task(out, n, seed)))


@app.command("convert")
@friendly_errors
def convert_cmd(
    data: list[Path] = typer.Argument(..., help="trajectory / alpaca / sharegpt / messages files"),
    out: Path = typer.Option(..., "--out", help="folder for LLaMA-Factory's sharegpt JSON + dataset_info.json"),
    fmt: str = typer.Option("auto", "--format", help="auto, trajectory, alpaca, sharegpt or messages"),
    name: str = typer.Option("mnemoray_sft", help="dataset name in dataset_info.json"),
) -> None:
    """Export SFT samples for LLaMA-Factory; rejected records are counted with reasons."""
    from mnemoray.train.formats import (
        FORMATS,
        Rejects,
        export_llamafactory,
        read_samples,
    )

    if fmt != "auto" and fmt not in FORMATS:
        fail(f"unknown --format '{fmt}'; choose auto or one of {', '.join(FORMATS)}")
    rejects = Rejects()
    samples = [s["messages"] for path in data for s in read_samples(path, fmt, rejects)]
    path = export_llamafactory(samples, out, name)
    typer.echo(json.dumps({"written": str(path), "samples": len(samples), "rejected": rejects.as_dict()}, indent=2))
