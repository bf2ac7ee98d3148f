"""The "membuilder-qa" preparation on a real MemBuilder build log (scripted memory model, real
embedder): the pre-session memory replayed from the log equals the framework's own state,
synthetic QA is generated once per session (50/30/20 mix, deterministic ids), cached and
reused or resumed, and `train grpo-data --qa-engine` (the fault endpoint as generator)
writes prompts whose rewards score with the membuilder-qa reward."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mnemoray.config import MemoryConfig
from mnemoray.llm.fault_server import FaultConfig
from mnemoray.loaders.errors import DatasetError
from mnemoray.memory.membuilder import MemBuilderMemory
from mnemoray.memory.trajectory import write_jsonl
from mnemoray.records import Session, Turn
from mnemoray.rewards.items import RewardItem, RewardScorer
from mnemoray.rewards.qa_synth import QACache, QASynthSettings, SessionText, question_id, session_plan, synthesize_qa
from mnemoray.rl.environments import ENVIRONMENTS
from mnemoray.rl.environments.membuilder_qa import prepare_membuilder_qa
from mnemoray.rl.environments.membuilder_sessions import session_of_prompt, session_records

TALK = {"h1:S1": "I adopted a beagle named Biscuit.", "h1:S2": "We moved to Lisbon in April.",
        "h1:S3": "Biscuit loves the beach in Lisbon."}


def session(sid: str) -> Session:
    return Session(id=sid, timestamp="2023-05-0" + sid[-1], turns=[
        Turn(id=f"{sid}#0", speaker="Sam", text=TALK[sid], index=0),
        Turn(id=f"{sid}#1", speaker="Bot", text="Nice, tell me more.", index=1)])


def memory_script(call, request):
    user = request.messages[-1].content
    if call == "membuilder/core":
        return {"operations": [{"action": "APPEND", "old": "", "text": f"Note {user.count('Lisbon')}."}]}
    if call == "membuilder/semantic" and "S1:" in user:  # an UPDATE of the handle shown (S1)
        return {"operations": [{"action": "UPDATE", "ids": ["S1"], "text": "Biscuit - beagle living in Lisbon"}]}
    if call == "membuilder/semantic":
        return {"operations": [{"action": "ADD", "ids": [], "text": "Biscuit - Sam's beagle"}]}
    if call == "membuilder/procedural":
        return "not json"  # this agent always fails: no prompts, no ops
    date = user.splitlines()[0].removeprefix("Session date: ")
    return {"operations": [{"action": "ADD", "ids": [], "text": f"{date}: {user.split('Sam: ')[-1][:40]}"}]}


@pytest.fixture
def build(tmp_path: Path, scripted, embedder):
    memory = MemBuilderMemory(MemoryConfig(name="membuilder"), engine=scripted(memory_script), embedder=embedder,
                              max_retries=0)
    memory.log.history_id = "h1"
    states = []
    for sid in TALK:
        states.append(memory.snapshot())
        memory.ingest(session(sid))
    out = tmp_path / "build"
    out.mkdir()
    write_jsonl(memory.log.entries, out / "trajectories.jsonl")
    return out, memory.log.entries, states


def qa_script(request):
    kind = request.metadata["type"]
    count = request.json_schema["properties"]["questions"]["minItems"]
    return {"questions": [{"question": f"{kind} question {i} about Lisbon?", "answer": "Lisbon"}
                          for i in range(count)]}


def test_replayed_state_before_each_session_is_the_frameworks(build):
    _, entries, states = build
    records = session_records(entries)
    assert [r.session_id for r in records] == list(TALK)
    for record, state in zip(records, states):
        assert record.state_before["core"] == state["core"]["text"]
        for kind, items in state["stores"].items():
            assert [(i["id"], i["text"]) for i in record.state_before["stores"][kind]] == \
                [(i["id"], i["text"]) for i in items], (record.session_id, kind)
    assert records[1].date == "2023-05-02" and "Lisbon in April" in records[1].text
    assert set(records[1].expert) == {"core", "episodic", "semantic"}  # procedural failed
    assert list(records[2].handles["semantic"]) == ["S1"]  # the handle the UPDATE named
    assert session_of_prompt("just text") == (None, "just text")


def test_question_mix_ids_and_the_cache(tmp_path: Path, scripted_engine):
    assert session_plan(5, has_earlier=True) == {"single-session": 3, "multi-session": 1, "temporal": 1}
    assert session_plan(5, has_earlier=False) == {"single-session": 4, "temporal": 1}
    first = SessionText("h", "s1", "2023-01-01", "I like tea.")
    second = SessionText("h", "s2", None, "I switched to coffee.", (("2023-01-01", "I like tea."),))
    engine = scripted_engine(qa_script)
    cache = QACache(tmp_path / "qa.jsonl")
    report = synthesize_qa(engine, [first, second], cache)
    assert (report.generated, report.cached, report.failed, report.calls) == (2, 0, [], 5)
    qs = cache.questions("h/s2")
    assert Counter(q["type"] for q in qs) == {"single-session": 3, "multi-session": 1, "temporal": 1}
    assert qs[0]["id"] == question_id("h", "s2", "single-session", 0)
    assert "I like tea." in engine.calls[0][2].messages[-1].content  # earlier sessions shown to multi-session
    # a rerun reads the cache: no engine call at all
    idle = scripted_engine(lambda request: 1 / 0)
    again = synthesize_qa(idle, [first, second], QACache(tmp_path / "qa.jsonl"))
    assert (again.cached, again.generated, idle.calls) == (2, 0, [])
    assert QACache(tmp_path / "qa.jsonl").questions("h/s2") == qs  # same ids, same questions


def test_failed_and_cut_sessions_are_generated_again(tmp_path: Path, scripted_engine):
    sessions = [SessionText("h", f"s{i}", None, f"talk {i}") for i in range(3)]
    flaky = scripted_engine(lambda r: "garbage" if "talk 1" in r.messages[-1].content else qa_script(r))
    cache = QACache(tmp_path / "qa.jsonl")
    report = synthesize_qa(flaky, sessions, cache, QASynthSettings(max_retries=0, chunk_sessions=1))
    assert report.generated == 2 and len(report.failed) == 1 and report.failed[0].startswith("h/s1: ")
    with open(tmp_path / "qa.jsonl", "a") as f:  # an append cut short by a kill
        f.write('{"key": "h/s9", "questi')
    resumed = QACache(tmp_path / "qa.jsonl")
    assert set(resumed.entries) == {"h/s0", "h/s2"}
    report = synthesize_qa(scripted_engine(qa_script), sessions, resumed)
    assert (report.cached, report.generated) == (2, 1)
    assert set(QACache(tmp_path / "qa.jsonl").entries) == {"h/s0", "h/s1", "h/s2"}
    (tmp_path / "bad.jsonl").write_text('{"oops"\n{"key": "x", "questions": []}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl: record line 1: not a QA cache entry"):
        QACache(tmp_path / "bad.jsonl")


def test_prepared_prompts_score_with_the_reward(build, scripted_engine, embedder):
    folder, _, states = build
    counts: Counter = Counter()
    prompts, errors, report = prepare_membuilder_qa(folder, scripted_engine(qa_script), counts=counts)
    assert not errors and report.generated == 3 and len(prompts) == 9  # 3 sessions x 3 working agents
    episodic = next(p for p in prompts if p.extra_info["group"] == "h1/h1:S3"
                    and p.extra_info["memory_type"] == "episodic")
    assert len(episodic.extra_info["qa"]) == 5
    assert [i["id"] for i in episodic.extra_info["state_before"]["stores"]["episodic"]] == \
        [i["id"] for i in states[2]["stores"]["episodic"]]
    # the environment reads the cache only (no engine, no new questions)
    again, _ = ENVIRONMENTS.load("membuilder-qa")(folder)
    assert [p.extra_info["qa"] for p in again] == [p.extra_info["qa"] for p in prompts]
    # the expert's own answer finds "Lisbon" (in its note or the core block): every question correct
    scorer = RewardScorer("membuilder-qa")
    item = RewardItem("r", episodic.data_source, episodic.ground_truth, episodic.ground_truth, episodic.extra_info)
    expert, garbage = scorer.score([item, RewardItem("g", "membuilder", "nothing", None, episodic.extra_info)])
    assert not expert.failed and expert.extras["task_reward"] == 1.0 and expert.extras["length_penalty"] == 0.0
    assert expert.score == 1.0 and garbage.score == 0.0 and garbage.extras["format_ok"] is False
    (folder / "qa_cache.jsonl").unlink()
    with pytest.raises(DatasetError, match="no cached questions"):
        ENVIRONMENTS.load("membuilder-qa")(folder)


def test_grpo_data_with_a_qa_engine_generates_once(build, tmp_path: Path, fault_server):
    from typer.testing import CliRunner

    from mnemoray.cli.main import app
    from mnemoray.rl.environments import load_prompts

    folder, _, _ = build
    server = fault_server(FaultConfig())
    engine = tmp_path / "gen.yaml"
    engine.write_text(f"engine: openai\nmodel: fault-model\nbase_url: {server.url}\nmax_retries: 0\n")
    out = tmp_path / "prompts.jsonl"
    args = ["train", "grpo-data", "--from", str(folder), "--out", str(out), "--qa-engine", str(engine),
            "--qa-setting", "k=4"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["prompts"] == 9 and summary["qa"]["generated_sessions"] == 3
    assert summary["qa"]["engine_calls"] == 2 + 3 + 3  # S1 has no earlier session: 2 types, then 3 each
    calls = sum(server.counters.snapshot()["outcomes"].values())
    rerun = CliRunner().invoke(app, args)
    assert rerun.exit_code == 0 and json.loads(rerun.output)["qa"]["cached_sessions"] == 3
    assert sum(server.counters.snapshot()["outcomes"].values()) == calls  # nothing generated again
    loaded, _ = load_prompts(out)
    assert all(p.extra_info["qa_settings"] == {"k": 4} and len(p.extra_info["qa"]) == 5 for p in loaded)
    # as parquet the nested inputs travel as JSON text and score the same
    table = tmp_path / "prompts.parquet"
    res = CliRunner().invoke(app, [*args[:5], str(table), *args[6:]])
    assert res.exit_code == 0, res.output
    from_parquet, _ = load_prompts(table)
    assert isinstance(from_parquet[0].extra_info["state_before"], str)
    scorer = RewardScorer("membuilder-qa")
    scored = scorer.score([RewardItem(p.id, p.data_source, p.ground_truth, p.ground_truth, p.extra_info)
                           for p in (loaded[5], from_parquet[5])])
    assert not scored[0].failed and scored[0].score == scored[1].score and scored[0].extras == scored[1].extras
    bad = CliRunner().invoke(app, [*args[:-1], "topk=3"])
    assert bad.exit_code != 0 and "unknown keys ['topk']" in bad.output
