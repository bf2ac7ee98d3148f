"""The "membuilder-qa" reward (dense QA in the loop) against hand-checked values: the rollout's
ops on a copy of the pre-session memory, questions answered from real-embedding retrieval,
decided by contains / F1 / a judge (scripted engine for the LLM parts), task_r = correct /
decided, the length penalty, and attribution counts by memory type."""

from __future__ import annotations

import json

import pytest

from mnemoray.memory.ops import Provenance, new_item
from mnemoray.rewards.dense_qa import DenseQASettings, build_memory, from_reward_item, score_items
from mnemoray.rewards.items import RewardItem, RewardScorer
from mnemoray.rewards.registry import REWARDS

ROLLOUT = {"operations": [{"action": "ADD", "ids": [], "text": "2023-05-02: Sam moved to Lisbon in April"}]}
ROLLOUT_TEXT = json.dumps(ROLLOUT, sort_keys=True)  # the unit the expert's length is measured in
DOG = new_item("semantic", "Biscuit - Sam's beagle", Provenance("h1:S1"))
QA = [{"id": "q1", "type": "single-session", "question": "Where did Sam move?", "answer": "Lisbon"},
      {"id": "q2", "type": "single-session", "question": "What is Sam's dog called?", "answer": "Biscuit"},
      {"id": "q3", "type": "temporal", "question": "What car does Sam drive?", "answer": "a red Toyota"}]
EMPTY = {"operations": []}


def info(memory_type: str = "episodic", expert_length: float | None = None, **more) -> dict:
    return {"memory_type": memory_type, "session_id": "h1:S2", "session_date": "2023-05-02",
            "state_before": {"core": "", "stores": {"semantic": [DOG.model_dump(mode="json")]}},
            "expert_ops": {"core": EMPTY, "episodic": {"operations": [{"action": "ADD", "text": "expert note"}]},
                           "semantic": EMPTY, "procedural": EMPTY},
            "handles": {"semantic": {"S1": DOG.id}}, "qa": QA,
            "expert_length": len(ROLLOUT_TEXT) if expert_length is None else expert_length, **more}


def item(completion: str = ROLLOUT_TEXT, rid: str = "r0", **kw) -> RewardItem:
    return RewardItem(rid, "membuilder", completion, None, info(**kw))


def score(items, engine=None, max_retries=0):
    return score_items(engine, [from_reward_item(i) for i in items], max_retries)


def test_contains_mode_hand_checked(embedder):
    # Lisbon is in the rollout's episodic note, Biscuit in the semantic store before the session,
    # the car nowhere: 2 of 3 correct; rho = 1 (no length penalty); each correct answer served by one item
    ok, = score([item()])
    assert not ok.failed
    assert ok.score == pytest.approx(2 / 3)
    assert ok.extras["task_reward"] == pytest.approx(2 / 3) and ok.extras["length_penalty"] == 0.0
    assert ok.extras["attribution_counts"] == {"episodic": 1, "semantic": 1}
    assert ok.extras["match"] == "contains" and ok.extras["qa_total"] == 3 and ok.extras["qa_failed"] == 0
    # twice the expert's length: rho = 2 -> P = min(1, 0.7 / 0.7) = 1 -> 2/3 x (1 - 0.8)
    long, = score([item(expert_length=len(ROLLOUT_TEXT) / 2)])
    assert long.extras["rho"] == pytest.approx(2.0) and long.score == pytest.approx(2 / 3 * 0.2)


def test_the_expert_ops_of_other_agents_and_a_copy_of_the_state(embedder):
    memory = build_memory(from_reward_item(item()))
    texts = sorted(it.text for it in memory.items)
    # the rollout's own episodic op replaces the expert's episodic answer; the state is not changed in place
    assert texts == ["2023-05-02: Sam moved to Lisbon in April", "Biscuit - Sam's beagle"]
    same = item()
    build_memory(from_reward_item(same))
    assert same.extra_info["state_before"]["stores"] == {"semantic": [DOG.model_dump(mode="json")]}
    # a semantic rollout that UPDATEs the handle it was shown replaces the old item
    update = json.dumps({"operations": [{"action": "UPDATE", "ids": ["S1"], "text": "Biscuit - a beagle, 3 years"}]})
    memory = build_memory(from_reward_item(item(update, memory_type="semantic")))
    assert sorted(it.text for it in memory.items) == ["Biscuit - a beagle, 3 years", "expert note"]


def test_format_failure_is_a_real_zero_not_a_failure(embedder):
    bad, prose, ok = score([item("I think Sam moved.", "a"), item('{"ops": []}', "b"), item(rid="c")])
    for result in (bad, prose):
        assert result.score == 0.0 and not result.failed and result.extras["format_ok"] is False
        assert result.extras["attribution_counts"] == {}
    assert ok.score == pytest.approx(2 / 3)


def test_core_penalty_uses_the_resulting_core_block(embedder):
    text = "Sam lives in Lisbon with Biscuit. " + "x" * 1966  # 2000 chars = 500 tokens -> P = 1
    core = json.dumps({"operations": [{"action": "REWRITE", "old": "", "text": text}]})
    result, = score([item(core, memory_type="core", expert_length=0)])
    assert result.extras["core_tokens"] == pytest.approx(500.0) and result.extras["length_penalty"] == 1.0
    # the core block is always shown: Lisbon and Biscuit are both there (and Biscuit in semantic too)
    assert result.extras["task_reward"] == pytest.approx(2 / 3)
    assert result.score == pytest.approx(2 / 3 * 0.2)
    assert result.extras["attribution_counts"] == {"core": 2, "semantic": 1}


