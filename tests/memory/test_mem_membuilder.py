"""MemBuilder: four agents in one batch, UPDATE/MERGE leave no stale copies, core compression."""

from __future__ import annotations

import json
import re

from mnemoray.config import MemoryConfig
from mnemoray.memory.membuilder import MemBuilderMemory
from mnemoray.records import Session, Turn


def _session(sid: str, text: str = "I ran a 5k with my sister on Sunday.") -> Session:
    return Session(id=sid, timestamp="2023-05-0" + sid[-1], turns=[
        Turn(id=f"{sid}#0", speaker="Sam", text=text, index=0),
        Turn(id=f"{sid}#1", speaker="Bot", text="Great job! How did it feel?", index=1)])


def _handle(request, text_part: str) -> str:
    """The handle the prompt shows for the entry containing `text_part`."""
    m = re.search(r"^([ESP]\d+): .*" + re.escape(text_part), request.messages[-1].content, re.M)
    return m.group(1)


def test_agents_run_in_one_batch_and_update_merge_replace(scripted, embedder):
    def script(call, req):
        session = "S1" if "Session date: 2023-05-01" in req.messages[-1].content else "S2"
        if call == "membuilder/core":
            return {"operations": [{"action": "APPEND", "old": "", "text": f"Sam runs ({session})."}]}
        if call == "membuilder/episodic" and session == "S1":
            return {"operations": [{"action": "ADD", "ids": [], "text": "2023-05-01: ran a 5k | with sister"},
                                   {"action": "ADD", "ids": [], "text": "2023-05-01: 5k race with sister"},
                                   {"action": "ADD", "ids": [], "text": "2023-04-01: bought running shoes"}]}
        if call == "membuilder/episodic":
            a, b = _handle(req, "ran a 5k"), _handle(req, "5k race with")
            shoes = _handle(req, "running shoes")
            return {
                "operations": [
                    {"action": "MERGE", "ids": [a, b], "text": "2023-05-01: 5k race with sister | 31 min"},
                    {"action": "UPDATE", "ids": [shoes], "text": "2023-04-01: bought trail shoes"},
                ]
            }
        if call == "membuilder/semantic":
            return {"operations": [{"action": "ADD", "ids": [], "text": "Sister - hobby: running"}]}
        return {"operations": []}

    engine = scripted(script)
    memory = MemBuilderMemory(MemoryConfig(name="membuilder"), engine=engine, embedder=embedder)
    memory.ingest(_session("h:S1"))
    memory.ingest(_session("h:S2", "We did the 5k in 31 minutes. Also my shoes are trail shoes now."))
    assert (
        engine.batches
        == [["membuilder/core", "membuilder/episodic", "membuilder/semantic", "membuilder/procedural"]] * 2
    )
    episodic = [it.text for it in memory.stores["episodic"].values()]
    assert sorted(episodic) == ["2023-04-01: bought trail shoes", "2023-05-01: 5k race with sister | 31 min"]
    merged = next(it for it in memory.stores["episodic"].values() if "31 min" in it.text)
    assert merged.session_id == "h:S2" and merged.metadata["sessions"] == ["h:S1", "h:S2"]
    assert merged.turn_ids == ["h:S1#0", "h:S1#1", "h:S2#0", "h:S2#1"]
    assert [it.text for it in memory.stores["semantic"].values()] == ["Sister - hobby: running"]  # ADD twice = one item
    assert memory.core.text == "Sam runs (S1).\nSam runs (S2)."
    # every agent saw the entries of its own type only, with the state recorded
    episodic_calls = [e for e in memory.log.entries if e["call"] == "membuilder/episodic"]
    assert [r["text"] for r in episodic_calls[1]["memory_state"]["entries"]] == [
        "2023-05-01: ran a 5k | with sister", "2023-05-01: 5k race with sister", "2023-04-01: bought running shoes"]
    kinds = {r.item.kind for r in memory.retrieve("5k race", 10)}
    assert kinds == {"core", "episodic", "semantic"}


