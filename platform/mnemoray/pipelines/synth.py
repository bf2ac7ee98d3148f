"""`mnemoray synth rolememo` on Ray Data: every stage of `mnemoray.synth.stages` over Parquet.

Per stage: read the source stage's kept parts, drop inputs already done (and personas not
in this run), build one request per input, answer them through `run_requests` (hf actor
pool, openai client actors, or ray.data.llm's vLLM processor), parse answers into kept
records and rejects, and stream the results back to the driver, which writes them as
parts of `stages/<name>/` (see `mnemoray.synth.store`). The driver holds only ids and
counters, never the records, so its memory does not grow with the number of personas.
Then histories are assembled per persona (a Ray Data groupby) and the dataset is exported.
This is `ray.mode: stages`; the default stream mode (`synth_stream`) reuses the worker
functions here (build_rows, parse_batch) inside one pipeline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from mnemoray.config import ConfigError
from mnemoray.llm.config import EngineConfig, load_engine_config, resolve_model
from mnemoray.llm.ray_data import RESULT_SCHEMA, run_requests
from mnemoray.llm.types import ChatResult, Usage
from mnemoray.pipelines.ray_runtime import ray_session
from mnemoray.synth import assembly
from mnemoray.synth.config import RoleMemoConfig
from mnemoray.synth.personas import load_seed_personas
from mnemoray.synth.stages import STAGES, Outcome, Stage, count_tokens, distractor_seeds, reject
from mnemoray.synth.store import StageStore, expand

BUILT_SCHEMA = pa.schema([
    ("input_id", pa.string()), ("persona_id", pa.string()), ("record", pa.string()), ("id", pa.string()),
    ("messages", pa.string()), ("params", pa.string()), ("seed", pa.int64()), ("json_schema", pa.string()),
    ("needs_llm", pa.bool_()), ("build_error", pa.string()),
])
ANSWERED_SCHEMA = pa.schema(list(BUILT_SCHEMA) + list(RESULT_SCHEMA))
OUT_SCHEMA = pa.schema([
    ("input_id", pa.string()), ("persona_id", pa.string()), ("kept", pa.string()), ("rejects", pa.string()),
    ("calls", pa.int64()), ("attempts", pa.int64()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("latency_s", pa.float64()),
])
HISTORIES = "histories"
Progress = Callable[[str, int, "int | None"], None]  # (stage, done so far this run, total pending or None)


@lru_cache(maxsize=4)
def _cfg(cfg_json: str) -> RoleMemoConfig:
    return RoleMemoConfig.model_validate_json(cfg_json)


# -- worker functions (plain functions over pyarrow batches) ----------------------------------

def build_rows(records: list[dict[str, Any]], spec: Stage, cfg: RoleMemoConfig) -> pa.Table:
    """One row per input record with its request columns (no request: needs_llm false)."""
    out = []
    for record in records:
        rid = record["id"]
        built: dict[str, Any] = {"input_id": rid, "persona_id": record.get("persona_id", ""),
                                 "record": json.dumps(record, ensure_ascii=False), "id": rid, "needs_llm": False}
        try:
            request = spec.build(record, cfg) if spec.build else None
        except Exception as err:  # noqa: BLE001 - a malformed record becomes a reject, not a crash
            built["build_error"] = f"{type(err).__name__}: {err}"
            request = None
        if request is not None:
            built.update(id=request.id, needs_llm=True, seed=request.seed,
                         messages=json.dumps([m.model_dump() for m in request.messages]),
                         params=request.params.model_dump_json(), json_schema=json.dumps(request.json_schema))
        out.append(built)
    return pa.Table.from_pylist(out, schema=BUILT_SCHEMA)


def build_batch(batch: pa.Table, stage: str, cfg_json: str, skip: frozenset[str],
                personas: frozenset[str]) -> pa.Table:
    """Pending inputs of `batch` (kept rows of the source stage) with their request columns."""
    from mnemoray.synth.stages import STAGE_BY_NAME

    records = [json.loads(row["record"]) for row in batch.to_pylist()
               if row["id"] not in skip and (not row["persona_id"] or row["persona_id"] in personas)]
    return build_rows(records, STAGE_BY_NAME[stage], _cfg(cfg_json))


def _needs_llm(batch: pa.Table, value: bool) -> pa.Table:
    mask = pc.equal(batch.column("needs_llm"), pa.scalar(value))
    return batch.filter(mask)


def _of_personas(batch: pa.Table, keep: list[str]) -> pa.Table:
    return batch.filter(pc.is_in(batch.column("persona_id"), value_set=pa.array(keep, pa.string())))


def _answered(batch: pa.Table) -> pa.Table:
    """Conform a batch to ANSWERED_SCHEMA (rows that skipped the LLM get null results)."""
    cols = []
    for f in ANSWERED_SCHEMA:
        cols.append(batch.column(f.name).cast(f.type) if f.name in batch.column_names else pa.nulls(len(batch), f.type))
    return pa.Table.from_arrays(cols, schema=ANSWERED_SCHEMA)


def _result(row: dict[str, Any]) -> ChatResult | None:
    if not row["needs_llm"]:
        return None
    parsed = json.loads(row["parsed"]) if row.get("parsed") else None
    return ChatResult(id=row["id"], text=row.get("text") or "", parsed=parsed, error=row.get("error"),
                      error_kind=row.get("error_kind"), attempts=int(row.get("attempts") or 0),
                      usage=Usage(prompt_tokens=int(row.get("prompt_tokens") or 0),
                                  completion_tokens=int(row.get("completion_tokens") or 0)),
                      latency_s=float(row.get("latency_s") or 0.0))


def outcome_row(input_id: str, persona_id: str, outcome: Outcome, result: ChatResult | None) -> dict[str, Any]:
    return {"input_id": input_id, "persona_id": persona_id,
            "kept": json.dumps(outcome.kept, ensure_ascii=False), "rejects": json.dumps(outcome.rejects, ensure_ascii=False),
            "calls": 0 if result is None else 1, "attempts": 0 if result is None else result.attempts,
            "prompt_tokens": 0 if result is None else result.usage.prompt_tokens,
            "completion_tokens": 0 if result is None else result.usage.completion_tokens,
            "latency_s": 0.0 if result is None else result.latency_s}


def parse_batch(batch: pa.Table, stage: str, cfg_json: str) -> pa.Table:
    from mnemoray.synth.stages import STAGE_BY_NAME

    spec, cfg = STAGE_BY_NAME[stage], _cfg(cfg_json)
    out = []
    for row in batch.to_pylist():
        record = json.loads(row["record"])
        result = _result(row)
        if row.get("build_error"):
            outcome = Outcome(rejects=[reject(record, "bad_input", row["build_error"])])
        else:
            try:
                outcome = spec.parse(record, result, cfg)
            except Exception as err:  # noqa: BLE001 - keep going; the record and raw text are kept
                outcome = Outcome(rejects=[reject(record, "parse_error", f"{type(err).__name__}: {err}",
                                                  result.text if result else "")])
        out.append(outcome_row(row["input_id"], row["persona_id"], outcome, result))
    return pa.Table.from_pylist(out, schema=OUT_SCHEMA)


# -- driver -------------------------------------------------------------------------------

def _source_ids(store: StageStore) -> list[str]:
    return store.read("kept", ["id"]).column(0).to_pylist()


def _drain(ds: ray.data.Dataset, store: StageStore, cfg: RoleMemoConfig, total: int,
           progress: Progress | None) -> int:
    """Stream finished inputs back and write them as parts; returns inputs finished."""
    finished = 0
    for batch in ds.iter_batches(batch_size=cfg.ray.write_every, batch_format="pyarrow", prefetch_batches=1):
        kept, rejects, done = expand(batch.to_pylist(), store.name)
        if done:
            store.write_part(kept, rejects, done)
            finished += len(done)
            if progress:
                progress(store.name, finished, total)
    return finished


def run_stage(stage: Stage, cfg: RoleMemoConfig, engine: EngineConfig, personas: frozenset[str],
              progress: Progress | None = None) -> dict[str, Any]:
    store, source = StageStore(cfg.out, stage.name), StageStore(cfg.out, stage.source)
    started = time.perf_counter()
    removed = store.clean_orphans()
    done = store.done_ids()
    files = source.files("kept")
    pending = [i for i in _source_ids(source) if i not in done]
    info = {"stage": stage.name, "mode": "stages", "pending": len(pending), "orphans_removed": removed, "finished": 0}
    if not pending:
        return info
    cfg_json = cfg.model_dump_json()
    ds = ray.data.read_parquet([str(f) for f in files], override_num_blocks=max(1, min(len(pending) // 8, 64)))
    ds = ds.map_batches(build_batch, batch_format="pyarrow", zero_copy_batch=True,
                        fn_kwargs={"stage": stage.name, "cfg_json": cfg_json, "skip": frozenset(done),
                                   "personas": personas})
    actors = {"min_actors": cfg.ray.llm_actors_min or cfg.ray.llm_actors, "max_actors": cfg.ray.llm_actors}
    if stage.build is not None and engine.engine != "vllm":
        # rows that ask nothing ride along in stream (a union would hold results back to the end)
        ds = run_requests(ds, engine, ask_column="needs_llm", **actors).map_batches(_answered, batch_format="pyarrow")
    elif stage.build is not None:
        llm = run_requests(ds.map_batches(_needs_llm, fn_kwargs={"value": True}, batch_format="pyarrow"), engine, **actors)
        direct = ds.map_batches(_needs_llm, fn_kwargs={"value": False}, batch_format="pyarrow")
        ds = llm.map_batches(_answered, batch_format="pyarrow").union(
            direct.map_batches(_answered, batch_format="pyarrow"))
    else:
        ds = ds.map_batches(_answered, batch_format="pyarrow")
    ds = ds.map_batches(parse_batch, batch_format="pyarrow", fn_kwargs={"stage": stage.name, "cfg_json": cfg_json})
    info["finished"] = _drain(ds, store, cfg, len(pending), progress)
    info["wall_s"] = round(time.perf_counter() - started, 3)
    store.log_run(info)
    return info


# -- histories -------------------------------------------------------------------------------

class AssembleHistories:
    """map_groups UDF: all safe dialogues of one persona -> one history record."""

    def __init__(self, cfg_json: str, pool: list[tuple[str, int]], personas_path: str):
        self.cfg = _cfg(cfg_json)
        self.pool = [assembly.PoolEntry(i, t) for i, t in pool]
        table = pq.read_table(personas_path, columns=["id", "record"])
        self.personas = dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist()))

    def __call__(self, group: pa.Table) -> pa.Table:
        dialogues = [json.loads(r) for r in group.column("record").to_pylist()]
        pid = dialogues[0]["persona_id"]
        persona = json.loads(self.personas[pid])
        qtokens = {d["id"]: count_tokens(d["fact_query"]["question"], self.cfg.tokenizer) for d in dialogues}
        history = assembly.assemble(persona, dialogues, self.pool, qtokens, self.cfg.target_tokens,
                                    self.cfg.assembly, self.cfg.seed)
        row = outcome_row(pid, pid, Outcome(kept=[history]), None)
        return pa.Table.from_pylist([row], schema=OUT_SCHEMA)


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
    ds = ds.map_batches(_of_personas, batch_format="pyarrow", fn_kwargs={"keep": pending})
    ds = ds.groupby("persona_id").map_groups(
        AssembleHistories, batch_format="pyarrow",
        fn_constructor_kwargs={"cfg_json": cfg.model_dump_json(), "pool": pool, "personas_path": str(persona_files[0])},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cfg.ray.workers)))
    info["finished"] = _drain(ds, store, cfg, len(pending), progress)
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
        if engine.engine == "openai" and engine.tiny is None:
            raise ConfigError("key 'tokenizer': set a local tokenizer folder to count tokens for an openai engine "
                              f"(served model '{engine.model}' cannot be loaded here)")
        tokenizer = resolve_model(engine)
    engine = engine.model_copy(update={"model": resolve_model(engine), "tiny": None})
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
            from mnemoray.pipelines.synth_stream import run_stream

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
