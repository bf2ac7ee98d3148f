"""Control flow of the QA harness with a scripted engine (no model): judge parsing, failure
counting, per-type judge selection, the visible-point protocol."""

from __future__ import annotations

import json

from mnemoray.eval.qa import QASettings, evaluate_qa_sample, summarize_qa
from mnemoray.eval.qa_prompts import NOT_ANSWERABLE, judge_variant
from mnemoray.records import EvalSample, EvidenceQuery, History, Session, Turn


def _sample(dataset="locomo", queries=None):
    sessions = [Session(id=f"S{i}", timestamp=f"2023-05-0{i + 1}",
                        turns=[Turn(id=f"S{i}#0", speaker="u", text=f"fact {i}", index=0)]) for i in range(3)]
    queries = queries or [
        EvidenceQuery(id="q0", history_id="h", text="early?", gold_ids=["S0"], gold_level="session",
                      category="single-hop", answer="Paris", visible_sessions=1),
        EvidenceQuery(id="q1", history_id="h", text="late?", gold_ids=["S2"], gold_level="session",
                      category="single-hop", answer="Paris"),
    ]
    return EvalSample(history=History(id="h", dataset=dataset, sessions=sessions), queries=queries)


def _call(req):
    return req.metadata.get("call")


def test_answers_judged_twice_and_asked_at_visible_point(scripted_engine, list_memory):
    answerer = scripted_engine(lambda r: '{"answer": "Paris"}')
    judge = scripted_engine(
        lambda r: json.dumps({"reasoning": "ok", "label": "CORRECT" if _call(r) == "judge_lenient" else "WRONG"})
    )
    memory = list_memory()
    rows = evaluate_qa_sample(_sample(), lambda: memory, answerer, judge, QASettings(dataset="locomo", k=5))
    assert memory.seen_at == [1, 3]  # q0 after one session, q1 after all three
    assert [r["visible_sessions"] for r in rows] == [1, 3]
    assert rows[0]["retrieved"] == ["S0"]
    assert "fact 2" not in answerer.seen[0].messages[-1].content  # no future memory in the first prompt
    assert "2023-05-01" in answerer.seen[0].messages[-1].content  # dates reach the answerer
    assert all(r["label_lenient"] == "CORRECT" and r["label_strict"] == "WRONG" for r in rows)
    assert rows[0]["f1"] == 1.0 and rows[0]["bleu1"] == 1.0
    s = summarize_qa(rows, "locomo", "fake")
    assert s["metrics"]["accuracy_lenient"] == 1.0 and s["metrics"]["accuracy_strict"] == 0.0
    assert s["failures"]["judge_failures"] == 0


def test_invalid_judge_output_is_retried_then_counted_not_dropped(scripted_engine, list_memory):
    answerer = scripted_engine(lambda r: '{"answer": "Paris"}')

    def judge_script(r):
        if _call(r) == "judge_strict" and "early?" in r.messages[1].content:
            return "I think it is correct!"  # never JSON
        if _call(r) == "judge_lenient" and "late?" in r.messages[1].content:
            return '{"reasoning": "x", "label": "MAYBE"}'  # JSON but outside the enum
        return '{"reasoning": "fine", "label": "CORRECT"}'

    judge = scripted_engine(judge_script)
    rows = evaluate_qa_sample(_sample(), list_memory, answerer, judge, QASettings(dataset="locomo", max_retries=2))
    assert len(judge.seen) == 4 + 2 * 2  # 4 first tries, then 2 retries of each of the 2 bad calls
    assert rows[0]["label_strict"] is None and rows[0]["judge_failure_strict"]["kind"] == "parse"
    assert rows[0]["judge_failure_strict"]["raw"] == "I think it is correct!"
    assert rows[1]["label_lenient"] is None and rows[1]["judge_failure_lenient"]["kind"] == "schema"
    s = summarize_qa(rows, "locomo", "fake")
    assert s["n_queries"] == 2
    assert s["failures"] == {"answer": 0, "judge_lenient": 1, "judge_strict": 1, "judge_failures": 2}
    assert s["judged"] == {"lenient": 1, "strict": 1}  # failures left out of the denominators
    assert s["metrics"]["accuracy_lenient"] == 1.0


