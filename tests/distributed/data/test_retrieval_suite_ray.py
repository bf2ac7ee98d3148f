"""The Ray Data pipeline and the main suite, in process on one shared local Ray."""

from __future__ import annotations

import json

import pytest

from mnemoray.config import MemoryConfig, RayConfig, RetrievalEvalConfig, RetrievalSuiteConfig, SuiteRun
from mnemoray.distributed.data.retrieval_eval import run_retrieval_eval
from mnemoray.distributed.data.retrieval_suite import run_suite
from mnemoray.eval.retrieval import evaluate_sample
from mnemoray.loaders import load_dataset
from mnemoray.memory import build_memory

pytestmark = pytest.mark.integration


def test_ray_pipeline_matches_plain_python(ray_local, tmp_path, data_root):
    cfg = RetrievalEvalConfig(dataset="locomo", data=data_root / "locomo", memory=MemoryConfig(name="rag-bm25"),
                              out=tmp_path / "bm25", ray=RayConfig(workers=2))
    summary = run_retrieval_eval(cfg)
    samples, _ = load_dataset("locomo", data_root / "locomo")
    plain = [r for s in samples for r in evaluate_sample(s, lambda: build_memory(cfg.memory), cfg.ks)]
    ray_rows = [json.loads(x) for x in (tmp_path / "bm25" / "per_query.jsonl").read_text().splitlines()]
    assert sorted(r["query_id"] for r in ray_rows) == sorted(r["query_id"] for r in plain)
    by_id = {r["query_id"]: r for r in plain}
    assert all(r["retrieved"] == by_id[r["query_id"]]["retrieved"] for r in ray_rows)
    assert summary["n_queries"] == len(plain)
    assert ray_local.is_initialized()  # the pipeline joined the running Ray and left it up


def test_suite_prints_side_by_side_table(ray_local, tmp_path, data_root, capsys):
    from rich.console import Console

    cfg = RetrievalSuiteConfig(
        runs=[SuiteRun(dataset="locomo", data=data_root / "locomo", memory_overrides=["chunking=session"])],
        memories=["rag-bm25", "rag-dense"], out=tmp_path / "suite", ray=RayConfig(workers=2))
    dirs = run_suite(cfg, Console(width=200))
    text = capsys.readouterr().out
    assert "rag-bm25" in text and "rag-dense" in text
    for d in dirs:
        m = json.loads((d / "metrics.json").read_text())
        assert m["config"]["memory"]["chunking"] == "session"
        assert {p.name for p in d.iterdir()} >= {"metrics.json", "per_query.jsonl", "report.md", "recall_at_k.png"}
    assert "| locomo | rag-dense |" in (tmp_path / "suite" / "comparison.md").read_text()