def script_for(answers: dict[str, dict], labels: dict[str, str]):
    def reply(request):
        call = request.metadata.get("call")
        user = request.messages[-1].content
        if call == "qa_answer":
            return next(a for q, a in answers.items() if q in user)
        prediction = user.split("Generated answer: ")[1].splitlines()[0]
        label = labels.get(prediction, "WRONG")
        return label if label == "garbage" else {"reasoning": "checked", "label": label}
    return reply


def test_judge_mode_answers_cites_and_judges(scripted_engine, embedder):
    answers = {"Where did": {"answer": "Lisbon", "used": [1]}, "dog called": {"answer": "Biscuit", "used": [2, 1]},
               "car does": {"answer": "not mentioned", "used": []}}
    engine = scripted_engine(script_for(answers, {"Lisbon": "CORRECT", "Biscuit": "CORRECT"}))
    result, = score([item()], engine)
    assert result.extras["match"] == "judge" and result.score == pytest.approx(2 / 3)
    # cited notes of the correct answers: note 1 of the move and notes 2 and 1 of the dog
    counts = result.extras["attribution_counts"]
    assert sum(counts.values()) == 3 and set(counts) <= {"episodic", "semantic"}
    assert [b for b in engine.batches] == [["qa_answer"] * 3, ["judge_lenient"] * 3]
    temporal = engine.calls[1][2].messages[-1].content
    assert "red Toyota" in temporal  # the temporal question is judged with its reference


def test_undecided_questions_are_counted_and_all_undecided_is_a_failure(scripted_engine, embedder):
    answers = {"Where did": {"answer": "Lisbon", "used": [1]}, "dog called": {"answer": "Rex", "used": []},
               "car does": {"answer": "bike", "used": []}}
    engine = scripted_engine(script_for(answers, {"Lisbon": "CORRECT", "Rex": "WRONG", "bike": "garbage"}))
    result, = score([item()], engine)
    assert result.extras["qa_failed"] == 1 and result.score == pytest.approx(1 / 2)  # 1 of 2 decided
    never = scripted_engine(lambda request: "no json here")
    failed, = score([item()], never)
    assert failed.failed and failed.score == 0.0 and "no question could be decided" in failed.error
    boom = scripted_engine(lambda request: 1 / 0)
    crashed, = score([item()], boom)
    assert crashed.failed and "engine raised ZeroDivisionError" in crashed.error


def test_f1_mode(scripted_engine, embedder):
    answers = {"Where did": {"answer": "to Lisbon", "used": [1]},
               "dog called": {"answer": "Biscuit the beagle", "used": [1]},
               "car does": {"answer": "Toyota", "used": [1]}}
    engine = scripted_engine(script_for(answers, {}))
    result, = score([item(qa_settings={"match": "f1", "f1_threshold": 0.6})], engine)
    # F1: "to lisbon" vs "lisbon" = 0.667 ok; "biscuit beagle" vs "biscuit" = 0.667 ok; "toyota" vs "red toyota" 0.667
    assert result.score == pytest.approx(1.0) and engine.batches == [["qa_answer"] * 3]
    strict, = score([item(qa_settings={"match": "f1", "f1_threshold": 0.7})], engine)
    assert strict.score == 0.0 and strict.extras["attribution_counts"] == {}


def test_bad_items_name_the_key_and_fail_alone(embedder):
    scorer = RewardScorer("membuilder-qa")  # no engine: judge-free "contains"
    no_qa = RewardItem("bad", "membuilder", ROLLOUT_TEXT, None, {k: v for k, v in info().items() if k != "qa"})
    bad_settings = item(rid="s", qa_settings={"topk": 3})
    wrong_type = item(rid="t", memory_type="summary")
    needs_engine = item(rid="e", qa_settings={"match": "judge"})
    results = scorer.score([no_qa, item(), bad_settings, wrong_type, needs_engine])
    assert [r.failed for r in results] == [True, False, True, True, True]
    assert "extra_info['qa'] is required" in results[0].error
    assert "unknown keys ['topk']" in results[2].error
    assert "memory_type" in results[3].error
    assert "needs an engine" in results[4].error
    assert results[1].score == pytest.approx(2 / 3) and scorer.stats.failed == 4
    assert REWARDS.spec("membuilder-qa").engine_optional


def test_settings_default_and_validation():
    assert DenseQASettings.from_info(None) == DenseQASettings()
    assert DenseQASettings.from_info({"k": 3}).k == 3
    with pytest.raises(ValueError, match="match must be"):
        DenseQASettings.from_info({"match": "vibes"})


def test_attribution_counts_feed_the_adrpo_weights(embedder):
    from mnemoray.rl.step_batch import AttributionSettings, sample_attribution

    # episodic writes the Lisbon note (serves q1) and sees Biscuit in semantic (q2): episodic 1, semantic 1;
    # the no-op semantic and core rollouts keep only Biscuit findable: semantic 1 each -> semantic 3, episodic 1
    items = [item(), item(json.dumps(EMPTY), "s", memory_type="semantic"),
             item(json.dumps(EMPTY), "c", memory_type="core")]
    results = score(items)
    assert [r.extras["attribution_counts"] for r in results] == [{"episodic": 1, "semantic": 1}, {"semantic": 1},
                                                                 {"semantic": 1}]
    attribution, invalid = sample_attribution([r.extras for r in results], [i.extra_info for i in items],
                                              AttributionSettings(alpha=4.0))
    assert invalid == 0 and attribution.dominant == "semantic" and attribution.weights == [1.0, 4.0, 1.0]
    assert attribution.totals == {"episodic": 1, "semantic": 3}
