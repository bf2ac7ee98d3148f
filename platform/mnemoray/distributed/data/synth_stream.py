"""Streaming mode of `synth rolememo`: every LLM stage in one Ray Data pipeline, one engine fleet.

Stage-by-stage execution leaves the LLM idle at every stage boundary (the last slow
request of a stage holds up the next) and starts an actor pool per stage. Here the stages
are consecutive operators of one streaming dataset, so a persona chunk moves to its next
stage while others are still in earlier ones, and all stages send their requests to one
long-lived fleet (`mnemoray.distributed.actors.engine_fleet`) whose `max_in_flight` bound covers the whole job.

Rows of the stream ("flow rows") are stage outcomes: one per finished input, tagged with
the stage that produced it. A stage operator reads the rows of its source stage, expands
their kept records into its inputs, asks the fleet, parses, and emits its own outcome rows
after every row it received, so each block reaches the driver with a stage's outcomes
after those of the stage it read from. The driver writes them as parts of
`stages/<name>/` in stage order, which keeps "done in stage k ⇒ its input is written in
stage k-1" true at every crash point.

A rerun starts the stream from what is on disk: for each stage, the kept records of its
source stage that it has not done ("replay rows", addressed to that one stage and dropped
by it), read in chunks so the first personas reach the LLM at once.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from mnemoray.config.llm import EngineConfig
from mnemoray.config.synth import RoleMemoConfig
from mnemoray.distributed.actors.engine_fleet import FleetClient, start_fleet, stop_fleet
from mnemoray.synth.rows import OUT_SCHEMA, build_rows, config_from_json, conform_answered, parse_batch
from mnemoray.synth.stages import STAGE_BY_NAME, STAGES
from mnemoray.synth.store import StageStore, expand

ROOT_SOURCES = ("personas", "distractor_seeds")


FLOW_SCHEMA = pa.schema(list(OUT_SCHEMA) + [("stage", pa.string()), ("target", pa.string())])


# -- the source: unfinished inputs of every stage, read from disk in chunks --------------------

def plan_chunks(cfg: RoleMemoConfig) -> list[dict[str, Any]]:
    """(file, row range, target stage) for every kept part of every stage's source; the
    persona-free distractor pool first, so its few long calls overlap the persona work."""
    items = []
    for stage in sorted(STAGES, key=lambda s: s.source != "distractor_seeds"):
        per = cfg.ray.chunk_personas if stage.source in ROOT_SOURCES else cfg.ray.chunk_records
        for path in StageStore(cfg.out, stage.source).files("kept"):
            rows = pq.ParquetFile(path).metadata.num_rows
            items += [{"file": str(path), "start": start, "stop": min(rows, start + per), "source": stage.source,
                       "target": stage.name} for start in range(0, rows, per)]
    return items


_DONE: dict[str, frozenset[str]] = {}  # per worker process: each stage's done ids, fetched once


def _done(ref: Any) -> frozenset[str]:
    key = ref.hex()
    if key not in _DONE:
        _DONE[key] = ray.get(ref)
    return _DONE[key]


def read_chunk(batch: pa.Table, skip: dict[str, list[Any]], personas: frozenset[str]) -> pa.Table:
    """Replay rows for the pending records of the planned chunks in `batch`."""
    out = []
    for item in batch.to_pylist():
        (ref,) = skip[item["target"]]
        done = _done(ref)
        table = pq.read_table(item["file"], columns=["id", "persona_id", "record"])
        table = table.slice(item["start"], item["stop"] - item["start"])
        for rid, pid, record in zip(*(table.column(i).to_pylist() for i in range(3)), strict=True):
            if rid in done or (pid and pid not in personas):
                continue
            out.append({"input_id": rid, "persona_id": pid, "kept": f"[{record}]", "rejects": "[]", "calls": 0,
                        "attempts": 0, "prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0,
                        "stage": item["source"], "target": item["target"]})
    return pa.Table.from_pylist(out, schema=FLOW_SCHEMA)


# -- one stage operator -----------------------------------------------------------------------

class StageStep:
    """Ray Data UDF (async actor): this stage's outcomes appended to the rows it was given."""

    def __init__(self, stage: str, cfg_json: str, fleet: list[Any]):
        self.spec = STAGE_BY_NAME[stage]
        self.cfg_json = cfg_json
        self.cfg = config_from_json(cfg_json)
        self.client = FleetClient(fleet) if self.spec.build is not None else None

    def _split(self, batch: pa.Table) -> tuple[pa.Table, list[dict[str, Any]]]:
        """(rows to pass on, this stage's input records)."""
        target = batch.column("target")
        addressed = pc.fill_null(pc.equal(target, self.spec.name), False)
        mine = pc.and_(pc.equal(batch.column("stage"), self.spec.source),
                       pc.or_(pc.is_null(target), addressed))
        records = [r for kept in batch.filter(mine).column("kept").to_pylist() for r in json.loads(kept)]
        return batch.filter(pc.invert(addressed)), records

    async def __call__(self, batch: pa.Table) -> pa.Table:
        passing, records = self._split(batch)
        if not records:
            return passing
        built = build_rows(records, self.spec, self.cfg)
        if self.client is not None and pc.any(built.column("needs_llm")).as_py():
            built = await self.client.answer(built)
        outcomes = parse_batch(conform_answered(built), self.spec.name, self.cfg_json)
        n = len(outcomes)
        outcomes = outcomes.append_column("stage", pa.array([self.spec.name] * n, pa.string()))
        outcomes = outcomes.append_column("target", pa.nulls(n, pa.string()))
        return pa.concat_tables([passing, outcomes.cast(FLOW_SCHEMA)])