def test_context_is_capped_to_the_most_related_entries(scripted, embedder):
    seen = []

    def script(call, req):
        if call == "membuilder/semantic":
            seen.append(req.messages[-1].content)
            return {
                "operations": [{"action": "ADD", "ids": [], "text": f"Topic {len(seen)} - aspect: note {len(seen)}"}]
            }
        return {"operations": []}

    cfg = MemoryConfig.model_validate({"name": "membuilder", "membuilder": {"context_items": 2}})
    memory = MemBuilderMemory(cfg, engine=scripted(script), embedder=embedder)
    for i in range(1, 5):
        memory.ingest(_session(f"h:S{i}"))
    assert len(memory.stores["semantic"]) == 4
    assert len(re.findall(r"^S\d+: ", seen[-1], re.M)) == 2


def test_core_compression_triggers_over_the_limit(scripted, embedder):
    def script(call, req):
        if call == "membuilder/core":
            return {"operations": [{"action": "APPEND", "old": "", "text": "detail " * 30}]}
        if call == "membuilder/compress":
            return {"text": "compressed core"}
        return {"operations": []}

    engine = scripted(script)
    cfg = MemoryConfig.model_validate({"name": "membuilder", "membuilder": {"core_limit": 300}})
    memory = MemBuilderMemory(cfg, engine=engine, embedder=embedder)
    memory.ingest(_session("h:S1"))
    assert "membuilder/compress" not in sum(engine.batches, [])  # 209 chars: under the limit
    memory.ingest(_session("h:S2"))
    assert engine.batches[-1] == ["membuilder/compress"]
    assert memory.core.text == "compressed core" and memory.log.stats()["core_compressed"] == 1
    compress = memory.log.entries[-1]
    assert compress["call"] == "membuilder/compress" and "300 characters" in compress["messages"][1]["content"]


def test_failed_compression_falls_back_to_the_limit(scripted, embedder):
    def script(call, req):
        if call == "membuilder/core":
            return {"operations": [{"action": "APPEND", "old": "", "text": "line of facts " * 10}]}
        if call == "membuilder/compress":
            return "{\"text\": "  # truncated JSON: parse failure after retries
        return {"operations": []}

    cfg = MemoryConfig.model_validate({"name": "membuilder", "membuilder": {"core_limit": 200}})
    memory = MemBuilderMemory(cfg, engine=scripted(script), embedder=embedder, max_retries=1)
    for i in (1, 2):
        memory.ingest(_session(f"h:S{i}"))
    assert len(memory.core.text) <= 200 and memory.core.text.startswith("line of facts")
    stats = memory.log.stats()
    assert stats["core_truncated"] == 1 and stats["failures.membuilder/compress"] == 1


def test_invalid_agent_output_is_counted_and_the_rest_applies(scripted, embedder):
    def script(call, req):
        if call == "membuilder/episodic":
            return {"operations": [{"action": "DELETE", "ids": [], "text": "x"}]}  # schema-invalid
        if call == "membuilder/procedural":
            return {
                "operations": [
                    {"action": "ADD", "ids": [], "text": "Warm-up | Steps: 1. jog 2. stretch | Context: before runs"}
                ]
            }
        return {"operations": []}

    memory = MemBuilderMemory(MemoryConfig(name="membuilder"), engine=scripted(script), embedder=embedder)
    memory.ingest(_session("h:S1"))
    assert len(memory.stores["procedural"]) == 1 and len(memory.stores["episodic"]) == 0
    stats = memory.log.stats()
    assert stats["failures"] == 1 and stats["failures.membuilder/episodic"] == 1
    state = json.loads(json.dumps(memory.snapshot()))
    again = MemBuilderMemory(MemoryConfig(name="membuilder"), embedder=embedder)
    again.restore(state)
    assert [i.model_dump() for i in again.memory_items()] == [i.model_dump() for i in memory.memory_items()]
