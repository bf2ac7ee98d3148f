"""`mnemoray synth rolememo` from start to end: inputs, every LLM stage (stream or stage by
stage), histories, export, stats and report. Rerunning the same command resumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from mnemoray.config import ConfigError
from mnemoray.config.llm import EngineConfig, load_engine_config
from mnemoray.config.synth import RoleMemoConfig
from mnemoray.distributed.data.synth_stages import Progress, drain, run_stage
from mnemoray.distributed.data.synth_stream import run_stream
from mnemoray.distributed.runtime import ray_session
from mnemoray.llm.registry import engine_spec, resolve_model, with_resolved_model
from mnemoray.synth.personas import load_seed_personas
from mnemoray.synth.rows import AssembleHistories, of_personas
from mnemoray.synth.stages import STAGES, distractor_seeds
from mnemoray.synth.store import StageStore

HISTORIES = "histories"


def run_histories(cfg: RoleMemoConfig, personas: frozenset[str], progress: Progress | None = None) -> dict[str, Any]:
    store, source = StageStore(cfg.out, HISTORIES), StageStore(cfg.out, "safety_check")
    started = time.perf_counter()
    removed = store.clean_orphans()
    done = store.done_ids()
    have = set(source.read("kept", ["persona_id"]).column(0).to_pylist())
    pending = sorted(p for p in have if p in personas and p not in done)
    info = {"stage": HISTORIES, "pending": len(pending), "orphans_removed": removed, "finished": 0}
    if not pending:
        return info
    pool = [(r["id"], int(r["tokens"])) for r in StageStore(cfg.out, "distractors").iter_records()]
    persona_files = StageStore(cfg.out, "personas").files("kept")
    ds = ray.data.read_parquet([str(f) for f in source.files("kept")])
    ds = ds.map_batches(of_personas, batch_format="pyarrow", fn_kwargs={"keep": pending})
    ds = ds.groupby("persona_id").map_groups(
        AssembleHistories, batch_format="pyarrow",
        fn_constructor_kwargs={"cfg_json": cfg.model_dump_json(), "pool": pool, "personas_path": str(persona_files[0])},
        compute=ray.data.ActorPoolStrategy(min_size=cfg.ray.min_workers, max_size=max(1, cfg.ray.workers)))
    info["finished"] = drain(ds, store, cfg, len(pending), progress)
    info["wall_s"] = round(time.perf_counter() - started, 3)
    store.log_run(info)
    return info


# -- the whole job -----------------------------------------------------------------------------

def _written_here(input_id: str, persona_id: str) -> dict[str, Any]:
    """The done row of an input the driver wrote itself (one record, no LLM call)."""
    return {"input_id": input_id, "persona_id": persona_id, "n_kept": 1, "n_rejected": 0, "calls": 0,
            "attempts": 0, "prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0}


def prepare_inputs(cfg: RoleMemoConfig) -> tuple[frozenset[str], list[dict[str, Any]]]:
    """(Re)write the personas and distractor-seed stages; returns persona ids and input errors."""
    personas, errors = load_seed_personas(cfg.personas, cfg.limit)
    if not personas:
        detail = f" ({len(errors)} invalid, first: {errors[0].message()})" if errors else ""
        raise ValueError(f"{cfg.personas}: no valid personas{detail}")
    kept = [{"id": p.id, "persona_id": p.id, "record": json.dumps({**p.model_dump(), "persona_id": p.id})}
            for p in personas]
    rejects = [{"id": f"{e.file}:{e.record}", "persona_id": "", "stage": "personas", "input_id": f"{e.record}",
                "reason": "invalid_persona", "detail": e.message(), "raw": ""} for e in errors]
    done = [_written_here(p.id, p.id) for p in personas]
    StageStore(cfg.out, "personas").replace_all(kept, rejects, done)
    seeds = distractor_seeds(cfg)
    StageStore(cfg.out, "distractor_seeds").replace_all(
        [{"id": s["id"], "persona_id": "", "record": json.dumps(s)} for s in seeds], [],
        [_written_here(s["id"], "") for s in seeds])
    return frozenset(p.id for p in personas), [e.to_dict() for e in errors]


def resolve(cfg: RoleMemoConfig) -> tuple[RoleMemoConfig, EngineConfig]:
    """The engine config, and `cfg` with its tokenizer resolved to a local folder."""
    if not Path(cfg.llm).is_file():
        raise ConfigError(f"{cfg.llm}: no such LLM engine config")
    engine = load_engine_config(cfg.llm, cfg.llm_overrides)
    tokenizer = cfg.tokenizer
    if tokenizer is None:
        if not engine_spec(engine).loads_weights and engine.tiny is None:
            raise ConfigError("key 'tokenizer': set a local tokenizer folder to count tokens for an openai engine "
                              f"(served model '{engine.model}' cannot be loaded here)")
        tokenizer = resolve_model(engine)
    engine = with_resolved_model(engine)
    return cfg.model_copy(update={"tokenizer": str(tokenizer)}), engine


def run_rolememo(cfg: RoleMemoConfig, progress: Progress | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) every stage, then export the dataset and write stats.json / report.md."""
    from mnemoray.synth.export import export_dataset
    from mnemoray.synth.report import write_report

    say = log or (lambda _: None)
    cfg, engine = resolve(cfg)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "config.json").write_text(cfg.model_dump_json(indent=2), encoding="utf-8")
    personas, errors = prepare_inputs(cfg)
    say(f"{len(personas)} personas ({len(errors)} invalid records listed in the report)")
    runs = []
    started = time.perf_counter()
    with ray_session(cfg.ray):
        if cfg.ray.mode == "stream":
            for info in run_stream(cfg, engine, personas, progress):
                runs.append(info)
                say(f"{info['stage']}: {info['finished']} inputs done")
        else:
            for stage in STAGES:
                info = run_stage(stage, cfg, engine, personas, progress)
                runs.append(info)
                say(f"{stage.name}: {info['finished']} of {info['pending']} pending inputs done")
        info = run_histories(cfg, personas, progress)
        runs.append(info)
        say(f"{HISTORIES}: {info['finished']} of {info['pending']} pending personas assembled")
    dataset = export_dataset(cfg, personas)
    with open(Path(cfg.out) / "runs.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "mode": cfg.ray.mode,
                            "wall_s": round(time.perf_counter() - started, 3)}) + "\n")
    stats = write_report(cfg, personas, errors, dataset)
    stats["this_run"] = runs
    return stats
