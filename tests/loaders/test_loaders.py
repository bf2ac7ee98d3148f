import json

import pytest

from mnemoray.loaders import DatasetError, iter_dataset, load_dataset


def test_locomo_sample(data_root):
    samples, errors = load_dataset("locomo", data_root / "locomo")
    assert not errors
    assert [s.history.id for s in samples] == ["conv-26", "conv-30"]
    conv = samples[0]
    assert len(conv.history.sessions) == 19
    assert conv.history.sessions[0].timestamp == "1:56 pm on 8 May, 2023"
    turn_ids = {t.id for s in conv.history.sessions for t in s.turns}
    q = conv.queries[0]
    assert q.gold_level == "turn" and q.gold_ids == ["D1:3"] and q.category == "temporal"
    assert q.visible_sessions is None  # LoCoMo questions see the whole conversation
    assert {c for s in samples for q in s.queries for c in [q.category]} <= {
        "multi-hop", "temporal", "open-domain", "single-hop", "adversarial"}
    assert sum(g in turn_ids for q in conv.queries for g in q.gold_ids) > 0.95 * sum(
        len(q.gold_ids) for q in conv.queries
    )


def test_realmem_queries_see_only_earlier_sessions(data_root):
    samples, _ = load_dataset("realmem", data_root / "realmem")
    assert {s.history.id for s in samples} == {"Kenta_Tanaka", "Pak_Budi"}
    for s in samples:
        order = s.history.session_index()
        assert s.queries
        for q in s.queries:
            own = q.metadata["session_id"]
            assert q.visible_sessions == order[own]
            assert q.gold_level == "session"
            # the query turn itself is in its session, never in the visible prefix
            assert all(order[g] <= order[own] for g in q.gold_ids)


def _longmemeval_record(qid, qtype="single-session-user"):
    return {
        "question_id": qid,
        "question_type": qtype,
        "question": "What is my dog's name?",
        "answer": "Rex",
        "question_date": "2023/05/30 (Tue) 10:00",
        "haystack_session_ids": ["s_b", "s_a", "s_future"],
        "haystack_dates": ["2023/05/20 (Sat) 09:00", "2023/05/01 (Mon) 09:00", "2023/06/30 (Fri) 09:00"],
        "haystack_sessions": [
            [{"role": "user", "content": "My dog Rex loves the park.", "has_answer": True},
             {"role": "assistant", "content": "Rex sounds lovely!"}],
            [{"role": "user", "content": "I bought new shoes."}],
            [{"role": "user", "content": "Future chat."}],
        ],
        "answer_session_ids": ["s_b"],
    }


def test_longmemeval_format(tmp_path):
    path = tmp_path / "longmemeval_s.json"
    path.write_text(json.dumps([_longmemeval_record("q1"), _longmemeval_record("q2_abs")]))
    samples, errors = load_dataset("longmemeval", path)
    assert not errors and len(samples) == 2  # the abstention question is kept, flagged
    assert [x.queries[0].metadata["abstention"] for x in samples] == [False, True]
    s = samples[0]
    assert [x.id for x in s.history.sessions] == ["s_a", "s_b", "s_future"]  # time order
    q = s.queries[0]
    assert q.gold_ids == ["s_b"] and q.category == "single-session-user"
    assert q.visible_sessions == 2  # the session dated after the question stays hidden
    assert s.history.sessions[1].turns[0].metadata["has_answer"] is True


def test_perltqa_pair(tmp_path):
    mem = {"Li Wei": {
        "profile": {"Protagonist": "Li Wei", "Occupation": "chemist"},
        "profile_description": "…",
        "social_relationship": {"1_0": {"Supporting Characters": "Wang Fang", "Description": "sister, a doctor",
                                        "Relationship": "sister"}},
        "events": {"1_0_0": {"content": "Li Wei and Wang Fang hiked Huangshan.", "summary": "Hike",
                             "Characters": ["1_0"], "Creation Time": "May 1, 2022", "Theme": "family"}},
        "dialogues": {"1_0_0_0": {"Dialogue time": "May 2, 2022",
                                  "contents": {"Li Wei": "The hike was great", "AI": "Glad to hear"}}},
    }}
    qa = [{"Li Wei": {
        "profile": [{"Question": "What is Li Wei's job?", "Answer": "chemist", "Reference Memory": "Occupation",
                     "Memory Anchors": []}],
        "social_relationship": [{"1_0": [{"Question": "Who is Wang Fang?", "Answer": "sister",
                                          "Reference Memory": "['1_0']", "Memory Anchors": []}]}],
        "events": [{"1_0_0": [{"Question": "Where did they hike?", "Answer": "Huangshan",
                               "Reference Memory": "['1_0_0']", "Memory Anchors": []}]}],
        "dialogues": [{"1_0_0_0": [{"Question": "How was the hike?", "Answer": "great",
                                    "Reference Memory": "['1_0_0_0']", "Memory Anchors": []}]}],
    }}]
    (tmp_path / "perltmem_en_v2.json").write_text(json.dumps(mem))
    (tmp_path / "perltqa_en_v2.json").write_text(json.dumps(qa))
    samples, errors = load_dataset("perltqa", tmp_path)
    assert not errors and len(samples) == 1
    s = samples[0]
    ids = {x.id for x in s.history.sessions}
    assert {"profile:Occupation", "social_relationship:1_0", "events:1_0_0", "dialogues:1_0_0_0"} <= ids
    golds = {q.category: q.gold_ids for q in s.queries}
    assert golds["profile"] == ["profile:Occupation"] and golds["events"] == ["events:1_0_0"]
    assert all(g in ids for gs in golds.values() for g in gs)
    dialogue = next(x for x in s.history.sessions if x.id == "dialogues:1_0_0_0")
    assert dialogue.timestamp == "May 2, 2022" and len(dialogue.turns) >= 2


