"""End to end through the CLI on real local Ray: `eval rolememo` with real MiniLM embeddings,
`eval roleplay` and `eval realmem-judge` with the tiny model (constrained JSON decoding) as
responder/answerer and judge, and `eval compare` over the runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnemoray.cli.main import app
from repo_paths import REPO

pytestmark = pytest.mark.integration



def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "per_query.jsonl").read_text().splitlines()]


def expected_recall(data: Path, embedder, fact_threshold=0.60, insight_threshold=0.65):
    """Recall@10 recomputed without the harness: every history here has <= 10 pair chunks before each
    query, so the top 10 of any retriever is all of them."""
    from mnemoray.loaders import load_dataset
    from mnemoray.memory.chunking import chunk_session

    samples, _ = load_dataset("rolememo", data)
    per_persona: dict[str, list[int]] = {}
    for s in samples:
        for q in s.queries:
            items = [it.text for sess in s.history.sessions[: q.visible_sessions] for it in chunk_session(sess)]
            assert len(items) <= 10
            item_vecs = embedder.encode(items).astype(np.float64)
            frag = embedder.encode(q.metadata["core_fragments"]).astype(np.float64) @ item_vecs.T
            ins = embedder.encode([q.answer]).astype(np.float64) @ item_vecs.T
            counts = per_persona.setdefault(s.history.persona.id, [0, 0, 0, 0])
            counts[0] += int((frag.max(axis=1) >= fact_threshold).sum())
            counts[1] += len(q.metadata["core_fragments"])
            counts[2] += int((ins.max(axis=1) >= insight_threshold).sum())
            counts[3] += 1
    return per_persona


def test_eval_rolememo_rag_dense_matches_an_independent_recomputation(rolememo_data, ray_local, embedder, tmp_path):
    out = tmp_path / "dense"
    result = invoke("eval", "rolememo", "--config", REPO / "configs/eval/rolememo_local.yaml", "--data", rolememo_data,
                    "--memory", "rag-dense", "--out", out, "ray.workers=1")
    assert "fact_recall@10" in result.output and "pooled: fact" in result.output
    m = json.loads((out / "metrics.json").read_text())
    assert (m["eval"], m["dataset"], m["memory"], m["k"]) == ("rolememo", "rolememo", "rag-dense", 10)
    assert m["thresholds"] == {"fact": 0.60, "insight": 0.65}
    assert m["n_queries"] == 3 and m["n_histories"] == 2
    want = expected_recall(rolememo_data, embedder)
    hits = {
        p: (v["fact_hits"], v["fact_gold"], v["insight_hits"], v["insight_gold"]) for p, v in m["by_persona"].items()
    }
    assert hits == {p: tuple(c) for p, c in want.items()}
    fact_hits, fact_gold = sum(c[0] for c in want.values()), sum(c[1] for c in want.values())
    assert m["pooled"]["fact"] == {"hits": fact_hits, "gold": fact_gold} and fact_gold == 6
    assert m["metrics"]["fact_recall@10"] == pytest.approx(fact_hits / fact_gold)
    assert m["metrics"]["fact_recall@10"] > 0.5  # the fragments are said verbatim in the history
    assert m["by_persona"]["p-maya"]["name"] == "Maya"
    rows = read_rows(out)
    assert [r["query_id"] for r in rows] == ["q-maya-1", "q-tom-1", "q-tom-2"]
    for r in rows:
        assert len(r["retrieved"]) <= 10 and len(r["fact"]) == 2 and len(r["insight"]) == 1
        assert all(-1.0 <= g["max_similarity"] <= 1.0 + 1e-6 and g["hit"] == (g["max_similarity"] >= 0.60)
                   for g in r["fact"])
        assert not any(sid.startswith("p-tom-q-tom-2") for sid in r["retrieved"])  # no future session
    assert "Recall@10 Insight" in (out / "report.md").read_text()
    assert (out / "recall_by_persona.png").stat().st_size > 1000


def test_eval_rolememo_scores_a_memory_bank_and_thresholds_reach_the_workers(rolememo_data, ray_local, tmp_path):
    from mnemoray.memory.bank import bank_rows, write_bank
    from mnemoray.records import MemoryItem

    bank = tmp_path / "bank"
    items = [  # a DualMem-style bank for Tom only: one insight worded exactly like q-tom-1's gold insight
        MemoryItem(id="i1", kind="insight", text="Tom trusts slow, hands-on craft more than modern shortcuts.",
                   session_id="p-tom-dlg0"),
        MemoryItem(id="f1", kind="fact", text="Tom hand-sanded a boat hull for three months.", session_id="p-tom-dlg0"),
    ]
    write_bank(bank_rows("h-p-tom", "dualmem", items), bank / "part-0.parquet")
    out = tmp_path / "bank_run"
    invoke("eval", "rolememo", "--data", rolememo_data, "--memory", "dualmem", "--memory-bank", bank,
           "--insight-threshold", "0.99", "--fact-threshold", "0.3", "--out", out, "ray.workers=1", "ray.num_cpus=2")
    m = json.loads((out / "metrics.json").read_text())
    assert m["thresholds"] == {"fact": 0.3, "insight": 0.99}
    rows = {r["query_id"]: r for r in read_rows(out)}
    assert rows["q-maya-1"]["retrieved"] == []  # nothing in the bank for Maya: misses, not skipped
    assert all(g["max_similarity"] is None and not g["hit"] for g in rows["q-maya-1"]["fact"])
    assert m["by_persona"]["p-maya"]["fact_gold"] == 2 and m["by_persona"]["p-maya"]["fact_recall@10"] == 0.0
    assert rows["q-tom-1"]["insight"][0]["hit"] and rows["q-tom-1"]["insight"][0]["best_item"] == "i1"
    assert rows["q-tom-1"]["insight"][0]["max_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert m["pooled"]["insight"]["gold"] == 3 and m["pooled"]["insight"]["hits"] >= 1

    dense = tmp_path / "dense"
    invoke("eval", "rolememo", "--data", rolememo_data, "--memory", "rag-bm25", "--out", dense, "ray.workers=1")
    cmp = invoke("eval", "compare", out, dense)
    assert "dualmem" in cmp.output and "rag-bm25" in cmp.output and "insight_recall@10" in cmp.output


def test_eval_roleplay_with_the_tiny_model(rolememo_data, tiny_llm, ray_local, tmp_path):
    out = tmp_path / "roleplay"
    result = invoke("eval", "roleplay", "--config", REPO / "configs/eval/roleplay_local.yaml", "--data", rolememo_data,
                    "--memory", "rag-bm25", "--responder", tiny_llm, "--judge", tiny_llm, "--judge-runs", "3",
                    "--out", out, "ray.workers=1")
    assert "character_consistency" in result.output and "judge runs scored" in result.output
    m = json.loads((out / "metrics.json").read_text())
    assert (m["eval"], m["dataset"], m["n_queries"], m["judge_runs"]) == ("roleplay", "rolememo", 3, 3)
    assert m["judge_seeds"] == [0, 1, 2]
    rows = read_rows(out)
    assert len(rows) == 3
    answered = [r for r in rows if r["response_failure"] is None]
    assert m["failures"]["response"] == 3 - len(answered)
    for r in answered:
        assert isinstance(r["response"], str) and [run["seed"] for run in r["judge_runs"]] == [0, 1, 2]
        for run in r["judge_runs"]:
            for name, v in run["scores"].items():
                assert (v is None) == (name in run["failures"])
                assert v is None or 0 <= v <= 5
    for name, d in m["dimensions"].items():
        assert d["scale"] == [0, 5] and d["n_items"] == 3
        assert d["n_scored"] + d["n_failed"] + d["n_not_asked"] == 3 * len(answered)
        assert d["n_scored"] == sum(run["scores"][name] is not None for r in rows for run in r["judge_runs"])
        assert d["n_items_scored"] + d["n_items_unscored"] == 3
        assert d["mean"] is None or 0 <= d["mean"] <= 5
        assert d["mean"] == m["metrics"][name]
    assert m["failures"]["judge_calls_total"] == 3 * len(answered)
    assert set(m["by_persona"]) == {"p-maya", "p-tom"}
    report = (out / "report.md").read_text()
    assert "runs failed" in report and "roleplay_scores.png" in report
    assert (out / "roleplay_scores.png").stat().st_size > 1000


def test_eval_realmem_judge_on_a_realmem_slice_with_the_tiny_model(data_root, tiny_llm, ray_local, tmp_path):
    out = tmp_path / "realmem"
    invoke("eval", "realmem-judge", "--config", REPO / "configs/eval/realmem_judge_local.yaml",
           "--data", data_root / "realmem" / "Kenta_Tanaka_dialogues_256k.json", "--memory", "rag-bm25",
           "--answerer", tiny_llm, "--judge", tiny_llm, "--max-queries", "3", "--judge-runs", "2", "--out", out,
           "ray.workers=1")
    m = json.loads((out / "metrics.json").read_text())
    assert (m["eval"], m["dataset"], m["n_queries"], m["n_histories"], m["judge_runs"]) == (
        "realmem-judge", "realmem", 3, 1, 2)
    rows = read_rows(out)
    assert [r["query_id"] for r in rows] == sorted(r["query_id"] for r in rows) and len(rows) == 3
    raw = json.loads((data_root / "realmem" / "Kenta_Tanaka_dialogues_256k.json").read_text())
    gold = {t["query_id"]: s["dialogue_turns"][i + 1]["memory_used"] for s in raw["dialogues"]
            for i, t in enumerate(s["dialogue_turns"]) if t.get("is_query")}
    scales = {"qa_score": 3, "memory_recall": 1, "memory_helpfulness": 2}
    for r in rows:
        assert len(r["gold_memory"]) == len(gold[r["query_id"]]) > 0  # `memory_used` reached the judge
        assert 0 <= r["evidence_recall"] <= 1 and len(r["retrieved"]) <= 10
        assert len(r["judge_runs"]) == 2 and [run["seed"] for run in r["judge_runs"]] == [0, 1]
        for run in r["judge_runs"]:
            for name, v in run["scores"].items():
                assert v is None or 0 <= v <= scales[name]
                assert v is not None or name in run["failures"] or (name == "qa_score" and r["answer_failure"])
            if run["covered"] is not None and "memory_recall" not in run["failures"]:
                assert run["scores"]["memory_recall"] == pytest.approx(sum(run["covered"]) / len(r["gold_memory"]))
    for name, d in m["dimensions"].items():
        assert d["scale"] == [0, scales[name]]
        assert d["n_scored"] + d["n_failed"] + d["n_not_asked"] == 2 * 3
        assert d["n_failed"] == sum(name in run["failures"] for r in rows for run in r["judge_runs"])
        assert d["mean"] is None or 0 <= d["mean"] <= scales[name]
    assert m["failures"]["answer"] == sum(r["answer_failure"] is not None for r in rows)
    assert sum(m["qa_score_distribution"].values()) == m["dimensions"]["qa_score"]["n_items_scored"]
    assert 0 <= m["metrics"]["evidence_recall@10"] <= 1
    assert "memory_helpfulness" in (out / "report.md").read_text()
    assert (out / "realmem_scores.png").stat().st_size > 1000


def test_llm_memory_without_a_bank_is_a_one_line_error(rolememo_data, tmp_path):
    result = CliRunner().invoke(app, ["eval", "rolememo", "--data", str(rolememo_data), "--memory", "dualmem",
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--memory-bank" in result.output


def test_shipped_eval_configs_validate():
    from mnemoray.config import RealMemJudgeConfig, RoleMemoRecallConfig, RolePlayEvalConfig, load_config
    from mnemoray.config.llm import load_engine_config
    from mnemoray.distributed.data.qa_eval import QAEvalConfig

    configs = {"qa": QAEvalConfig, "rolememo": RoleMemoRecallConfig, "roleplay": RolePlayEvalConfig,
               "realmem_judge": RealMemJudgeConfig}
    for name, model in configs.items():
        local = load_config(model, REPO / f"configs/eval/{name}_local.yaml")
        cluster = load_config(model, REPO / f"configs/eval/{name}_cluster.yaml")
        assert local.ray.gpus_per_worker == 0 and cluster.ray.gpus_per_worker > 0
        for role in ("answerer", "responder", "judge"):
            if hasattr(local, role):
                assert load_engine_config(REPO / getattr(local, role)).engine == "hf"  # offline tiny model
                assert load_engine_config(REPO / getattr(cluster, role)).engine in ("vllm", "openai")
    assert load_config(QAEvalConfig, REPO / "configs/eval/qa_cluster.yaml").dataset == "longmemeval"
