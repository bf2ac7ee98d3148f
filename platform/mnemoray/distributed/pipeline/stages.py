"""The loop's stages, each a thin call of the function behind its own command (synth
rolememo, memory build, train sft / grpo, serve memory, eval retrieval --service, eval
suite), wired so each reads what the one before wrote. The typed config of every stage
is built (and validated) before anything runs (docs/ARCHITECTURE.md, "The pipeline").
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mnemoray.config import RetrievalEvalConfig, RetrievalSuiteConfig, load_config
from mnemoray.config.grpo import GRPOConfig
from mnemoray.config.memory import MemoryBuildConfig
from mnemoray.config.pipeline import PipelineConfig
from mnemoray.config.service import MemoryServiceConfig
from mnemoray.config.synth import RoleMemoConfig
from mnemoray.config.train import SFTConfig
from mnemoray.pipeline.graph import Stage, StageContext, StageGraph, StageResult, temporary_env

SFT_RUN, GRPO_RUN = "sft", "grpo"  # run names inside the stage folders (a rerun resumes them)
TENANT_CHECK = "pipeline-check"


@dataclass
class StageConfigs:
    """Every stage's own typed config, wired to the work root (the service's port and URL
    are chosen when it starts)."""

    synth: RoleMemoConfig
    memory: MemoryBuildConfig
    sft: SFTConfig
    grpo: GRPOConfig
    serve: MemoryServiceConfig
    eval_service: RetrievalEvalConfig
    baselines: RetrievalSuiteConfig


def _q(path: Path) -> str:
    return json.dumps(str(path))


def stage_configs(cfg: PipelineConfig, root: Path) -> StageConfigs:
    """The stage configs: each stage's file, its overrides, then the wiring (which always wins)."""
    root = root.expanduser().resolve()
    synth_out, memory_out = root / "synth", root / "memory"
    sft_export = root / "sft" / SFT_RUN / "hf"
    trajectories = memory_out / "build" / "trajectories.jsonl"
    cache = json.dumps([f"cache_dir={synth_out / 'llm_cache'}"])  # replies cached: a resumed run re-asks nothing
    synth = load_config(RoleMemoConfig, cfg.synth.config, [
        *cfg.synth.overrides, f"out={_q(synth_out / 'run')}", f"llm_overrides={cache}"])
    memory = load_config(MemoryBuildConfig, cfg.memory.config, [
        *cfg.memory.overrides, "dataset=rolememo", f"data={_q(synth_out / 'run')}", f"out={_q(memory_out / 'build')}"])
    sft = load_config(SFTConfig, cfg.sft.config, [
        *cfg.sft.overrides, f"name={SFT_RUN}", f"out={_q(root / 'sft')}", "storage_path=null",
        f"data.train={json.dumps([{'path': str(trajectories), 'format': 'trajectory'}])}",
        "data.eval=[]"])
    grpo = load_config(GRPOConfig, cfg.grpo.config, [
        *cfg.grpo.overrides, f"name={GRPO_RUN}", f"out={_q(root / 'grpo')}", "storage_path=null",
        f"model.path={_q(sft_export)}", "model.tiny=null",
        f"environment.name={cfg.grpo.environment}", f"environment.path={_q(memory_out / 'build')}",
        f"reward.reward={json.dumps(cfg.grpo.reward)}"])
    if getattr(grpo.environment, "trajectories", None) is not None:  # multi-step: the policy reads the histories
        grpo = grpo.model_copy(update={"environment": grpo.environment.model_copy(
            update={"path": synth_out / "run"})})
    serve = load_config(MemoryServiceConfig, cfg.serve.config, [
        *cfg.serve.overrides, f"data_dir={_q(root / 'serve' / 'data')}",
        f"admin_key_file={_q(root / 'serve' / 'admin.key')}"])
    # the served model does the teacher's job: its tenants call it with the teacher's call settings
    teacher = memory.memory
    same = {"llm_call": teacher.llm_call} | ({teacher.name: getattr(teacher, teacher.name)}
                                            if hasattr(teacher, teacher.name) else {})
    serve = serve.model_copy(update={"memory": serve.memory.model_copy(update=same)})
    eval_service = load_config(RetrievalEvalConfig, cfg.eval_service.config, [
        *cfg.eval_service.overrides, "dataset=rolememo", f"data={_q(synth_out / 'run')}",
        f"memory.name={cfg.eval_service.memory}", f"out={_q(root / 'eval_service' / 'run')}",
        f"limit={json.dumps(cfg.eval_service.limit)}", "service=http://127.0.0.1:1"])
    baselines = load_config(RetrievalSuiteConfig, cfg.baselines.config, [
        *cfg.baselines.overrides, f"out={_q(root / 'baselines' / 'run')}"])
    return StageConfigs(synth, memory, sft, grpo, serve, eval_service, baselines)


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json")


