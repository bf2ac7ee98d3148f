"""`mnemoray eval rolememo | roleplay | realmem-judge` on Ray Data: one task per history.

The per-history work is plain Python in `mnemoray.eval` (rolememo_recall, roleplay,
realmem_judge); actors keep the memory source, the embedder and the LLM engines loaded
across histories. The driver streams rows to per_query.jsonl as histories finish, then
rewrites it in a deterministic order and writes metrics.json and report.md with plots.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from rich.console import Console

from mnemoray.config import MemoryConfig, RealMemJudgeConfig, RoleMemoRecallConfig, RolePlayEvalConfig
from mnemoray.loaders import DatasetError
from mnemoray.pipelines.qa_eval import _engine_payload, load_answered_samples, stream_query_rows
from mnemoray.records import EvalSample


class JudgedEvalActor:
    """Ray Data actor for the three evaluations (`kind`): memory source + embedder or engines."""

    def __init__(self, kind: str, memory: dict[str, Any], memory_bank: str | None, settings: dict[str, Any],
                 engines: dict[str, dict[str, Any]], similarity: dict[str, Any] | None, torch_threads: int | None):
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        from mnemoray.memory.source import MemorySource

        self.kind = kind
        self.source = MemorySource(MemoryConfig.model_validate(memory), memory_bank)
        built: list[tuple[dict[str, Any], Any]] = []
        self.engines = {}
        if engines:
            from mnemoray.llm.config import EngineConfig, build_engine

            for role, cfg in engines.items():  # one engine per distinct config (answerer == judge shares)
                same = next((e for c, e in built if c == cfg), None)
                self.engines[role] = same or build_engine(EngineConfig.model_validate(cfg))
                if same is None:
                    built.append((cfg, self.engines[role]))
        if kind == "rolememo":
            from mnemoray.eval.rolememo_recall import RecallSettings
            from mnemoray.index.embedder import Embedder

            self.settings: Any = RecallSettings(**settings)
            self.encoder = Embedder((similarity or {}).get("model"), (similarity or {}).get("device", "cpu"))
        elif kind == "roleplay":
            from mnemoray.eval.roleplay import RoleplaySettings

            self.settings = RoleplaySettings(**settings)
        else:
            from mnemoray.eval.realmem_judge import RealMemJudgeSettings

            self.settings = RealMemJudgeSettings(**settings)

    def evaluate(self, sample: EvalSample) -> list[dict[str, Any]]:
        make = self.source.factory(sample.history.id)
        if self.kind == "rolememo":
            from mnemoray.eval.rolememo_recall import evaluate_rolememo_sample

            return evaluate_rolememo_sample(sample, make, self.encoder, self.settings)
        if self.kind == "roleplay":
            from mnemoray.eval.roleplay import evaluate_roleplay_sample

            return evaluate_roleplay_sample(sample, make, self.engines["responder"], self.engines["judge"], self.settings)
        from mnemoray.eval.realmem_judge import evaluate_realmem_sample

        return evaluate_realmem_sample(sample, make, self.engines["answerer"], self.engines["judge"], self.settings)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        ids, rows = [], []
        for raw in batch["sample"]:
            sample = EvalSample.model_validate_json(raw)
            ids.append(sample.history.id)
            rows.append(json.dumps(self.evaluate(sample), ensure_ascii=False))
        return {"history_id": ids, "rows": rows}


def _run(kind: str, cfg: Any, samples: list[EvalSample], settings: dict[str, Any], engines: dict[str, dict[str, Any]],
         similarity: dict[str, Any] | None, console: Console) -> list[dict[str, Any]]:
    return stream_query_rows(
        samples, JudgedEvalActor,
        {"kind": kind, "memory": cfg.memory.model_dump(mode="json"),
         "memory_bank": str(cfg.memory_bank) if cfg.memory_bank else None, "settings": settings,
         "engines": engines, "similarity": similarity, "torch_threads": cfg.torch_threads},
        cfg.ray, Path(cfg.out), console, lambda history_id, n: f"{kind}: {history_id} done ({n} queries)")


def _run_judged(kind: str, cfg: Any, samples: list[EvalSample], settings_cls: type, roles: tuple[str, ...],
                console: Console) -> tuple[Any, list[dict[str, Any]]]:
    """A judged evaluation: one engine per role (the config field naming its engine config) and
    settings copied from the same-named config fields, with the most retries any engine allows."""
    engines: dict[str, dict[str, Any]] = {}
    retries: list[int] = []
    for role in roles:
        engines[role], n = _engine_payload(getattr(cfg, role))
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
    from mnemoray.eval.realmem_judge import RealMemJudgeSettings, attach_gold_memory, read_gold_memory, summarize_realmem

    console = console or Console(stderr=True)
    samples, errors = load_answered_samples(cfg, "realmem", console, "scorable")
    missing = attach_gold_memory(samples, read_gold_memory(cfg.data))
    if missing:
        console.print(f"[yellow]{missing} queries have no gold memory points (`memory_used`); they get no memory "
                      "recall/helpfulness[/yellow]")
    settings, rows = _run_judged("realmem", cfg, samples, RealMemJudgeSettings, ("answerer", "judge"), console)
    summary = summarize_realmem(rows, cfg.memory.name, settings, extra=_extra(cfg, errors))
    write_realmem_report(summary, Path(cfg.out))
    return summary


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "rolememo": run_rolememo_eval, "roleplay": run_roleplay_eval, "realmem-judge": run_realmem_judge,
}
