"""Retrieval evaluation on Ray Data: one task per history, results streamed back to the driver.

The per-history work is `mnemoray.eval.retrieval.evaluate_sample` (plain Python); actors
hold the embedding model so it is loaded once per worker, not once per history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mnemoray.config import ConfigError, MemoryConfig, RetrievalEvalConfig
from mnemoray.eval.report import PerQueryWriter, summarize, write_report
from mnemoray.eval.retrieval import evaluate_sample
from mnemoray.loaders import DatasetError, load_dataset
from mnemoray.pipelines.ray_runtime import map_one_per_task, ray_session
from mnemoray.records import EvalSample


class HistoryEvaluator:
    """Ray Data actor: evaluates whole histories with one memory config."""

    def __init__(self, memory: dict[str, Any], ks: list[int], overfetch: int = 5, memory_bank: str | None = None):
        from mnemoray.memory.source import MemorySource

        self.source = MemorySource(MemoryConfig.model_validate(memory), memory_bank)
        self.ks = ks
        self.overfetch = overfetch

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        ids, rows = [], []
        for raw in batch["sample"]:
            sample = EvalSample.model_validate_json(raw)
            ids.append(sample.history.id)
            make = self.source.factory(sample.history.id)
            rows.append(json.dumps(evaluate_sample(sample, make, self.ks, self.overfetch), ensure_ascii=False))
        return {"history_id": ids, "rows": rows}


def check_memory_source(cfg: RetrievalEvalConfig) -> None:
    """LLM-built memories are scored from a built bank; say so instead of failing per call."""
    from mnemoray.memory import LLM_FRAMEWORKS

    if cfg.memory_bank is None and cfg.memory.name in LLM_FRAMEWORKS:
        raise ConfigError(
            f"memory '{cfg.memory.name}' is built by an LLM: run `mnemoray memory build --framework "
            f"{cfg.memory.name} ...` first and pass its output folder with --memory-bank DIR"
        )
    if cfg.memory_bank is not None and not Path(cfg.memory_bank).exists():
        raise ConfigError(f"--memory-bank {cfg.memory_bank}: no such folder")


def collect_samples(cfg: RetrievalEvalConfig) -> tuple[list[EvalSample], list[DatasetError]]:
    """Load (streaming) and validate every record before any Ray work starts."""
    return load_dataset(cfg.dataset, cfg.data, cfg.skip_invalid, cfg.limit, where=lambda s: bool(s.queries))


def run_retrieval_eval(cfg: RetrievalEvalConfig, console: Console | None = None) -> dict[str, Any]:

    console = console or Console(stderr=True)
    check_memory_source(cfg)
    samples, errors = collect_samples(cfg)
    for err in errors:
        console.print(f"[yellow]skipped invalid record[/yellow] {err}")
    if not samples:
        raise DatasetError(cfg.data, None, None, "no history with scorable queries")
    out = Path(cfg.out)
    writer = PerQueryWriter(out / "per_query.jsonl")
    all_rows: list[dict[str, Any]] = []
    with ray_session(cfg.ray):
        ds = map_one_per_task(
            [{"sample": s.model_dump_json()} for s in samples], HistoryEvaluator,
            {"memory": cfg.memory.model_dump(mode="json"), "ks": cfg.ks, "overfetch": cfg.overfetch,
             "memory_bank": str(cfg.memory_bank) if cfg.memory_bank else None},
            cfg.ray,
        )
        label = f"{cfg.memory.name} on {cfg.dataset}"
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            task = progress.add_task(label, total=len(samples))
            for row in ds.iter_rows():
                rows = json.loads(row["rows"])
                writer.write(rows)
                all_rows.extend(rows)
                progress.advance(task)
    writer.close()
    all_rows.sort(key=lambda r: (r["history_id"], r["visible_sessions"], r["query_id"]))
    writer = PerQueryWriter(out / "per_query.jsonl")  # rewrite in a deterministic order
    writer.write(all_rows)
    writer.close()
    summary = summarize(
        all_rows, cfg.dataset, cfg.memory.name, cfg.ks,
        extra={"config": json.loads(cfg.model_dump_json()), "invalid_records": [str(e) for e in errors]},
    )
    write_report(summary, out)
    return summary