def _rel(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder))


def _links(folder: Path, candidates: list[Path]) -> dict[str, str]:
    return {p.name: _rel(p, folder) for p in candidates if p.exists()}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the stages -------------------------------------------------------------------------------------------


def run_synth(cfg: RoleMemoConfig, ctx: StageContext) -> StageResult:
    from mnemoray.distributed.data.synth_rolememo import run_rolememo

    stats = run_rolememo(cfg, log=ctx.log)
    h, totals = stats["histories"], stats["totals"]
    personas = stats.get("personas") or {}
    return StageResult(
        records_in=personas.get("valid"), records_out=h["count"],
        figure=f"{h['count']} histories, {h['queries']} queries, median {h['median']:,} tokens; "
               f"{totals['llm_calls']} LLM calls",
        links=_links(ctx.out, [cfg.out / "report.md", cfg.out / "history_lengths.png", cfg.out / "dataset"]),
        values={"histories": h["count"], "queries": h["queries"]})


def run_memory(cfg: MemoryBuildConfig, ctx: StageContext) -> StageResult:
    from mnemoray.distributed.data.memory_build import run_memory_build

    if not ctx.inputs["synth"].values.get("histories"):
        raise ValueError("synthesis kept no histories: nothing to build memory from")
    summary = run_memory_build(cfg)
    totals = summary["totals"]
    log = cfg.out / "trajectories.jsonl"
    calls = _read_jsonl(log)
    ok = sum(1 for c in calls if c.get("error") is None)
    return StageResult(
        records_in=summary["histories"], records_out=len(calls),
        figure=f"{summary['framework']}: {totals.get('items', 0)} memory items, {totals.get('calls', 0)} teacher calls "
               f"({totals.get('failures', 0)} failed); {ok} logged calls usable",
        links=_links(ctx.out, [log, cfg.out / "summary.json", cfg.out / "banks"]),
        values={"trajectories": str(log), "usable_calls": ok})