# -- the driver -------------------------------------------------------------------------------

def run_stream(cfg: RoleMemoConfig, engine: EngineConfig, personas: frozenset[str],
               progress=None) -> list[dict[str, Any]]:
    """Run every LLM stage as one stream; returns one run-info dict per stage."""
    started = time.perf_counter()
    stores = {s.name: StageStore(cfg.out, s.name) for s in STAGES}
    infos = {name: {"stage": name, "mode": "stream", "orphans_removed": store.clean_orphans(), "finished": 0}
             for name, store in stores.items()}
    items = plan_chunks(cfg)
    if not items:
        return list(infos.values())
    skip = {name: [ray.put(frozenset(store.done_ids()))] for name, store in stores.items()}
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    fleet = start_fleet(engine, cfg.ray.llm_actors, ask_column="needs_llm")
    try:
        cfg_json = cfg.model_dump_json()
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
            read_chunk, batch_size=1, batch_format="pyarrow", num_cpus=0.05,
            fn_kwargs={"skip": skip, "personas": personas})
        for stage in STAGES:
            ds = ds.map_batches(
                StageStep, batch_size=None, batch_format="pyarrow", zero_copy_batch=True, num_cpus=0.05,
                fn_constructor_kwargs={"stage": stage.name, "cfg_json": cfg_json, "fleet": fleet},
                compute=ray.data.ActorPoolStrategy(
                    min_size=cfg.ray.min_workers, max_size=max(1, cfg.ray.workers),
                    max_tasks_in_flight_per_actor=cfg.ray.stage_concurrency,
                    max_concurrent_calls_per_actor=cfg.ray.stage_concurrency))
        order = [s.name for s in STAGES]
        for batch in ds.iter_batches(batch_size=cfg.ray.write_every, batch_format="pyarrow"):
            by_stage: dict[str, list[dict[str, Any]]] = {}
            for row in batch.to_pylist():
                by_stage.setdefault(row["stage"], []).append(row)
            now = time.perf_counter()
            for name in order:  # a stage's inputs are on disk before its outcomes
                kept, rejects, done = expand(by_stage.get(name, []), name)
                if not done:
                    continue
                stores[name].write_part(kept, rejects, done)
                infos[name]["finished"] += len(done)
                first.setdefault(name, now)
                last[name] = now
                if progress:
                    progress(name, infos[name]["finished"], None)
    finally:
        stop_fleet(fleet)
    for name, info in infos.items():
        info["wall_s"] = round(last[name] - first[name], 3) if name in first else 0.0
        info["job_wall_s"] = round(time.perf_counter() - started, 3)
        stores[name].log_run(info)
    return list(infos.values())
