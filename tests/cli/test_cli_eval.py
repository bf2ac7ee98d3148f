"""End to end: the CLI on real local Ray over the shared LoCoMo sample, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from repo_paths import REPO

pytestmark = pytest.mark.integration



def mnemoray(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mnemoray", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=900)


def test_eval_retrieval_on_locomo(tmp_path, data_root):
    out = tmp_path / "run"
    proc = mnemoray("eval", "retrieval", "--dataset", "locomo", "--data", data_root / "locomo",
                    "--memory", "rag-hybrid", "--k", "5,10,20", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "locomo" and metrics["memory"] == "rag-hybrid"
    assert set(metrics["metrics"]) == {f"{m}@{k}" for m in ("recall_any", "recall_all", "ndcg") for k in (5, 10, 20)}
    n_with_evidence = 197 + 105
    assert metrics["n_queries"] == n_with_evidence
    assert set(metrics["by_category"]) == {"multi-hop", "temporal", "open-domain", "single-hop", "adversarial"}
    assert metrics["metrics"]["recall_any@10"] > 0.5  # a working retriever on real data, far above chance
    for k in ("recall_any", "recall_all"):
        assert metrics["metrics"][f"{k}@5"] <= metrics["metrics"][f"{k}@10"] <= metrics["metrics"][f"{k}@20"]
    lines = (out / "per_query.jsonl").read_text().splitlines()
    assert len(lines) == n_with_evidence
    row = json.loads(lines[0])
    assert {"query", "gold", "retrieved", "hits", "metrics"} <= set(row)
    assert set(row["hits"]) <= set(row["gold"])
    assert (out / "report.md").read_text().count("recall_at_k.png") == 1
    assert (out / "recall_at_k.png").stat().st_size > 1000
    assert "rag-hybrid" in proc.stdout and "recall_all@10" in proc.stdout

    cmp = mnemoray("eval", "compare", out, out)
    assert cmp.returncode == 0 and cmp.stdout.count("rag-hybrid") == 2


def test_truncated_file_one_line_error_exit_2(tmp_path, data_root):
    text = (data_root / "locomo" / "locomo10_sample.json").read_text()
    bad = tmp_path / "cut.json"
    bad.write_text(text[:5000])
    proc = mnemoray("eval", "retrieval", "--dataset", "locomo", "--data", bad, "--memory", "rag-bm25",
                    "--out", tmp_path / "o")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "cut.json" in errors[0] and "truncated" in errors[0]


def test_wrong_schema_error_and_skip_invalid(tmp_path, data_root):
    data = json.loads((data_root / "locomo" / "locomo10_sample.json").read_text())
    data[0]["qa"][4]["category"] = "not-a-number"
    bad = tmp_path / "schema.json"
    bad.write_text(json.dumps(data))
    proc = mnemoray("data", "validate", "--dataset", "locomo", "--data", bad)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "record conv-26" in proc.stderr and "field 'qa.4.category'" in proc.stderr

    out = tmp_path / "skip"
    proc = mnemoray("eval", "retrieval", "--dataset", "locomo", "--data", bad, "--memory", "rag-bm25",
                    "--out", out, "--skip-invalid")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_histories"] == 1 and len(metrics["invalid_records"]) == 1
    assert "qa.4.category" in (out / "report.md").read_text()


def test_bad_config_value_is_named(tmp_path, data_root):
    proc = mnemoray("eval", "retrieval", "--dataset", "locomo", "--data", data_root / "locomo",
                    "--memory", "rag-magic", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "memory.name" in proc.stderr and "Traceback" not in proc.stderr


def test_main_job_command_with_overrides(tmp_path, data_root):
    """The README's main job path (`eval suite` on the shipped config), cut to BM25 on LoCoMo."""
    out = tmp_path / "main"
    proc = mnemoray("eval", "suite", "--config", "configs/eval/retrieval_local.yaml", "--data", data_root,
                    "--out", out, "memories=[rag-bm25]", "runs=[{dataset: locomo, data: '${data_root}/locomo'}]",
                    cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rag-bm25" in proc.stdout and "recall_all@10" in proc.stdout
    assert (out / "locomo" / "rag-bm25" / "metrics.json").is_file()
    assert (out / "comparison.md").read_text().count("| locomo | rag-bm25 |") == 1


def test_cluster_job_config_validates_and_bad_config_exits_2(tmp_path):
    from mnemoray.config import RetrievalSuiteConfig, load_config

    cfg = load_config(RetrievalSuiteConfig, REPO / "configs/eval/retrieval_cluster.yaml")
    assert cfg.memory.index.device == "cuda" and cfg.ray.gpus_per_worker > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: []\nmemories: [rag-nope]\n")
    proc = subprocess.run([sys.executable, str(REPO / "jobs/evaluate_retrieval.py"), "--config", str(bad)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "memories" in proc.stderr and "Traceback" not in proc.stderr


def test_llm_memory_needs_a_bank_then_scores_it(tmp_path, data_root):
    proc = mnemoray("eval", "retrieval", "--dataset", "locomo", "--data", data_root / "locomo", "--memory", "summary",
                    "--out", tmp_path / "nobank")
    assert proc.returncode == 2 and "--memory-bank" in proc.stderr and "Traceback" not in proc.stderr

    built = tmp_path / "built"
    proc = mnemoray("memory", "build", "--config", "configs/memory/summary_local.yaml", "--out", built,
                    "--limit", "1", "--sessions", "2", cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "scored"
    proc = mnemoray("eval", "retrieval", "--dataset", "locomo", "--data", data_root / "locomo", "--memory", "summary",
                    "--memory-bank", built / "banks", "--limit", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["memory"] == "summary" and metrics["n_histories"] == 1
    rows = [json.loads(x) for x in (out / "per_query.jsonl").read_text().splitlines()]
    # provenance of the built bank only points at the two sessions that were read
    assert all(ev.split(":")[0] in {"D1", "D2"} for r in rows for ids in r["retrieved_evidence"] for ev in ids)