def run_sft_stage(cfg: SFTConfig, ctx: StageContext) -> StageResult:
    from mnemoray.distributed.train.sft import run_sft

    if not ctx.inputs["memory"].values.get("usable_calls"):
        raise ValueError("the teacher's trajectory log has no successful call to train on")
    result = run_sft(cfg, log=ctx.log)
    if result.error:
        raise RuntimeError(f"SFT failed: {result.error}")
    if result.export_dir is None:
        raise RuntimeError("SFT finished without an HF export")
    records = _read_jsonl(result.run_dir / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    figure = f"{result.total_steps} steps; train loss {_first_last(losses)}"
    if evals:
        figure += f"; eval loss {_first_last(evals)}"
    return StageResult(
        records_in=_data_count(result.run_dir), records_out=1,
        figure=figure,
        links=_links(ctx.out, [result.run_dir / "loss.png", result.run_dir / "metrics.jsonl",
                               result.run_dir / "data_stats.json", result.export_dir]),
        values={"export": str(result.export_dir)})


def _data_count(run_dir: Path) -> int | None:
    try:
        stats = json.loads((run_dir / "data_stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    samples = stats.get("samples") or {}
    return sum(v for v in samples.values() if isinstance(v, int)) if isinstance(samples, dict) else None


def _first_last(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{values[0]:.3f} -> {values[-1]:.3f}"


def run_grpo_stage(cfg: GRPOConfig, ctx: StageContext) -> StageResult:
    from mnemoray.distributed.train.grpo import run_grpo

    result = run_grpo(cfg, log=ctx.log)
    if result.error:
        raise RuntimeError(f"GRPO failed: {result.error}")
    if result.export_dir is None:
        raise RuntimeError("GRPO finished without an HF export")
    records = _read_jsonl(result.run_dir / "metrics.jsonl")
    rewards = [r["reward_mean"] for r in records if r.get("reward_mean") is not None]
    return StageResult(
        records_in=result.prompts, records_out=len(records),
        figure=f"{cfg.environment.name} prompts, {cfg.reward.reward} reward; {len(records)} steps, "
               f"reward mean {_first_last(rewards)}",
        links=_links(ctx.out, [result.run_dir / "report.md", result.run_dir / "curves.png",
                               result.run_dir / "metrics.jsonl", result.export_dir]),
        values={"export": str(result.export_dir)})


def run_export(ctx: StageContext, sft_export: Path) -> StageResult:
    """The GRPO model as the deployable artifact: copied, loaded back, asked for a few
    tokens, and compared with the SFT model it started from."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(ctx.inputs["grpo"].values["export"])
    target = ctx.out / "model"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, torch_dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    ids = tokenizer("Remember: I moved to Lisbon in May.", return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**ids, max_new_tokens=8, do_sample=False)
    new_tokens = int(generated.shape[1] - ids["input_ids"].shape[1])
    trained, start = _weights(target, load_file), _weights(sft_export, load_file)
    shared = sorted(set(trained) & set(start))
    delta = max((float((trained[k] - start[k]).abs().max()) for k in shared), default=float("nan"))
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(target.iterdir()) if p.is_file()}
    manifest = {"source": str(source), "started_from": str(sft_export), "parameters": params,
                "max_abs_weight_change_vs_sft": delta, "greedy_new_tokens": new_tokens, "files": files}
    (ctx.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    size = sum(f["bytes"] for f in files.values()) / 2**20
    return StageResult(
        records_in=1, records_out=1,
        figure=f"{params:,} parameters, {size:.1f} MiB; loads and generates; max |weight change| vs SFT {delta:.2e}",
        links=_links(ctx.out, [target, ctx.out / "manifest.json"]), values={"model": str(target)})


def _weights(folder: Path, load_file: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_serve(cfg: MemoryServiceConfig, port: int | None, ctx: StageContext) -> StageResult:
    """Deploy the exported model as the service's memory model and check that it answers;
    the service stays up (ctx.stack closes it) for the stages that evaluate through it."""

    from mnemoray.client import MemoryClient
    from mnemoray.distributed.serve.memory_app import run_memory_app, stop_memory_app
    from mnemoray.ports import free_port
    from mnemoray.service.remote import create_tenant

    model = Path(ctx.inputs["export"].values["model"])
    key_file = Path(cfg.admin_key_file)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    cfg = cfg.model_copy(update={"port": port or free_port(),
                                 "llm_overrides": [*cfg.llm_overrides, f"model={model}", "tiny=null"]})
    start = time.perf_counter()
    url, started_serve = run_memory_app(cfg, name="pipeline-memory")
    ctx.stack.callback(stop_memory_app, "pipeline-memory", started_serve)
    deploy_s = time.perf_counter() - start
    admin_key = key_file.read_text().strip()
    client = MemoryClient(url, create_tenant(url, admin_key, TENANT_CHECK))
    start = time.perf_counter()
    reply = client.chat([{"role": "user", "content": "What do you remember about me?"}], model=cfg.model_id,
                        max_tokens=16)
    chat_s = time.perf_counter() - start
    answered_by = reply.get("model")
    text = ((reply.get("choices") or [{}])[0].get("message") or {}).get("content")
    if answered_by != cfg.model_id or text is None:
        raise RuntimeError(f"the service's chat did not answer as {cfg.model_id!r}: {json.dumps(reply)[:300]}")
    (ctx.out / "check.json").write_text(json.dumps({"url": url, "model": str(model), "reply": reply}, indent=2) + "\n",
                                        encoding="utf-8")
    return StageResult(
        records_in=1, records_out=1,
        figure=f"memory model = the exported model; deployed in {deploy_s:.0f} s, chat answered in {chat_s:.1f} s",
        links=_links(ctx.out, [ctx.out / "check.json"]),
        values={"url": url, "admin_key_file": str(key_file)})


def run_eval_service(cfg: RetrievalEvalConfig, ctx: StageContext) -> StageResult:
    from mnemoray.distributed.data.retrieval_eval import run_retrieval_eval
    from mnemoray.service.tenants import ADMIN_KEY_ENV

    served = ctx.inputs["serve"].values
    admin_key = Path(served["admin_key_file"]).read_text().strip()
    cfg = cfg.model_copy(update={"service": served["url"]})
    with temporary_env({ADMIN_KEY_ENV: admin_key}):  # the evaluation reads the admin key from there
        summary = run_retrieval_eval(cfg)
    metrics = summary.get("metrics") or {}
    k = max(cfg.ks)
    shown = ", ".join(f"{name} {metrics[name]:.3f}" for name in (f"recall_any@{k}", f"ndcg@{k}")
                      if isinstance(metrics.get(name), int | float))
    return StageResult(
        records_in=summary.get("n_histories") or summary.get("histories"), records_out=summary.get("n_queries"),
        figure=f"{cfg.memory.name} through the service, {summary.get('n_queries')} queries on "
               f"{summary.get('n_histories')} histories: {shown or 'no metrics'}",
        links=_links(ctx.out, [cfg.out / "report.md", cfg.out / "metrics.json", cfg.out / "recall_at_k.png"]),
        values={"metrics": metrics})


def run_baselines(cfg: RetrievalSuiteConfig, ctx: StageContext) -> StageResult:
    from mnemoray.distributed.data.retrieval_suite import run_suite
    from mnemoray.eval.compare import wide_console

    dirs = run_suite(cfg, wide_console())
    queries, best = 0, []
    for d in dirs:
        metrics = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        queries += int(metrics.get("n_queries") or 0)
        value = (metrics.get("metrics") or {}).get("recall_all@10")
        if isinstance(value, int | float):
            best.append((value, f"{d.parent.name}/{d.name}"))
    top = [f"{name} {value:.3f}" for value, name in sorted(best, reverse=True)[:2]]
    return StageResult(
        records_in=len(cfg.runs), records_out=queries,
        figure=f"{len(dirs)} runs; best recall_all@10: {', '.join(top) or 'n/a'}",
        links=_links(ctx.out, [cfg.out / "comparison.md"])
        | {f"{d.parent.name}/{d.name}": _rel(d / "report.md", ctx.out) for d in dirs if (d / "report.md").exists()},
        values={"comparison": str(cfg.out / "comparison.md"), "runs": [str(d) for d in dirs]})


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def build_graph(cfg: PipelineConfig, root: Path) -> StageGraph:
    """The loop as a stage graph over `root` (every stage config validated here)."""
    root = root.expanduser().resolve()
    c = stage_configs(cfg, root)
    sft_export = root / "sft" / SFT_RUN / "hf"
    serve_settings = {"service": _dump(c.serve), "port": cfg.serve.port}
    return StageGraph([
        Stage("synth", lambda ctx: run_synth(c.synth, ctx), (), _dump(c.synth),
              "synthesize a RoleMemo-style dataset (synth rolememo)"),
        Stage("memory", lambda ctx: run_memory(c.memory, ctx), ("synth",), _dump(c.memory),
              f"build memory with the teacher ({c.memory.memory.name}, trajectory log)"),
        Stage("sft", lambda ctx: run_sft_stage(c.sft, ctx), ("memory",), _dump(c.sft),
              "SFT on the teacher's trajectories (Ray Train + DeepSpeed)"),
        Stage("grpo", lambda ctx: run_grpo_stage(c.grpo, ctx), ("memory", "sft"), _dump(c.grpo),
              f"GRPO from the SFT model ({c.grpo.environment.name} environment)"),
        Stage("export", lambda ctx: run_export(ctx, sft_export), ("grpo",), {"format": "hf-safetensors"},
              "export the trained model (HF folder, loaded back)"),
        Stage("serve", lambda ctx: run_serve(c.serve, cfg.serve.port, ctx), ("export",), serve_settings,
              "deploy it as the memory service's memory model (Ray Serve)", live=True),
        Stage("eval_service", lambda ctx: run_eval_service(c.eval_service, ctx), ("synth", "serve"),
              _dump(c.eval_service), "evaluate through the service on the synthesized data"),
        Stage("baselines", lambda ctx: run_baselines(c.baselines, ctx), (), _dump(c.baselines),
              "LLM-free baselines on the shared LoCoMo / RealMem samples (eval suite)"),
    ])


__all__ = ["StageConfigs", "build_graph", "stage_configs"]
