"""The main job today: several memories on several datasets on one Ray instance, one table."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from mnemoray.config import MemoryConfig, RetrievalEvalConfig, RetrievalSuiteConfig, apply_overrides, validate
from mnemoray.distributed.data.retrieval_eval import run_retrieval_eval
from mnemoray.distributed.runtime import ray_session
from mnemoray.eval.compare import comparison_table, load_runs, markdown_table


def run_suite(cfg: RetrievalSuiteConfig, console: Console) -> list[Path]:
    dirs: list[Path] = []
    with ray_session(cfg.ray):
        for run in cfg.runs:
            for memory in cfg.memories:
                out = Path(cfg.out) / run.dataset / memory
                settings = apply_overrides(cfg.memory.model_dump(mode="json") | {"name": memory}, run.memory_overrides)
                eval_cfg = RetrievalEvalConfig(
                    dataset=run.dataset,
                    data=run.data,
                    memory=validate(MemoryConfig, settings, f"runs[{run.dataset}].memory_overrides"),
                    ks=cfg.ks,
                    overfetch=cfg.overfetch,
                    out=out,
                    skip_invalid=cfg.skip_invalid,
                    limit=cfg.limit,
                    ray=cfg.ray,
                )
                run_retrieval_eval(eval_cfg)
                dirs.append(out)
    runs = load_runs(dirs)
    console.print(comparison_table(runs))
    (Path(cfg.out) / "comparison.md").write_text(markdown_table(runs) + "\n", encoding="utf-8")
    console.print(f"per-run outputs under {cfg.out}/<dataset>/<memory>/; table in {cfg.out}/comparison.md")
    return dirs
