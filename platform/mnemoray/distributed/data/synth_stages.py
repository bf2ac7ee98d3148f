"""`mnemoray synth rolememo` on Ray Data: every stage of `mnemoray.synth.stages` over Parquet.

Per stage: read the source stage's kept parts, drop inputs already done (and personas not
in this run), build one request per input, answer them through `run_requests` (hf actor
pool, openai client actors, or ray.data.llm's vLLM processor), parse answers into kept
records and rejects, and stream the results back to the driver, which writes them as
parts of `stages/<name>/` (see `mnemoray.synth.store`). The driver holds only ids and
counters, never the records, so its memory does not grow with the number of personas.
Then histories are assembled per persona (a Ray Data groupby) and the dataset is exported.
This is `ray.mode: stages`; the default stream mode (`synth_stream`) runs the same row
functions (`mnemoray.synth.rows`) inside one pipeline; `synth_rolememo` runs either mode,
then the histories.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray

from mnemoray.config.llm import EngineConfig
from mnemoray.config.synth import RoleMemoConfig
from mnemoray.distributed.data.llm_requests import passes_rows_through, run_requests
from mnemoray.synth.rows import build_batch, conform_answered, parse_batch, with_needs_llm
from mnemoray.synth.stages import Stage
from mnemoray.synth.store import StageStore, expand

Progress = Callable[[str, int, "int | None"], None]  # (stage, done so far this run, total pending or None)


# -- driver -------------------------------------------------------------------------------

def _source_ids(store: StageStore) -> list[str]:
    return store.read("kept", ["id"]).column(0).to_pylist()


def drain(ds: ray.data.Dataset, store: StageStore, cfg: RoleMemoConfig, total: int,
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
    if stage.build is not None and passes_rows_through(engine):
        # rows that ask nothing ride along in stream (a union would hold results back to the end)
        ds = run_requests(ds, engine, ask_column="needs_llm", **actors).map_batches(
            conform_answered, batch_format="pyarrow"
        )
    elif stage.build is not None:
        llm = run_requests(
            ds.map_batches(with_needs_llm, fn_kwargs={"value": True}, batch_format="pyarrow"), engine, **actors
        )
        direct = ds.map_batches(with_needs_llm, fn_kwargs={"value": False}, batch_format="pyarrow")
        ds = llm.map_batches(conform_answered, batch_format="pyarrow").union(
            direct.map_batches(conform_answered, batch_format="pyarrow"))
    else:
        ds = ds.map_batches(conform_answered, batch_format="pyarrow")
    ds = ds.map_batches(parse_batch, batch_format="pyarrow", fn_kwargs={"stage": stage.name, "cfg_json": cfg_json})
    info["finished"] = drain(ds, store, cfg, len(pending), progress)
    info["wall_s"] = round(time.perf_counter() - started, 3)
    store.log_run(info)
    return info


# -- histories -------------------------------------------------------------------------------
