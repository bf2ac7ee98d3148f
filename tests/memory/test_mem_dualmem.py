"""DualMem: dedup with ref remapping, insight-expanded retrieval, failures recorded, state round-trip."""

from __future__ import annotations

import json

from mnemoray.config import MemoryConfig
from mnemoray.memory.dualmem import DualMemMemory, apply_extraction
from mnemoray.memory.ops import Provenance
from mnemoray.records import Persona, Session, Turn

PROV = Provenance("h:S1", ("D1:1", "D1:2"), "1 May 2023")
PROV2 = Provenance("h:S2", ("D2:1",), "8 May 2023")


def _session(sid: str, n: int) -> Session:
    lines = ["I adopted a rescue dog named Max last week.", "Wow, how is Max doing?",
             "He is shy but loves long walks in the park.", "I volunteer at the animal shelter on Saturdays.",
             "That sounds rewarding!", "It is, I have always cared about animals."]
    return Session(
        id=sid,
        timestamp="1 May 2023",
        turns=[
            Turn(id=f"{sid}#{i}", speaker="Ann" if i % 2 == 0 else "Bo", text=lines[i % len(lines)], index=i)
            for i in range(n)
        ],
    )


def test_dedup_maps_new_facts_to_existing_and_remaps_insight_refs(embedder):
    memory = DualMemMemory(MemoryConfig(name="dualmem"), embedder=embedder)
    facts, insights = memory.facts, memory.insights
    walk = facts.add("Ann walks her dog Max in the park every morning.", PROV).item.id
    shelter = facts.add("Ann volunteers at the animal shelter on Saturdays.", PROV).item.id
    answer = {
        "facts": ["ann walks her dog max in the park every morning",  # same after normalisation
                  "Ann walks her dog Max in the park every single morning.",  # near-duplicate (embedding)
                  "Ann cried when Max first wagged his tail."],
        "insights": [{"refs": ["N1", "N2"], "text": "Routine with Max anchors her days."},  # both map to one fact
                     {"refs": ["N2", "F2", "N3"], "text": "Ann finds meaning in caring for animals."}],
    }
    ops, errors = apply_extraction(facts, insights, answer, PROV2, {"F1": walk, "F2": shelter}, memory.similar_fact)
    assert len(facts) == 3  # two of the three new facts were the same fact
    assert [o.op for o in ops].count("DEDUP") == 2
    assert facts.items[walk].turn_ids == ["D1:1", "D1:2", "D2:1"]  # provenance widened
    assert len(errors) == 1 and "needs 2" in errors[0].reason  # N1, N2 → one distinct fact
    (insight,) = insights.values()
    cried = next(f.id for f in facts.values() if "cried" in f.text)
    assert insight.metadata["refs"] == [walk, shelter, cried]
    assert insight.session_id == "h:S2" and insight.turn_ids == ["D2:1"]


def test_similarity_threshold_keeps_distinct_facts_apart(embedder):
    memory = DualMemMemory(MemoryConfig(name="dualmem"), embedder=embedder)
    memory.facts.add("Ann adopted a dog named Max.", PROV)
    assert memory.similar_fact("Bo moved to Berlin for a new job.", memory.facts.values()) is None
    assert memory.similar_fact("Ann adopted a dog called Max.", memory.facts.values()) is not None


def test_ingest_reads_chunks_and_retrieval_appends_cited_facts(scripted, embedder):
    def script(call, request):
        user = request.messages[-1].content
        if "Facts already in memory:\n(none yet)" in user:
            return {"facts": ["Ann adopted a rescue dog named Max.", "Ann volunteers at an animal shelter."],
                    "insights": [{"refs": ["N1", "N2"], "text": "Caring for animals is central to who Ann is."}]}
        return "this is not JSON at all"  # invalid output: recorded, the build goes on

    engine = scripted(script)
    cfg = MemoryConfig.model_validate({"name": "dualmem", "dualmem": {"chunk_turns": 4}})
    memory = DualMemMemory(cfg, engine=engine, embedder=embedder, max_retries=1)
    memory.log.history_id = "h"
    ops = memory.ingest(_session("h:S1", 6), Persona(id="p", name="Ann", description="a vet nurse"))
    assert len(engine.batches) == 1 + 2  # chunk 1 once, chunk 2 asked again after its bad answer
    assert len(memory.facts) == 2 and len(memory.insights) == 1 and len(ops) == 3
    stats = memory.log.stats()
    assert stats["calls"] == 2 and stats["failures"] == 1
    failed = memory.log.entries[1]
    assert (
        failed["parsed"] is None
        and failed["error"].startswith("parse")
        and failed["raw_output"] == "this is not JSON at all"
    )
    first = memory.log.entries[0]
    assert first["memory_state"] == {"facts": [], "insights": []} and first["session_id"] == "h:S1"
    assert "a vet nurse" in first["messages"][1]["content"]
    assert set(first["parsed"]) == {"facts", "insights"}
    for item in memory.memory_items():
        assert item.session_id == "h:S1" and item.turn_ids == [f"h:S1#{i}" for i in range(4)]
    insight = memory.insights.values()[0]
    # rank only the insight in the top-1: the facts it cites are appended
    hits = memory.retrieve("What is central to who Ann is?", 1)
    assert hits[0].item.id == insight.id
    assert {h.item.id for h in hits[1:]} == set(insight.metadata["refs"])
    # the second call saw the memory through handles, and could only cite shown or new facts
    assert "F1: Ann adopted a rescue dog named Max." in failed["messages"][1]["content"]
    assert [f["handle"] for f in failed["memory_state"]["facts"]] == ["F1", "F2"]


def test_snapshot_restore_round_trip(scripted, embedder):
    engine = scripted(
        lambda call, req: {
            "facts": ["Ann likes tea.", "Ann hates coffee."],
            "insights": [{"refs": ["N1", "N2"], "text": "Ann is particular about drinks."}],
        }
    )
    memory = DualMemMemory(MemoryConfig(name="dualmem"), engine=engine, embedder=embedder)
    memory.ingest(_session("h:S1", 3))
    state = json.loads(json.dumps(memory.snapshot()))
    again = DualMemMemory(MemoryConfig(name="dualmem"), embedder=embedder)
    again.restore(state)
    assert [i.model_dump() for i in again.memory_items()] == [i.model_dump() for i in memory.memory_items()]
    assert [r.item.id for r in again.retrieve("drinks", 3)] == [r.item.id for r in memory.retrieve("drinks", 3)]


def test_no_engine_means_recorded_failures_not_a_crash(embedder):
    memory = DualMemMemory(MemoryConfig(name="dualmem"), embedder=embedder)
    assert memory.ingest(_session("h:S1", 3)) == []
    assert memory.log.stats()["failures"] == 1 and memory.log.entries[0]["error"].startswith("engine")
