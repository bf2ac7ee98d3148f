"""`mnemoray eval rolememo | roleplay | realmem-judge` on Ray Data: one task per history on
the shared per-history worker (`mnemoray.eval.per_history`).

The per-history work is plain Python in `mnemoray.eval` (rolememo_recall, roleplay,
realmem_judge); the worker keeps the memory source, the embedder and the LLM engines
loaded across histories. The driver streams rows to per_query.jsonl as histories finish,
then rewrites it in a deterministic order and writes metrics.json and report.md with plots.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from rich.console import Console

from mnemoray.config import RealMemJudgeConfig, RoleMemoRecallConfig, RolePlayEvalConfig
from mnemoray.distributed.data.history_eval import evaluator_kwargs, stream_history_rows
from mnemoray.distributed.data.qa_eval import load_answered_samples
from mnemoray.llm.registry import engine_payload
from mnemoray.loaders import DatasetError
from mnemoray.records import EvalSample


def _run(kind: str, cfg: Any, samples: list[EvalSample], settings: dict[str, Any], engines: dict[str, dict[str, Any]],
         similarity: dict[str, Any] | None, console: Console) -> list[dict[str, Any]]:
    return stream_history_rows(
        samples, evaluator_kwargs(kind, cfg, settings, engines, similarity), cfg.ray, Path(cfg.out),
        on_history=lambda history_id, n: console.print(f"{kind}: {history_id} done ({n} queries)"))


def _run_judged(kind: str, cfg: Any, samples: list[EvalSample], settings_cls: type, roles: tuple[str, ...],
                console: Console) -> tuple[Any, list[dict[str, Any]]]:
    """A judged evaluation: one engine per role (the config field naming its engine config) and
    settings copied from the same-named config fields, with the most retries any engine allows."""
    engines: dict[str, dict[str, Any]] = {}
    retries: list[int] = []
    for role in roles:
        engines[role], n = engine_payload(getattr(cfg, role))
        retries.append(n)
    settings = settings_cls(**{f.name: getattr(cfg, f.name) for f in fields(settings_cls) if f.name != "max_retries"},
                            max_retries=max(retries))
    return settings, _run(kind, cfg, samples, asdict(settings), engines, None, console)


def _extra(cfg: Any, errors: list[DatasetError], **more: Any) -> dict[str, Any]:
    return {"invalid_records": [str(e) for e in errors], "config": json.loads(cfg.model_dump_json()), **more}


def run_rolememo_eval(cfg: RoleMemoRecallConfig, console: Console | None = None) -> dict[str, Any]:
    from mnemoray.eval.judge_reports import write_rolememo_report
    from mnemoray.eval.rolememo_recall import RecallSettings, summarize_rolememo
    from mnemoray.index.embedder import resolve_model_path

    console = console or Console(stderr=True)
    samples, errors = load_answered_samples(cfg, "rolememo", console, "scorable")
    settings = RecallSettings(k=cfg.k, fact_threshold=cfg.fact_threshold, insight_threshold=cfg.insight_threshold,
                              max_queries=cfg.max_queries)
    similarity = {"model": cfg.similarity_model, "device": cfg.similarity_device}
    rows = _run("rolememo", cfg, samples, asdict(settings), {}, similarity, console)
    model_name = cfg.similarity_model or "all-MiniLM-L6-v2"
    summary = summarize_rolememo(rows, cfg.memory.name, settings, extra=_extra(
        cfg, errors, similarity_model=model_name, similarity_model_path=resolve_model_path(cfg.similarity_model)))
    write_rolememo_report(summary, Path(cfg.out))
    return summary


def run_roleplay_eval(cfg: RolePlayEvalConfig, console: Console | None = None) -> dict[str, Any]:
    from mnemoray.eval.judge_reports import write_roleplay_report
    from mnemoray.eval.roleplay import RoleplaySettings, summarize_roleplay

    console = console or Console(stderr=True)
    samples, errors = load_answered_samples(cfg, "rolememo", console, "scorable")
    settings, rows = _run_judged("roleplay", cfg, samples, RoleplaySettings, ("responder", "judge"), console)
    summary = summarize_roleplay(rows, cfg.memory.name, settings, extra=_extra(cfg, errors))
    write_roleplay_report(summary, Path(cfg.out))
    return summary


def run_realmem_judge(cfg: RealMemJudgeConfig, console: Console | None = None) -> dict[str, Any]:
    from mnemoray.eval.judge_reports import write_realmem_report
    from mnemoray.eval.realmem_judge import (
        RealMemJudgeSettings,
        attach_gold_memory,
        read_gold_memory,
        summarize_realmem,
    )

    console = console or Console(stderr=True)
    samples, errors = load_answered_samples(cfg, "realmem", console, "scorable")
    missing = attach_gold_memory(samples, read_gold_memory(cfg.data))
    if missing:
        console.print(f"[yellow]{missing} queries have no gold memory points (`memory_used`); they get no memory "
                      "recall/helpfulness[/yellow]")
    settings, rows = _run_judged("realmem-judge", cfg, samples, RealMemJudgeSettings, ("answerer", "judge"), console)
    summary = summarize_realmem(rows, cfg.memory.name, settings, extra=_extra(cfg, errors))
    write_realmem_report(summary, Path(cfg.out))
    return summary


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "rolememo": run_rolememo_eval, "roleplay": run_roleplay_eval, "realmem-judge": run_realmem_judge,
}
