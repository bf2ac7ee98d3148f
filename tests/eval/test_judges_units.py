"""Unit tests of the judge evaluations: metric values worked out by hand, and the control flow of
judge parsing / retries / failure counting with a scripted engine (no model)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mnemoray.eval.judging import Dimension, combine_runs, score_run, seeded_runs, summarize_dimensions
from mnemoray.eval.realmem_judge import (
    GOLD_KEY,
    RealMemJudgeSettings,
    evaluate_realmem_sample,
    summarize_realmem,
)
from mnemoray.eval.rolememo_recall import (
    RecallSettings,
    evaluate_rolememo_sample,
    is_hit,
    max_similarities,
    pooled_recall,
    summarize_rolememo,
)
from mnemoray.eval.roleplay import DIMENSIONS as RP_DIMS
from mnemoray.eval.roleplay import RoleplaySettings, evaluate_roleplay_sample, summarize_roleplay
from mnemoray.llm.types import ChatMessage, ChatRequest, ChatResult
from mnemoray.records import EvalSample, EvidenceQuery, History, Persona, Session, Turn


def _unit(angle_cos: float) -> np.ndarray:
    return np.array([angle_cos, math.sqrt(1 - angle_cos ** 2)])


# --- Recall@10 Fact / Insight ---

def test_thresholds_are_inclusive_at_the_boundary():
    gold = np.array([[1.0, 0.0]])
    exactly = max_similarities(gold, np.array([_unit(0.60)]))[0][0]
    assert exactly == pytest.approx(0.60, abs=1e-12)
    assert is_hit(exactly, 0.60)  # >= 0.60 is a fact hit
    assert not is_hit(np.nextafter(0.60, 0), 0.60)  # the float just below is not
    at_insight = max_similarities(gold, np.array([_unit(0.65)]))[0][0]
    assert is_hit(at_insight, 0.65) and not is_hit(0.6499999, 0.65)
    assert is_hit(0.62, 0.60) and not is_hit(0.62, 0.65)  # a fact hit can be an insight miss
    assert not is_hit(None, 0.0)  # nothing retrieved is a miss, not a skip


def test_max_similarity_takes_the_best_item_of_the_top_k():
    gold = np.array([[1.0, 0.0], [0.0, 1.0]])
    items = np.array([_unit(0.2), _unit(0.7), [-1.0, 0.0]])
    (s0, j0), (s1, j1) = max_similarities(gold, items)
    assert (s0, j0) == (pytest.approx(0.7), 1)  # gold 0: cos 0.2, 0.7, -1 -> 0.7 (item 1)
    assert (s1, j1) == (pytest.approx(math.sqrt(1 - 0.04)), 0)  # gold 1: 0.98, 0.71, 0 -> item 0
    assert max_similarities(gold, np.zeros((0, 2))) == [(None, None), (None, None)]


def _recall_row(persona, fact_hits, insight_hit):
    return {"persona_id": persona, "persona_name": persona, "history_id": f"h-{persona}", "category": "c",
            "fact": [{"hit": h} for h in fact_hits], "insight": [{"hit": insight_hit}]}


def test_pooled_recall_differs_from_mean_of_ratios_and_per_persona_pools_within():
    rows = [_recall_row("a", [True, True], False), _recall_row("a", [False, False, False, True], True),
            _recall_row("b", [False], False)]
    # pooled over all 7 fragments: 3 hits -> 3/7 (a per-query mean would be (1 + 1/4 + 0) / 3 = 5/12)
    assert pooled_recall(rows, "fact") == {"recall": 3 / 7, "hits": 3, "gold": 7}
    assert pooled_recall(rows, "insight")["recall"] == pytest.approx(1 / 3)
    s = summarize_rolememo(rows, "m", RecallSettings(k=10))
    assert s["metrics"] == {"fact_recall@10": pytest.approx(3 / 7), "insight_recall@10": pytest.approx(1 / 3)}
    assert s["by_persona"]["a"]["fact_recall@10"] == pytest.approx(3 / 6)
    assert s["by_persona"]["a"]["insight_recall@10"] == pytest.approx(1 / 2)
    assert s["by_persona"]["b"]["fact_recall@10"] == 0.0 and s["by_persona"]["b"]["fact_gold"] == 1
    assert sum(p["fact_hits"] for p in s["by_persona"].values()) == s["pooled"]["fact"]["hits"]
    assert pooled_recall([], "fact")["recall"] is None


class AxisEncoder:
    """Deterministic 'embeddings' for a control-flow test: texts map to fixed unit vectors."""

    def __init__(self, table):
        self.table = table

    def encode(self, texts):
        return np.array([self.table[t] for t in texts], dtype=np.float32)


def test_recall_uses_only_the_top_k_and_only_visible_sessions(list_memory):
    sessions = [Session(id=f"S{i}", timestamp=f"2024-01-0{i + 1}", turns=[Turn(id=f"S{i}#0", speaker="user",
                                                                             text=f"note {i}", index=0)])
                for i in range(4)]
    q = EvidenceQuery(id="q", history_id="h", text="?", gold_ids=[], gold_level="turn", category="c",
                      answer="insight", visible_sessions=3, metadata={"core_fragments": ["f0", "f1"]})
    sample = EvalSample(history=History(id="h", dataset="rolememo", persona=Persona(id="p", name="P"),
                                        sessions=sessions), queries=[q])
    enc = AxisEncoder({"f0": _unit(0.61), "f1": [1.0, 0.0], "insight": _unit(0.64),
                       "note 0": [1.0, 0.0], "note 1": [0.0, 1.0], "note 2": [1.0, 0.0], "note 3": [1.0, 0.0]})
    # k = 2: items note 0, note 1. f0: max(0.61, 0.79) -> hit; f1: max(1, 0) -> hit; insight: max(0.64, 0.77) -> hit
    rows = evaluate_rolememo_sample(sample, list_memory, enc, RecallSettings(k=2))
    assert rows[0]["retrieved"] == ["S0", "S1"]
    assert [g["hit"] for g in rows[0]["fact"]] == [True, True] and rows[0]["insight"][0]["hit"]
    # k = 1: only note 0 -> f0 0.61 (hit at 0.60), f1 1.0, insight 0.64 (miss at 0.65)
    rows = evaluate_rolememo_sample(sample, list_memory, enc, RecallSettings(k=1))
    assert [g["max_similarity"] for g in rows[0]["fact"]] == [pytest.approx(0.61, abs=1e-6), pytest.approx(1.0)]
    assert rows[0]["fact_hits"] == 2 and rows[0]["insight_hits"] == 0
    assert rows[0]["insight"][0]["best_item"] == "S0"
    rows = evaluate_rolememo_sample(sample, list_memory, enc, RecallSettings(k=1, fact_threshold=0.62))
    assert [g["hit"] for g in rows[0]["fact"]] == [False, True]  # the threshold is configurable


# --- judge runs: clipping, averaging, failures ---

def _result(parsed=None, text="", error=None, kind=None):
    return ChatResult(id="x", text=text, parsed=parsed, error=error, error_kind=kind)


def test_clipping_of_out_of_range_scores_0_3_and_0_2():
    qa, helpful = Dimension("qa_score", 0, 3), Dimension("memory_helpfulness", 0, 2)
    assert qa.clip(4) == (3.0, True) and qa.clip(-1) == (0.0, True) and qa.clip(2) == (2.0, False)
    assert helpful.clip(7) == (2.0, True) and helpful.clip(2) == (2.0, False) and helpful.clip(0) == (0.0, False)
    run = score_run(_result({"qa_score": 9, "memory_helpfulness": -3}), (qa, helpful))
    assert run["scores"] == {"qa_score": 3.0, "memory_helpfulness": 0.0}
    assert sorted(run["clipped"]) == ["memory_helpfulness", "qa_score"] and run["failures"] == {}


def test_non_numeric_or_failed_output_is_a_failure_not_zero():
    dims = (Dimension("a", 0, 5), Dimension("b", 0, 5))
    run = score_run(_result({"a": "high", "b": 4}), dims)
    assert run["scores"] == {"a": None, "b": 4.0} and run["failures"]["a"]["kind"] == "schema"
    run = score_run(_result({"a": True, "b": 4}), dims)  # a boolean is not a score
    assert run["scores"]["a"] is None
    run = score_run(_result(text="garbage", error="no JSON", kind="parse"), dims)
    assert run["scores"] == {"a": None, "b": None}
    assert run["failures"]["a"] == {"kind": "parse", "error": "no JSON", "raw": "garbage"}


def test_average_over_three_runs_with_a_failed_run():
    dims = (Dimension("a", 0, 5), Dimension("b", 0, 5))
    runs = [score_run(_result({"a": 4, "b": 1}), dims), score_run(_result(text="?", error="bad", kind="parse"), dims),
            score_run(_result({"a": 2, "b": 9}), dims)]
    item = combine_runs(runs, dims)
    assert item["a"] == 3.0 and item["a_n_scored"] == 2 and item["a_n_failed"] == 1  # (4 + 2) / 2, not (4+0+2)/3
    assert item["b"] == 3.0  # (1 + 5 clipped) / 2
    rows = [{"judge_runs": runs, "scores": item},
            {"judge_runs": [runs[1]] * 3, "scores": combine_runs([runs[1]] * 3, dims)},  # every run failed
            {"judge_runs": [], "scores": None}]  # never judged (e.g. the reply failed)
    s = summarize_dimensions(rows, dims)
    assert s["a"]["mean"] == 3.0  # the all-failed item is left out, not counted as 0
    assert (s["a"]["n_items"], s["a"]["n_items_scored"], s["a"]["n_items_unscored"]) == (3, 1, 2)
    assert (s["a"]["n_scored"], s["a"]["n_failed"], s["a"]["n_not_asked"]) == (2, 4, 0)
    assert s["b"]["n_clipped"] == 1 and s["a"]["failure_kinds"] == {"parse": 4}


def test_seeded_runs_have_distinct_seeds_and_ids():
    req = ChatRequest(messages=[ChatMessage(role="user", content="rate")], metadata={"call": "judge"})
    runs = seeded_runs(req, 3, seed=10, temperature=0.7)
    assert [r.seed for r in runs] == [10, 11, 12] and len({r.id for r in runs}) == 3
    assert all(r.params.temperature == 0.7 and r.metadata["run"] == i for i, r in enumerate(runs))


# --- role-play control flow ---

def _rp_sample():
    sessions = [Session(id=f"S{i}", timestamp=f"2024-01-0{i + 1}",
                        turns=[Turn(id=f"S{i}#0", speaker="user", text=f"I like hiking {i}", index=0)])
                for i in range(2)]
    queries = [EvidenceQuery(id=f"q{i}", history_id="h", text=f"question {i}?", gold_ids=[], gold_level="turn",
                             category="values", answer="loves the outdoors", visible_sessions=2,
                             metadata={"core_fragments": ["hiking 0", "hiking 1"]}) for i in range(2)]
    persona = Persona(id="p", name="Ada", description="A park ranger.")
    return EvalSample(history=History(id="h", dataset="rolememo", persona=persona, sessions=sessions), queries=queries)


def _rp_verdict(scores):
    return json.dumps({"reason": "ok", **dict(zip([d.name for d in RP_DIMS], scores))})


def test_roleplay_three_seeded_runs_averaged_and_invalid_judge_output_counted(scripted_engine, list_memory):
    responder = scripted_engine(lambda r: '{"response": "I hike every weekend, as you know."}')

    def judge_script(r):
        q = "question 0" in r.messages[1].content
        if r.seed == 1 and q:
            return "I refuse to give JSON"  # run 1 of q0 never parses
        if r.seed == 2 and q:
            return _rp_verdict([5, 9, 4, 3])  # 9 is out of range: clipped to 5
        return _rp_verdict([3, 3, 2, 1])

    judge = scripted_engine(judge_script)
    s = RoleplaySettings(judge_runs=3, judge_seed=0, max_retries=1)
    rows = evaluate_roleplay_sample(_rp_sample(), list_memory, responder, judge, s)
    assert "Ada" in responder.seen[0].messages[1].content and "I like hiking 0" in responder.seen[0].messages[1].content
    assert len(judge.seen) == 2 * 3 + 1  # 6 runs, and one retry of the unparsable run
    assert sorted({r.seed for r in judge.seen}) == [0, 1, 2]
    q0 = rows[0]
    assert [run["seed"] for run in q0["judge_runs"]] == [0, 1, 2]
    assert q0["judge_runs"][1]["failures"]["logical_quality"]["kind"] == "parse"
    assert q0["judge_runs"][1]["failures"]["logical_quality"]["raw"] == "I refuse to give JSON"
    assert q0["scores"]["information_richness"] == 4.0  # (3 + 5) / 2
    assert q0["scores"]["logical_quality"] == 4.0  # (3 + 5 clipped) / 2
    assert q0["scores"]["information_richness_n_failed"] == 1
    summary = summarize_roleplay(rows, "fake", s)
    assert summary["metrics"]["information_richness"] == pytest.approx((4.0 + 3.0) / 2)
    dim = summary["dimensions"]["logical_quality"]
    assert (dim["n_scored"], dim["n_failed"], dim["n_clipped"]) == (5, 1, 1)
    assert dim["n_scored"] + dim["n_failed"] + dim["n_not_asked"] == len(rows) * s.judge_runs
    assert summary["failures"]["judge_calls"] == 1 and summary["failures"]["judge_calls_total"] == 6
    assert summary["by_run"][1]["information_richness"] == 3.0  # run 1 scored q1 only
    assert summary["metrics"]["roleplay_mean"] == pytest.approx(
        sum(summary["metrics"][d.name] for d in RP_DIMS) / 4)


def test_roleplay_failed_response_is_counted_and_not_judged(scripted_engine, list_memory):
    responder = scripted_engine(lambda r: '{"reply": "wrong key"}')
    judge = scripted_engine(lambda r: _rp_verdict([5, 5, 5, 5]))
    s = RoleplaySettings(judge_runs=3, max_retries=0)
    rows = evaluate_roleplay_sample(_rp_sample(), list_memory, responder, judge, s)
    assert judge.seen == []
    assert all(r["response_failure"]["kind"] == "schema" and r["scores"] is None for r in rows)
    summary = summarize_roleplay(rows, "fake", s)
    assert summary["metrics"]["information_richness"] is None  # n/a, not 0
    assert summary["failures"]["response"] == 2 and summary["failures"]["items_unscored"] == 2
    assert summary["dimensions"]["information_richness"]["n_items_unscored"] == 2


# --- RealMem control flow ---

def _rm_sample(gold_points):
    sessions = [Session(id=f"U{i}", timestamp=f"2024-02-0{i + 1}",
                        turns=[Turn(id=f"U{i}#0", speaker="User", text=f"plan step {i}", index=0)]) for i in range(3)]
    queries = [EvidenceQuery(id=f"Q-{i}", history_id="h", text=f"what next {i}?", gold_ids=["U0", "U2"],
                             gold_level="session", category="Dynamic", answer="Do step 2 next.", visible_sessions=2,
                             metadata={GOLD_KEY: pts}) for i, pts in enumerate(gold_points)]
    return EvalSample(history=History(id="h", dataset="realmem", sessions=sessions), queries=queries)


def test_realmem_scores_recall_from_verdicts_and_clips_out_of_range(scripted_engine, list_memory):
    gold = [[{"session_uuid": "U0", "content": "plan step 0"}, {"session_uuid": "U2", "content": "plan step 2"}],
            [{"session_uuid": "U1", "content": "plan step 1"}], []]
    answerer = scripted_engine(lambda r: '{"answer": "Do step 2."}')

    def judge_script(r):
        if r.metadata["call"] == "judge_qa":
            return '{"reason": "uses it", "score": 5}' if "what next 0" in r.messages[1].content else \
                '{"reason": "generic", "score": 1}'
        if r.metadata["n_gold"] == 2:
            return '{"covered": [true, false], "reason": "half", "helpfulness": 1}'
        return '{"covered": [true, true, true], "reason": "too many", "helpfulness": 2}'  # wrong length

    judge = scripted_engine(judge_script)
    s = RealMemJudgeSettings(judge_runs=1, max_retries=0)
    rows = evaluate_realmem_sample(_rm_sample(gold), list_memory, answerer, judge, s)
    calls = [r.metadata["call"] for r in judge.seen]
    assert calls.count("judge_qa") == 2 and calls.count("judge_memory") == 2  # the gold-less query is not judged
    assert "plan step 2" not in answerer.seen[0].messages[1].content  # only the 2 visible sessions
    r0, r1, r2 = rows
    assert r0["scores"]["qa_score"] == 3.0 and r0["judge_runs"][0]["clipped"] == ["qa_score"]  # 5 -> 3
    assert r0["scores"]["memory_recall"] == 0.5 and r0["scores"]["memory_helpfulness"] == 1.0
    assert r0["judge_runs"][0]["covered"] == [True, False]
    assert r0["evidence_recall"] == 0.5  # gold U0, U2; retrieved U0, U1
    assert r1["scores"]["qa_score"] == 1.0 and r1["scores"]["memory_recall"] is None
    assert "1 gold memory points" in r1["judge_runs"][0]["failures"]["memory_recall"]["error"]
    assert r2["no_gold_memory"] and r2["judge_runs"] == [] and r2["prediction"] == "Do step 2."
    summary = summarize_realmem(rows, "fake", s)
    assert summary["metrics"]["qa_score"] == 2.0 and summary["metrics"]["memory_recall"] == 0.5
    assert summary["metrics"]["evidence_recall@10"] == 0.5
    d = summary["dimensions"]
    assert (d["qa_score"]["n_scored"], d["qa_score"]["n_failed"], d["qa_score"]["n_clipped"]) == (2, 0, 1)
    assert (d["memory_recall"]["n_scored"], d["memory_recall"]["n_failed"]) == (1, 1)
    assert d["memory_recall"]["n_items_unscored"] == 2
    assert summary["failures"]["no_gold_memory"] == 1 and summary["qa_score_distribution"] == {
        "0": 0, "1": 1, "2": 0, "3": 1}


def test_realmem_answer_failure_still_judges_memory_but_not_qa(scripted_engine, list_memory):
    gold = [[{"session_uuid": "U0", "content": "plan step 0"}]]
    answerer = scripted_engine(lambda r: "")
    judge = scripted_engine(lambda r: '{"covered": [true], "reason": "", "helpfulness": 2}')
    s = RealMemJudgeSettings(judge_runs=2, max_retries=0)
    rows = evaluate_realmem_sample(_rm_sample(gold), list_memory, answerer, judge, s)
    assert [r.metadata["call"] for r in judge.seen] == ["judge_memory", "judge_memory"]
    assert rows[0]["answer_failure"]["kind"] == "parse" and rows[0]["prediction"] is None
    assert rows[0]["scores"]["memory_recall"] == 1.0 and rows[0]["scores"]["qa_score"] is None
    summary = summarize_realmem(rows, "fake", s)
    assert summary["failures"]["answer"] == 1
    q = summary["dimensions"]["qa_score"]
    assert (q["n_scored"], q["n_failed"], q["n_not_asked"]) == (0, 0, 2) and summary["metrics"]["qa_score"] is None


def test_compare_shows_judged_runs_with_missing_figures_as_na(tmp_path):
    from rich.console import Console

    from mnemoray.eval.compare import comparison_table, eval_kind, load_runs, markdown_table

    runs = {
        "ret": {"dataset": "rolememo", "memory": "rag-bm25", "n_queries": 3, "metrics": {"recall_any@10": 0.5}},
        "rm": {"dataset": "rolememo", "memory": "rag-bm25", "eval": "rolememo", "n_queries": 3,
               "metrics": {"fact_recall@10": 0.75, "insight_recall@10": 0.0}},
        "rp": {"dataset": "rolememo", "memory": "rag-bm25", "eval": "roleplay", "n_queries": 3,
               "metrics": {"information_richness": None, "roleplay_mean": None}},
        "qa": {"dataset": "locomo", "memory": "rag-bm25", "n_queries": 4,
               "metrics": {"accuracy_lenient": None, "f1": 0.2}},
    }
    dirs = []
    for name, summary in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(summary))
        dirs.append(tmp_path / name)
    loaded = load_runs(dirs)
    assert [eval_kind(r) for r in loaded] == ["retrieval", "rolememo", "roleplay", "qa"]
    md = markdown_table(loaded)
    assert "| rolememo | rag-bm25 | rolememo | 3 |" in md and "| rolememo | rag-bm25 | roleplay | 3 |" in md
    assert "fact_recall@10" in md and "roleplay_mean" in md
    roleplay_line = next(line for line in md.splitlines() if "| roleplay |" in line)
    assert "n/a" in roleplay_line and "0.750" not in roleplay_line
    console = Console(width=250, record=True)
    console.print(comparison_table(loaded))
    text = console.export_text()
    assert "insight_recall@10" in text and "n/a" in text and "0.750" in text
