"""`mnemoray eval qa` on Ray Data: one task per history on the shared per-history worker,
which holds the memory and both engines (`mnemoray.eval.per_history`, kind "qa").

Per-history work is `mnemoray.eval.qa.evaluate_qa_sample` (plain Python). The driver streams
rows to per_query.jsonl as histories finish, then rewrites it in a deterministic order and
writes metrics.json and report.md (+ a PNG of accuracy and F1 by category).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from mnemoray.config import QAEvalConfig
from mnemoray.distributed.data.history_eval import evaluator_kwargs, stream_history_rows
from mnemoray.eval.qa import QASettings, summarize_qa
from mnemoray.eval.qa_metrics import stemmer_name
from mnemoray.eval.qa_report import write_qa_report
from mnemoray.llm.registry import engine_payload
from mnemoray.loaders import DatasetError, load_dataset
from mnemoray.memory.source import check_memory_source
from mnemoray.records import EvalSample


def load_answered_samples(cfg: Any, dataset: str, console: Console,
                          what: str = "answerable") -> tuple[list[EvalSample], list[DatasetError]]:
    """Check the memory source, then load the histories with at least one query that has a gold answer.

    `cfg` has data, memory, memory_bank, skip_invalid and limit; skipped records are printed.
    """
    check_memory_source(cfg.memory.name, cfg.memory_bank, getattr(cfg, "service", None))
    samples, errors = load_dataset(dataset, cfg.data, cfg.skip_invalid, cfg.limit,
                                   where=lambda s: any(q.answer is not None for q in s.queries))
    for err in errors:
        console.print(f"[yellow]skipped invalid record[/yellow] {err}")
    if not samples:
        raise DatasetError(cfg.data, None, None, f"no history with {what} queries")
    return samples, errors


def run_qa_eval(cfg: QAEvalConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    samples, errors = load_answered_samples(cfg, cfg.dataset, console)
    answerer, retries = engine_payload(cfg.answerer)
    judge, judge_retries = engine_payload(cfg.judge)
    settings = QASettings(dataset=cfg.dataset, k=cfg.k, max_queries=cfg.max_queries, answer_chars=cfg.answer_chars,
                          reasoning_chars=cfg.reasoning_chars, memory_chars=cfg.memory_chars,
                          answer_tokens=cfg.answer_tokens, judge_tokens=cfg.judge_tokens,
                          max_retries=max(retries, judge_retries))
    out = Path(cfg.out)
    rows = stream_history_rows(
        samples, evaluator_kwargs("qa", cfg, asdict(settings), {"answerer": answerer, "judge": judge}), cfg.ray, out,
        on_history=lambda history_id, n: console.print(f"answered {history_id}: {n} questions"))
    summary = summarize_qa(rows, cfg.dataset, cfg.memory.name, extra={
        "f1_stemmer": stemmer_name() if settings.stem else "none",
        "invalid_records": [str(e) for e in errors],
        "config": json.loads(cfg.model_dump_json()),
    })
    write_qa_report(summary, out)
    return summary
