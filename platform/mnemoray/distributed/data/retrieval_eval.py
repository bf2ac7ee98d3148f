"""Retrieval evaluation on Ray Data: one task per history, results streamed back to the driver.

The per-history work is `mnemoray.eval.retrieval.evaluate_sample` (plain Python), run by the
shared per-history worker (`history_eval`), which holds the embedding model so it is loaded
once per worker, not once per history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mnemoray.config import RetrievalEvalConfig
from mnemoray.distributed.data.history_eval import evaluator_kwargs, stream_history_rows
from mnemoray.eval.report import summarize, write_report
from mnemoray.loaders import DatasetError, load_dataset
from mnemoray.memory.source import check_memory_source
from mnemoray.records import EvalSample


def collect_samples(cfg: RetrievalEvalConfig) -> tuple[list[EvalSample], list[DatasetError]]:
    """Load (streaming) and validate every record before any Ray work starts."""
    return load_dataset(cfg.dataset, cfg.data, cfg.skip_invalid, cfg.limit, where=lambda s: bool(s.queries))


def run_retrieval_eval(cfg: RetrievalEvalConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    check_memory_source(cfg.memory.name, cfg.memory_bank, cfg.service)
    samples, errors = collect_samples(cfg)
    for err in errors:
        console.print(f"[yellow]skipped invalid record[/yellow] {err}")
    if not samples:
        raise DatasetError(cfg.data, None, None, "no history with scorable queries")
    out = Path(cfg.out)
    label = f"{cfg.memory.name} on {cfg.dataset}"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task(label, total=len(samples))
        rows = stream_history_rows(
            samples, evaluator_kwargs("retrieval", cfg, {"ks": cfg.ks, "overfetch": cfg.overfetch}), cfg.ray, out,
            on_history=lambda *_: progress.advance(task))
    summary = summarize(
        rows, cfg.dataset, cfg.memory.name, cfg.ks,
        extra={"config": json.loads(cfg.model_dump_json()), "invalid_records": [str(e) for e in errors]},
    )
    write_report(summary, out)
    return summary
