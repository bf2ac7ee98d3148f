"""`mnemoray eval qa` on Ray Data: one task per history, actors holding memory and both engines.

Per-history work is `mnemoray.eval.qa.evaluate_qa_sample` (plain Python). The driver streams
rows to per_query.jsonl as histories finish, then rewrites it in a deterministic order and
writes metrics.json and report.md (+ a PNG of accuracy and F1 by category).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.console import Console

from mnemoray.config import DatasetName, MemoryConfig, RayConfig, RetrievalEvalConfig, StrictModel
from mnemoray.eval.qa import QASettings, evaluate_qa_sample, summarize_qa
from mnemoray.eval.qa_metrics import stemmer_name
from mnemoray.eval.report import PerQueryWriter
from mnemoray.loaders import DatasetError, load_dataset
from mnemoray.pipelines.ray_runtime import map_one_per_task, ray_session
from mnemoray.pipelines.retrieval_eval import check_memory_source
from mnemoray.records import EvalSample


class QAEvalConfig(StrictModel):
    dataset: DatasetName
    data: Path
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    memory_bank: Path | None = None
    answerer: Path = Path("configs/llm/tiny_local.yaml")
    judge: Path = Path("configs/llm/tiny_local.yaml")
    k: int = Field(10, ge=1)
    limit: int | None = Field(None, ge=1, description="only the first N histories")
    max_queries: int | None = Field(None, ge=1, description="only the first N answerable queries per history")
    answer_chars: int = Field(200, ge=1)
    reasoning_chars: int = Field(400, ge=1)
    memory_chars: int = Field(6000, ge=100)
    answer_tokens: int = Field(128, ge=8)
    judge_tokens: int = Field(256, ge=8)
    skip_invalid: bool = False
    torch_threads: int | None = Field(1, ge=1)
    out: Path = Path("runs/qa")
    ray: RayConfig = Field(default_factory=RayConfig)

    def settings(self, max_retries: int) -> QASettings:
        return QASettings(dataset=self.dataset, k=self.k, max_queries=self.max_queries,
                          answer_chars=self.answer_chars, reasoning_chars=self.reasoning_chars,
                          memory_chars=self.memory_chars, answer_tokens=self.answer_tokens,
                          judge_tokens=self.judge_tokens, max_retries=max_retries)


class QAActor:
    """Ray Data actor: one memory config, one answerer, one judge (shared when configs match)."""

    def __init__(self, memory: dict[str, Any], memory_bank: str | None, answerer: dict[str, Any],
                 judge: dict[str, Any], settings: dict[str, Any], torch_threads: int | None):
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        from mnemoray.llm.config import EngineConfig, build_engine

        from mnemoray.memory.source import MemorySource

        self.source = MemorySource(MemoryConfig.model_validate(memory), memory_bank)
        a_cfg, j_cfg = EngineConfig.model_validate(answerer), EngineConfig.model_validate(judge)
        self.answerer = build_engine(a_cfg)
        self.judge = self.answerer if answerer == judge else build_engine(j_cfg)
        self.settings = QASettings(**settings)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        ids, rows = [], []
        for raw in batch["sample"]:
            sample = EvalSample.model_validate_json(raw)
            ids.append(sample.history.id)
            out = evaluate_qa_sample(sample, self.source.factory(sample.history.id), self.answerer, self.judge, self.settings)
            rows.append(json.dumps(out, ensure_ascii=False))
        return {"history_id": ids, "rows": rows}


def _engine_payload(path: Path) -> tuple[dict[str, Any], int]:
    """Engine config with the tiny model resolved once in the driver; plus its retry count."""
    from mnemoray.llm.config import load_engine_config, resolve_model

    cfg = load_engine_config(path)
    if cfg.tiny is not None:
        cfg = cfg.model_copy(update={"model": resolve_model(cfg), "tiny": None})
    return cfg.model_dump(mode="json"), cfg.structured_retries


def load_answered_samples(cfg: Any, dataset: str, console: Console,
                          what: str = "answerable") -> tuple[list[EvalSample], list[DatasetError]]:
    """Check the memory source, then load the histories with at least one query that has a gold answer.

    `cfg` has data, memory, memory_bank, skip_invalid and limit; skipped records are printed.
    """
    check_memory_source(RetrievalEvalConfig(dataset=dataset, data=cfg.data, memory=cfg.memory,
                                            memory_bank=cfg.memory_bank))
    samples, errors = load_dataset(dataset, cfg.data, cfg.skip_invalid, cfg.limit,
                                   where=lambda s: any(q.answer is not None for q in s.queries))
    for err in errors:
        console.print(f"[yellow]skipped invalid record[/yellow] {err}")
    if not samples:
        raise DatasetError(cfg.data, None, None, f"no history with {what} queries")
    return samples, errors


def stream_query_rows(samples: list[EvalSample], actor: type, actor_kwargs: dict[str, Any], ray_cfg: RayConfig,
                      out: Path, console: Console, done: Callable[[str, int], str]) -> list[dict[str, Any]]:
    """One task per history on `actor`; its rows go to out/per_query.jsonl as histories finish.

    The file is then rewritten in a deterministic order (for diffs between runs); `done(history_id,
    n_rows)` is the line printed per finished history. Returns the sorted rows.
    """
    writer = PerQueryWriter(out / "per_query.jsonl")
    rows: list[dict[str, Any]] = []
    with ray_session(ray_cfg):
        ds = map_one_per_task([{"sample": s.model_dump_json()} for s in samples], actor, actor_kwargs, ray_cfg)
        for row in ds.iter_rows():
            got = json.loads(row["rows"])
            writer.write(got)
            rows.extend(got)
            console.print(done(row["history_id"], len(got)))
    writer.close()
    rows.sort(key=lambda r: (r["history_id"], r["visible_sessions"], r["query_id"]))
    writer = PerQueryWriter(out / "per_query.jsonl")
    writer.write(rows)
    writer.close()
    return rows


def run_qa_eval(cfg: QAEvalConfig, console: Console | None = None) -> dict[str, Any]:

    console = console or Console(stderr=True)
    samples, errors = load_answered_samples(cfg, cfg.dataset, console)
    answerer, retries = _engine_payload(cfg.answerer)
    judge, judge_retries = _engine_payload(cfg.judge)
    settings = cfg.settings(max(retries, judge_retries))
    out = Path(cfg.out)
    rows = stream_query_rows(
        samples, QAActor,
        {"memory": cfg.memory.model_dump(mode="json"),
         "memory_bank": str(cfg.memory_bank) if cfg.memory_bank else None,
         "answerer": answerer, "judge": judge, "settings": settings.__dict__,
         "torch_threads": cfg.torch_threads},
        cfg.ray, out, console, lambda history_id, n: f"answered {history_id}: {n} questions")
    summary = summarize_qa(rows, cfg.dataset, cfg.memory.name, extra={
        "f1_stemmer": stemmer_name() if settings.stem else "none",
        "invalid_records": [str(e) for e in errors],
        "config": json.loads(cfg.model_dump_json()),
    })
    write_qa_report(summary, out)
    return summary


def plot_qa(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = list(summary["by_category"])
    series = [("accuracy_lenient", "acc (lenient)"), ("accuracy_strict", "acc (strict)"), ("f1", "F1")]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(cats) + 2), 3.5), dpi=120)
    for i, (key, label) in enumerate(series):
        vals = [summary["by_category"][c].get(key) or 0.0 for c in cats]
        ax.bar([x + i * width for x in range(len(cats))], vals, width, label=label)
    ax.set_xticks([x + width for x in range(len(cats))])
    ax.set_xticklabels(cats, rotation=20, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{summary['memory']} on {summary['dataset']} ({summary['n_queries']} questions)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def write_qa_report(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    plot_qa(summary, out / "qa_by_category.png")
    m, f = summary["metrics"], summary["failures"]
    lines = [
        f"# QA evaluation: {summary['memory']} on {summary['dataset']}", "",
        f"{summary['n_queries']} questions over {summary['n_histories']} histories. "
        f"F1 stemming: {summary.get('f1_stemmer', 'none')}.", "",
        "| metric | value |", "| --- | --- |",
        *[f"| {k} | {_fmt(v)} |" for k, v in m.items()], "",
        "## Failures (excluded from the denominators above)", "",
        f"- answer failures: {f['answer']}",
        f"- judge failures: {f['judge_failures']} (lenient {f['judge_lenient']}, strict {f['judge_strict']})", "",
        "## By category", "",
        "| category | n | acc lenient | acc strict | F1 | BLEU-1 |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for cat, v in summary["by_category"].items():
        lines.append(f"| {cat} | {v['n']} | {_fmt(v['accuracy_lenient'])} | {_fmt(v['accuracy_strict'])} | "
                     f"{_fmt(v['f1'])} | {_fmt(v['bleu1'])} |")
    if summary.get("invalid_records"):
        lines += ["", "## Skipped invalid records", ""] + [f"- {e}" for e in summary["invalid_records"]]
    lines += ["", "![accuracy and F1 by category](qa_by_category.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
