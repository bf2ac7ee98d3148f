"""`mnemoray memory build` on Ray Data: one task per history, actors holding the engine.

The per-history work is `mnemoray.memory.build.HistoryBuilder` (plain Python), run as a Ray
Data actor that loads the memory model and the embedder once; the driver streams results back and writes, per
history, `banks/<h>.parquet`, `trajectories/<h>.jsonl` and `snapshots/<h>.json` (last, as
the "done" marker: a rerun skips histories whose snapshot exists), then the combined
`trajectories.jsonl` (format: `mnemoray.memory.trajectory`) and `summary.json`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.console import Console

from mnemoray.config import MemoryBuildConfig
from mnemoray.distributed.runtime import map_one_per_task, ray_session
from mnemoray.ids import stable_id
from mnemoray.llm.registry import engine_payload
from mnemoray.loaders import DatasetError, load_dataset
from mnemoray.memory.bank import write_bank
from mnemoray.memory.build import HistoryBuilder
from mnemoray.memory.registry import llm_frameworks
from mnemoray.memory.trajectory import read_jsonl, write_jsonl
from mnemoray.records import History


def history_key(history_id: str) -> str:
    """A file-name-safe, collision-free name for a history."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', history_id)[:80]}-{stable_id(history_id)[:8]}"


def collect_histories(cfg: MemoryBuildConfig) -> tuple[list[History], list[DatasetError]]:
    samples, errors = load_dataset(cfg.dataset, cfg.data, cfg.skip_invalid, cfg.limit)
    return [s.history for s in samples], errors


def _write_history(out: Path, result: dict[str, Any]) -> None:
    key = history_key(result["history_id"])
    write_bank(result["rows"], out / "banks" / f"{key}.parquet")
    write_jsonl(result["trajectories"], out / "trajectories" / f"{key}.jsonl")
    snap = out / "snapshots" / f"{key}.json"
    snap.parent.mkdir(parents=True, exist_ok=True)
    payload = {"history_id": result["history_id"], "stats": result["stats"], "snapshot": result["snapshot"]}
    tmp = snap.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    tmp.replace(snap)


def run_memory_build(cfg: MemoryBuildConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    if cfg.memory.name not in llm_frameworks():
        raise ValueError(f"'{cfg.memory.name}' is not built by a memory model; choose one of {llm_frameworks()}")
    histories, errors = collect_histories(cfg)
    for err in errors:
        console.print(f"[yellow]skipped invalid record[/yellow] {err}")
    if not histories:
        raise DatasetError(cfg.data, None, None, "no history to build memory for")
    out = Path(cfg.out)
    todo = [h for h in histories if not (out / "snapshots" / f"{history_key(h.id)}.json").exists()]
    if len(todo) < len(histories):
        console.print(f"resuming: {len(histories) - len(todo)} of {len(histories)} histories already built")
    if todo:
        engine, _ = engine_payload(cfg.llm, cfg.llm_overrides)
        with ray_session(cfg.ray):
            ds = map_one_per_task(
                [{"history": h.model_dump_json()} for h in todo], HistoryBuilder,
                {"memory": cfg.memory.model_dump(mode="json"), "engine": engine,
                 "max_sessions": cfg.max_sessions, "torch_threads": cfg.torch_threads},
                cfg.ray,
            )
            for row in ds.iter_rows():
                result = json.loads(row["result"])
                _write_history(out, result)
                stats = result["stats"]
                console.print(f"built {result['history_id']}: {stats.get('items', 0)} items, "
                              f"{stats.get('calls', 0)} calls, {stats.get('failures', 0)} failed")
    return _finish(cfg, out, histories, errors)


def _finish(cfg: MemoryBuildConfig, out: Path, histories: list[History], errors: list[DatasetError]) -> dict[str, Any]:
    """Combined trajectory log and summary, in input order (deterministic across reruns)."""
    entries: list[dict[str, Any]] = []
    per_history: dict[str, Any] = {}
    totals: dict[str, int] = {}
    for h in histories:
        key = history_key(h.id)
        entries.extend(read_jsonl(out / "trajectories" / f"{key}.jsonl"))
        stats = json.loads((out / "snapshots" / f"{key}.json").read_text(encoding="utf-8"))["stats"]
        per_history[h.id] = stats
        for name, value in stats.items():
            totals[name] = totals.get(name, 0) + int(value)
    write_jsonl(entries, out / "trajectories.jsonl")
    summary = {"framework": cfg.memory.name, "dataset": cfg.dataset, "data": str(cfg.data),
               "histories": len(histories), "totals": totals, "per_history": per_history,
               "invalid_records": [str(e) for e in errors],
               "config": json.loads(cfg.model_dump_json())}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return summary
