"""End to end: `mnemoray eval qa` on the shared LoCoMo sample, tiny model as answerer and
judge (constrained decoding), real local Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from repo_paths import REPO

pytestmark = pytest.mark.integration


def test_eval_qa_on_locomo_with_tiny_model(tmp_path, data_root, tiny_llm):
    out = tmp_path / "qa"
    llm = tiny_llm  # the shipped tiny config, built in the session's cache folder
    proc = subprocess.run(
        [sys.executable, "-m", "mnemoray", "eval", "qa", "--dataset", "locomo", "--data", str(data_root / "locomo"),
         "--memory", "rag-bm25", "--answerer", str(llm), "--judge", str(llm), "--limit", "1",
         "--max-queries", "4", "--k", "5", "--out", str(out), "ray.workers=1", "ray.num_cpus=2"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "locomo" and metrics["memory"] == "rag-bm25"
    assert metrics["n_queries"] == 4 and metrics["n_histories"] == 1
    assert set(metrics["metrics"]) == {"accuracy_lenient", "accuracy_strict", "f1", "bleu1"}
    assert set(metrics["failures"]) >= {"answer", "judge_lenient", "judge_strict", "judge_failures"}
    rows = [json.loads(line) for line in (out / "per_query.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        assert len(r["retrieved"]) <= 5
        if r["answer_failure"] is None:
            assert 0.0 <= r["f1"] <= 1.0 and 0.0 <= r["bleu1"] <= 1.0
            for which in ("lenient", "strict"):
                assert (r[f"label_{which}"] in ("CORRECT", "WRONG")) != (r[f"judge_failure_{which}"] is not None)
    n_fail = {w: sum(r[f"judge_failure_{w}"] is not None for r in rows) for w in ("lenient", "strict")}
    assert metrics["failures"]["judge_lenient"] == n_fail["lenient"]
    assert metrics["failures"]["answer"] == sum(r["answer_failure"] is not None for r in rows)
    for cat, vals in metrics["by_category"].items():
        assert vals["n"] == sum(r["category"] == cat for r in rows)
    report = (out / "report.md").read_text()
    assert "judge failures" in report and "qa_by_category.png" in report
    assert (out / "qa_by_category.png").stat().st_size > 0