def test_truncated_file_names_the_file(tmp_path, data_root):
    text = (data_root / "locomo" / "locomo10_sample.json").read_text()
    bad = tmp_path / "locomo_truncated.json"
    bad.write_text(text[: len(text) // 2])
    with pytest.raises(DatasetError) as err:
        load_dataset("locomo", bad)
    assert "locomo_truncated.json" in str(err.value) and "truncated or malformed JSON" in str(err.value)


def test_wrong_schema_names_record_and_field(tmp_path):
    rec = _longmemeval_record("q7")
    del rec["answer_session_ids"]
    path = tmp_path / "lme.json"
    path.write_text(json.dumps([_longmemeval_record("q1"), rec]))
    with pytest.raises(DatasetError) as err:
        load_dataset("longmemeval", path)
    msg = str(err.value)
    assert "lme.json" in msg and "record q7" in msg and "answer_session_ids" in msg
    # --skip-invalid: the valid record is kept, the invalid one listed
    samples, errors = load_dataset("longmemeval", path, skip_invalid=True)
    assert [s.history.id for s in samples] == ["q1"]
    assert len(errors) == 1 and errors[0].record == "q7" and errors[0].field == "answer_session_ids"


def test_locomo_bad_turn_field_path(tmp_path, data_root):
    data = json.loads((data_root / "locomo" / "locomo10_sample.json").read_text())
    del data[1]["conversation"]["session_2"][3]["dia_id"]
    path = tmp_path / "l.json"
    path.write_text(json.dumps(data))
    samples, errors = load_dataset("locomo", path, skip_invalid=True)
    assert [s.history.id for s in samples] == ["conv-26"]
    assert errors[0].record == "conv-30" and errors[0].field == "conversation.session_2.3.dia_id"


def test_realmem_wrong_top_level(tmp_path):
    path = tmp_path / "x_dialogues_256k.json"
    path.write_text("[1, 2]")
    entries = list(iter_dataset("realmem", path))
    assert isinstance(entries[0], DatasetError) and "dialogues" in str(entries[0])


def test_folder_without_files(tmp_path):
    with pytest.raises(DatasetError, match="no .json files"):
        load_dataset("locomo", tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset("locomo", tmp_path / "missing.json")


def test_large_file_is_streamed(tmp_path):
    """The first record arrives before the (truncated) end of the file is read."""
    path = tmp_path / "big.json"
    recs = [_longmemeval_record(f"q{i}") for i in range(200)]
    text = json.dumps(recs)
    path.write_text(text[:-500])
    it = iter_dataset("longmemeval", path)
    first = next(it)
    assert not isinstance(first, DatasetError) and first.history.id == "q0"
    rest = list(it)
    assert isinstance(rest[-1], DatasetError) and len(rest) >= 150


def test_longmemeval_abstention_kept_for_qa_and_left_out_of_retrieval(tmp_path):
    from mnemoray.config import MemoryConfig
    from mnemoray.eval.qa_prompts import judge_variant
    from mnemoray.eval.retrieval import evaluate_sample
    from mnemoray.memory import build_memory

    path = tmp_path / "longmemeval_s.json"
    path.write_text(json.dumps([_longmemeval_record("q1"), _longmemeval_record("q2_abs", "temporal-reasoning")]))
    samples, _ = load_dataset("longmemeval", path)
    abs_query = samples[1].queries[0]
    assert abs_query.id == "q2_abs" and abs_query.answer == "Rex" and abs_query.visible_sessions == 2
    assert judge_variant("longmemeval", abs_query) == "abstention"  # the abstention rule fires, not "temporal"
    assert judge_variant("longmemeval", samples[0].queries[0]) == "default"
    make = lambda: build_memory(MemoryConfig(name="rag-bm25"))  # noqa: E731
    assert evaluate_sample(samples[1], make, [1]) == []  # no evidence to score
    assert [r["query_id"] for r in evaluate_sample(samples[0], make, [1])] == ["q1"]

    from mnemoray.eval.qa import QASettings, evaluate_qa_sample
    from mnemoray.llm.types import ChatResult

    class Scripted:  # a stand-in LLM for this control-flow check only
        name = model = "scripted"

        def __init__(self, text):
            self.text, self.seen = text, []

        def generate(self, requests):
            self.seen.extend(requests)
            return [ChatResult(id=r.id, text=self.text) for r in requests]

    judge = Scripted('{"reasoning": "declined", "label": "CORRECT"}')
    rows = evaluate_qa_sample(samples[1], make, Scripted('{"answer": "Not mentioned."}'), judge,
                              QASettings(dataset="longmemeval"))
    assert rows[0]["judge_variant"] == "abstention" and rows[0]["label_strict"] == "CORRECT"
    assert len(judge.seen) == 2 and all("not available" in r.messages[1].content for r in judge.seen)
