"""The "membuilder" environment on a real MemBuilder trajectory log (scripted engine, real
embedder): one prompt per agent per session with the agent's exact messages, the expert's
answer as ground truth, memory type / expert length / session group for the rewards; failed
calls skipped and counted; malformed lines named by file, line and field."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mnemoray.config import MemoryConfig
from mnemoray.loaders.errors import DatasetError
from mnemoray.memory.membuilder import MemBuilderMemory
from mnemoray.memory.trajectory import write_jsonl
from mnemoray.records import Session, Turn
from mnemoray.rewards.length_penalty import compute_score as length_penalty
from mnemoray.rl.environments import ENVIRONMENTS


def session(sid: str, text: str) -> Session:
    return Session(id=sid, timestamp="2023-05-0" + sid[-1], turns=[
        Turn(id=f"{sid}#0", speaker="Sam", text=text, index=0),
        Turn(id=f"{sid}#1", speaker="Bot", text="Nice, tell me more.", index=1)])


@pytest.fixture
def trajectories(tmp_path: Path, scripted, embedder) -> tuple[Path, list[dict]]:
    def script(call, request):
        if call == "membuilder/procedural" and "2023-05-02" in request.messages[-1].content:
            return "not json at all"  # this agent fails in the second session
        if call == "membuilder/core":
            return {"operations": [{"action": "APPEND", "old": "", "text": "Sam runs."}]}
        return {"operations": [{"action": "ADD", "ids": [], "text": f"{call} note"}]}

    memory = MemBuilderMemory(MemoryConfig(name="membuilder"), engine=scripted(script), embedder=embedder,
                              max_retries=0)
    memory.log.history_id = "h1"
    memory.ingest(session("h1:S1", "I ran a 5k with my sister."))
    memory.ingest(session("h1:S2", "We plan a half marathon in June."))
    out = tmp_path / "build"
    out.mkdir()
    write_jsonl(memory.log.entries, out / "trajectories.jsonl")
    return out, memory.log.entries


def test_one_prompt_per_agent_per_session(trajectories):
    folder, entries = trajectories
    counts: Counter = Counter()
    prompts, errors = ENVIRONMENTS.load("membuilder")(folder, counts=counts)
    assert errors == [] and len(prompts) == 7  # 4 agents x 2 sessions, minus the failed procedural call
    assert counts == Counter({"kept.core": 2, "kept.episodic": 2, "kept.semantic": 2, "kept.procedural": 1,
                              "skipped_failed": 1})
    by_id = {e["id"]: e for e in entries}
    for p in prompts:
        entry = by_id[p.id]
        assert list(p.messages) == entry["messages"]
        assert json.loads(p.ground_truth) == entry["parsed"]
        assert p.extra_info["memory_type"] == entry["call"].split("/")[1]
        assert p.extra_info["expert_length"] == len(p.ground_truth)
        assert p.extra_info["group"] == f"h1/{entry['session_id']}"
        assert p.extra_info["memory_state"] == entry["memory_state"]
    groups = Counter(p.extra_info["group"] for p in prompts)
    assert groups == {"h1/h1:S1": 4, "h1/h1:S2": 3}


def test_prompts_feed_the_length_penalty_reward(trajectories):
    prompts, _ = ENVIRONMENTS.load("membuilder")(trajectories[0] / "trajectories.jsonl")
    episodic = next(p for p in prompts if p.extra_info["memory_type"] == "episodic")
    info = {**episodic.extra_info, "task_reward": 0.8}
    same = length_penalty("membuilder", episodic.ground_truth, episodic.ground_truth, info)
    assert same["score"] == pytest.approx(0.8) and same["length_penalty"] == 0.0
    long = length_penalty("membuilder", episodic.ground_truth * 3, episodic.ground_truth, info)
    assert long["score"] == pytest.approx(0.8 * (1 - 0.8 * 1.0))  # rho = 3: full penalty


def test_malformed_lines_are_named(tmp_path: Path, trajectories):
    _, entries = trajectories
    bad = tmp_path / "bad.jsonl"
    broken = dict(entries[0], messages="not a list")
    bad.write_text(json.dumps(entries[1]) + "\n{oops\n" + json.dumps(broken) + "\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl: record line 2: malformed JSON"):
        ENVIRONMENTS.load("membuilder")(bad)
    prompts, errors = ENVIRONMENTS.load("membuilder")(bad, skip_invalid=True)
    assert len(prompts) == 1 and [(e.record, e.field) for e in errors] == [("line 2", None), ("line 3", "messages")]
    with pytest.raises(DatasetError, match="no trajectories.jsonl"):
        ENVIRONMENTS.load("membuilder")(tmp_path / "nowhere")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_grpo_data_writes_prompts_that_load_back(trajectories, tmp_path: Path, suffix: str):
    from typer.testing import CliRunner

    from mnemoray.cli.main import app
    from mnemoray.rl.environments import load_prompts

    folder, _ = trajectories
    out = tmp_path / f"prompts{suffix}"
    res = CliRunner().invoke(app, ["train", "grpo-data", "--from", str(folder), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["prompts"] == 7
    source, _ = ENVIRONMENTS.load("membuilder")(folder)
    loaded, errors = load_prompts(out)
    assert not errors and [p.id for p in loaded] == [p.id for p in source]
    for a, b in zip(loaded, source):
        assert a.messages == b.messages and a.ground_truth == b.ground_truth
        assert a.extra_info["memory_type"] == b.extra_info["memory_type"]
        assert a.extra_info["expert_length"] == b.extra_info["expert_length"]
    bad = CliRunner().invoke(app, ["train", "grpo-data", "--from", str(folder), "--out", str(tmp_path / "x.csv")])
    assert bad.exit_code == 2 and "write a .jsonl" in bad.output