def test_answer_failure_is_counted_and_not_judged(scripted_engine, list_memory):
    answerer = scripted_engine(lambda r: "no json here")
    judge = scripted_engine(lambda r: '{"reasoning": "", "label": "CORRECT"}')
    rows = evaluate_qa_sample(_sample(), list_memory, answerer, judge, QASettings(dataset="locomo", max_retries=0))
    assert judge.seen == []
    assert all(r["answer_failure"]["raw"] == "no json here" and r["f1"] is None for r in rows)
    s = summarize_qa(rows, "locomo", "fake")
    assert s["failures"]["answer"] == 2
    assert s["metrics"]["accuracy_lenient"] is None and s["metrics"]["f1"] is None


def _q(qid, category, answer="x"):
    return EvidenceQuery(id=qid, history_id="h", text=f"{qid}?", gold_ids=["S0"], gold_level="session",
                         category=category, answer=answer)


def test_judge_variant_selection():
    assert judge_variant("longmemeval", _q("a", "temporal-reasoning")) == "temporal"
    assert judge_variant("longmemeval", _q("a", "knowledge-update")) == "knowledge-update"
    assert judge_variant("longmemeval", _q("a", "single-session-preference")) == "preference"
    assert judge_variant("longmemeval", _q("a_abs", "temporal-reasoning")) == "abstention"
    assert judge_variant("longmemeval", _q("a", "multi-session")) == "default"
    assert judge_variant("locomo", _q("a", "adversarial")) == "abstention"
    assert judge_variant("locomo", _q("a", "temporal")) == "default"  # LoCoMo temporal is not LME's rule


def test_type_rules_reach_both_judges_and_adversarial_gold_is_abstention(scripted_engine, list_memory):
    queries = [_q("t", "temporal-reasoning", "19 days"), _q("k", "knowledge-update", "Berlin"),
               _q("p", "single-session-preference", "suggest vegan places")]
    answerer = scripted_engine(lambda r: '{"answer": "Not mentioned in the conversation"}')
    judge = scripted_engine(lambda r: '{"reasoning": "", "label": "WRONG"}')
    rows = evaluate_qa_sample(_sample("longmemeval", queries), list_memory, answerer, judge,
                              QASettings(dataset="longmemeval"))
    assert [r["judge_variant"] for r in rows] == ["temporal", "knowledge-update", "preference"]
    prompts = [r.messages[1].content for r in judge.seen]
    assert sum("off by one" in p for p in prompts) == 2  # lenient + strict
    assert sum("updated value" in p for p in prompts) == 2
    assert sum("rubric" in p for p in prompts) == 2

    adv = [_q("a", "adversarial", "Sweden")]
    judge = scripted_engine(lambda r: '{"reasoning": "", "label": "CORRECT"}')
    rows = evaluate_qa_sample(_sample("locomo", adv), list_memory, answerer, judge, QASettings(dataset="locomo"))
    assert rows[0]["gold"] == NOT_ANSWERABLE and rows[0]["distractor"] == "Sweden"
    assert rows[0]["f1"] == 1.0  # LoCoMo's rule: the answer says it is not mentioned
    assert all("Sweden" in r.messages[1].content and "not available" in r.messages[1].content for r in judge.seen)


def test_max_queries_and_unanswerable_queries_skipped(scripted_engine, list_memory):
    queries = [_q("a", "single-hop"), _q("b", "single-hop", answer=None), _q("c", "single-hop"), _q("d", "single-hop")]
    answerer = scripted_engine(lambda r: '{"answer": "x"}')
    judge = scripted_engine(lambda r: '{"reasoning": "", "label": "CORRECT"}')
    rows = evaluate_qa_sample(_sample("locomo", queries), list_memory, answerer, judge,
                              QASettings(dataset="locomo", max_queries=2))
    assert [r["query_id"] for r in rows] == ["a", "c"]
