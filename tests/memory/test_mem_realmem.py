"""RealMem: typed points with provenance, batched dedup (keep / discard / merge that replaces), failures, state."""

from __future__ import annotations

import json
import re

from mnemoray.config import MemoryConfig
from mnemoray.memory.ops import OpError, Provenance
from mnemoray.memory.realmem import (
    DedupDecision,
    MemoryPoint,
    Pending,
    PointStore,
    RealMemMemory,
    apply_decision,
    parse_dedup,
    parse_points,
)
from mnemoray.records import Persona, Session, Turn

LINES = ["I adopted a rescue dog named Max.", "We booked his vet check for next Friday.",
         "How is Max settling in?", "He loves the park, but the vet moved his check to the week after.",
         "Good to know!", "I also signed him up for obedience classes."]


def _session(sid: str, n: int = 4, date: str = "5 May 2023") -> Session:
    return Session(id=sid, timestamp=date,
                   turns=[Turn(id=f"{sid}#t{i}", speaker="Ann" if i % 2 == 0 else "Bo", text=LINES[i % len(LINES)],
                               index=i) for i in range(n)])


def _handles(user: str) -> dict[str, str]:
    """'E1: [date] text' lines of a dedup prompt → {text without date: handle}."""
    out = {}
    for m in re.finditer(r"^(E\d+): (?:\[[^\]]*\] )?(.*)$", user, re.MULTILINE):
        out[m.group(2)] = m.group(1)
    return out


def _point(kind: str, content: str, turns=("T1",), tag: str = "Confirmed") -> dict:
    return {"type": kind, "tag": tag, "content": content, "turns": list(turns)}


DOG = "Ann adopted a rescue dog named Max."
VET = "Ann has a vet check for Max on 12 May 2023."
MOVED = "Max's vet check moved to 19 May 2023."
MERGED = "Ann's vet check for Max is on 19 May 2023."
CLASSES = "Ann signed Max up for obedience classes."


def _script(requests: list):
    def script(call, request):
        requests.append(request)
        user = request.messages[1].content
        if call == "realmem/extract" and "Session h:S1 " in user:
            return {"points": [_point("Static", DOG, ["T1"]), _point("Schedule", VET, ["T2"])]}
        if call == "realmem/extract" and "Session h:S2 " in user:
            return {"points": [_point("Static", DOG.lower(), ["T1"]),  # the same point again: folded, no model
                               _point("Dynamic", CLASSES, ["T4"]), _point("Schedule", MOVED, ["T3", "T4"])]}
        if call == "realmem/dedup":
            vet = next(h for text, h in _handles(user).items() if "vet check" in text)
            return {"decisions": [{"point": "N1", "action": "keep", "target": "", "content": ""},
                                  {"point": "N2", "action": "merge", "target": vet, "content": MERGED}]}
        return {"points": []}
    return script


def _memory(scripted, embedder, requests, **settings):
    cfg = MemoryConfig.model_validate({"name": "realmem", "realmem": {"dedup_min_similarity": -1, **settings}})
    memory = RealMemMemory(cfg, engine=scripted(_script(requests)), embedder=embedder, max_retries=1)
    memory.log.history_id = "h"
    return memory


def test_parse_points_keeps_valid_points_and_types_the_rest():
    points, errors = parse_points({"points": [
        {"type": "static", "tag": "confirmed", "content": " Ann likes tea. ", "turns": "t2"},
        {"type": "Weekly", "tag": "Confirmed", "content": "x", "turns": []},
        {"type": "Dynamic", "tag": "Maybe", "content": "x", "turns": []},
        {"type": "Dynamic", "tag": "Draft", "content": "  ", "turns": []},
        {"type": "Dynamic", "tag": "Draft", "content": "Ann may move.", "turns": [3]},
        "not an object",
        {"type": "Schedule", "tag": "Draft", "content": "Trip on 3 June.", "turns": ["T1", "t1", "T5"]},
    ]})
    assert points == [MemoryPoint("Static", "Confirmed", "Ann likes tea.", ("T2",)),
                      MemoryPoint("Schedule", "Draft", "Trip on 3 June.", ("T1", "T5"))]
    assert [e.index for e in errors] == [1, 2, 3, 4, 5] and all(isinstance(e, OpError) for e in errors)
    for bad in ([1, 2], "x", {"points": "none"}, None):
        pts, errs = parse_points(bad)
        assert pts == [] and len(errs) == 1 and errs[0].reason == "the answer has no 'points' list"


def test_parse_dedup_one_decision_per_point_and_named_targets_only():
    decisions, errors = parse_dedup({"decisions": [
        {"point": "n1", "action": "KEEP", "target": "E9", "content": ""},  # keep ignores the target
        {"point": "N1", "action": "discard", "target": "E1", "content": ""},  # second decision for N1
        {"point": "N2", "action": "merge", "target": "", "content": "x"},  # merge without a stored point
        {"point": "N3", "action": "merge", "target": "e2", "content": "merged"},
        {"point": "N4", "action": "delete", "target": "E1", "content": ""},
        {"point": "N7", "action": "keep", "target": "", "content": ""},
        {"point": "N4", "action": "discard", "target": "E1", "content": 5},
    ]}, ["N1", "N2", "N3", "N4"], ["E1", "E2"])
    assert decisions == {"N1": DedupDecision("N1", "keep"), "N3": DedupDecision("N3", "merge", "E2", "merged")}
    assert [e.index for e in errors] == [1, 2, 4, 5, 6]
    assert parse_dedup({"decisions": "all keep"}, ["N1"], [])[1][0].reason == "the answer has no 'decisions' list"


def test_session_points_are_deduped_and_merge_replaces_the_old_point(scripted, embedder):
    requests: list = []
    memory = _memory(scripted, embedder, requests)
    persona = Persona(id="p", name="Ann", description="a dog owner")
    first = memory.ingest(_session("h:S1"), persona)
    assert [o.op for o in first] == ["ADD", "ADD"]
    vet_id = next(it.id for it in memory.points.values() if it.metadata["content"] == VET)
    ops = memory.ingest(_session("h:S2", date="8 May 2023"), persona)

    assert [o.op for o in ops] == ["DEDUP", "ADD", "MERGE"]
    assert [e["call"] for e in memory.log.entries] == ["realmem/extract", "realmem/extract", "realmem/dedup"]
    items = {it.metadata["content"]: it for it in memory.points.values()}
    assert set(items) == {DOG, CLASSES, MERGED}
    # the merge replaced the old point: its id is gone and no text still holds the old date
    assert vet_id not in memory.points and not any("12 May" in it.text for it in memory.points.values())
    merged = items[MERGED]
    assert ops[2].target_id == vet_id and ops[2].item.id == merged.id
    assert merged.session_id == "h:S2" and merged.text == f"[8 May 2023] {MERGED}"
    assert merged.turn_ids == ["h:S1#t1", "h:S2#t2", "h:S2#t3"]  # both points' turns
    assert merged.metadata["sessions"] == ["h:S1", "h:S2"] and merged.metadata["type"] == "Schedule"
    assert memory.points.resolve(vet_id) == merged.id
    # the repeated point only widened the stored one's provenance
    dog = items[DOG]
    assert dog.session_id == "h:S1" and dog.turn_ids == ["h:S1#t0", "h:S2#t0"]
    assert dog.metadata["sessions"] == ["h:S1", "h:S2"]
    assert items[CLASSES].turn_ids == ["h:S2#t3"] and items[CLASSES].metadata["type"] == "Dynamic"

    # the dedup call saw the batch's new points and stored points, and could only name them
    dedup = memory.log.entries[2]
    assert [r["handle"] for r in dedup["memory_state"]["new"]] == ["N1", "N2"]
    assert {r["id"] for r in dedup["memory_state"]["existing"]} == {dog.id, vet_id}
    props = requests[-1].json_schema["properties"]["decisions"]["items"]["properties"]
    assert props["point"] == {"enum": ["N1", "N2"]} and props["target"] == {"enum": ["", "E1", "E2"]}
    assert "a dog owner" in memory.log.entries[0]["messages"][1]["content"]
    turns_enum = requests[0].json_schema["properties"]["points"]["items"]["properties"]["turns"]["items"]
    assert turns_enum == {"enum": ["T1", "T2", "T3", "T4"]}

    hits = memory.retrieve("When is the vet check for Max?", 1)
    assert hits[0].item.id == merged.id


def test_merges_into_a_replaced_point_follow_it_and_leave_no_stale_copy():
    store = PointStore()
    p1 = Pending(MemoryPoint("Static", "Confirmed", "Bo lives in Paris."), Provenance("h:S1", ("a",), None))
    first = store.keep(p1, None).item.id
    p2 = Pending(MemoryPoint("Static", "Confirmed", "Bo moved to Lyon."), Provenance("h:S2", ("b",), None))
    p3 = Pending(MemoryPoint("Static", "Confirmed", "Bo moved on to Nice."), Provenance("h:S2", ("c",), None))
    handles = {"E1": first}
    mid = apply_decision(store, p2, DedupDecision("N1", "merge", "E1", "Bo lives in Lyon."), handles, None)
    last = apply_decision(store, p3, DedupDecision("N2", "merge", "E1", ""), handles, None)  # E1 was replaced
    assert [it.id for it in store.values()] == [last.item.id]
    (only,) = store.values()
    assert only.text == "Bo moved on to Nice." and only.turn_ids == ["a", "b", "c"]  # empty content: the new point
    assert store.resolve(first) == store.resolve(mid.item.id) == only.id
    gone = Pending(MemoryPoint("Static", "Confirmed", "x"), Provenance("h:S3", ("d",), None))
    store.items.clear()
    try:
        apply_decision(store, gone, DedupDecision("N1", "discard", "E1"), handles, None)
    except OpError as err:
        assert "gone" in err.reason
    else:
        raise AssertionError("a discard into a missing point must raise OpError")


def test_invalid_answers_are_recorded_and_the_build_goes_on(scripted, embedder):
    def script(call, request):
        user = request.messages[1].content
        if call == "realmem/extract" and "Session h:S1 " in user:
            return "no JSON here"
        if call == "realmem/extract" and "Session h:S2 " in user:
            return {"points": [_point("Static", DOG, ["T1"]), _point("Static", "Ann lives in Leeds.", [])]}
        if call == "realmem/extract":
            return {"points": [_point("Dynamic", CLASSES, ["T2"]), _point("Static", "Ann moved to York.", ["T1"])]}
        # a merge naming no stored point is a typed error; the later valid decision for N1 stands
        return {"decisions": [{"point": "N1", "action": "merge", "target": "", "content": "x"},
                              {"point": "N1", "action": "keep", "target": "", "content": ""}]}

    cfg = MemoryConfig.model_validate({"name": "realmem", "realmem": {"dedup_min_similarity": -1}})
    memory = RealMemMemory(cfg, engine=scripted(script), embedder=embedder, max_retries=1)
    assert memory.ingest(_session("h:S1")) == []
    memory.ingest(_session("h:S2"))
    ops = memory.ingest(_session("h:S3"))
    stats = memory.log.stats()
    assert stats["failures"] == 1 and memory.log.entries[0]["error"].startswith("parse")
    assert memory.log.entries[0]["raw_output"] == "no JSON here"
    assert [o.op for o in ops] == ["ADD", "ADD"]  # undecided points are kept, nothing is lost
    assert len(memory) == 4 and stats["op_errors"] == 2  # merge without a target; no decision for N2
    assert any("N2" in e for e in memory.op_errors)
    leeds = next(it for it in memory.points.values() if "Leeds" in it.text)
    assert leeds.turn_ids == [f"h:S2#t{i}" for i in range(4)] and stats["points_without_turns"] == 1


def test_drafts_can_be_left_out_and_a_failed_dedup_call_keeps_the_batch(scripted, embedder):
    def script(call, request):
        if call == "realmem/extract":
            sid = re.search(r"Session (\S+) ", request.messages[1].content).group(1)
            return {"points": [_point("Static", f"Confirmed fact of {sid}."),
                               _point("Dynamic", f"An idea still open in {sid}.", tag="Draft")]}
        return "{broken"

    cfg = MemoryConfig.model_validate({"name": "realmem", "realmem": {"keep_drafts": False,
                                                                      "dedup_min_similarity": -1}})
    memory = RealMemMemory(cfg, engine=scripted(script), embedder=embedder, max_retries=0)
    memory.ingest(_session("h:S1"))
    memory.ingest(_session("h:S2"))
    assert sorted(it.metadata["content"] for it in memory.points.values()) == \
        ["Confirmed fact of h:S1.", "Confirmed fact of h:S2."]
    assert all(it.metadata["tag"] == "Confirmed" for it in memory.points.values())
    assert memory.log.stats()["dedup_failed_batches"] == 1 and memory.log.stats()["failures"] == 1


def test_snapshot_restore_round_trip_continues_identically(scripted, embedder):
    memory = _memory(scripted, embedder, [])
    memory.ingest(_session("h:S1"))
    memory.ingest(_session("h:S2", date="8 May 2023"))
    state = json.loads(json.dumps(memory.snapshot()))
    again = _memory(scripted, embedder, [])
    again.restore(state)
    assert [i.model_dump() for i in again.memory_items()] == [i.model_dump() for i in memory.memory_items()]
    assert again.points.redirect == memory.points.redirect and again.op_errors == memory.op_errors
    query = "vet check"
    assert [r.item.id for r in again.retrieve(query, 3)] == [r.item.id for r in memory.retrieve(query, 3)]
    a = memory.ingest(_session("h:S2", date="9 May 2023"))
    b = again.ingest(_session("h:S2", date="9 May 2023"))
    assert [o.model_dump() for o in a] == [o.model_dump() for o in b]
    assert [i.model_dump() for i in again.memory_items()] == [i.model_dump() for i in memory.memory_items()]
    try:
        again.restore({"name": "dualmem"})
    except ValueError as err:
        assert "realmem" in str(err)
    else:
        raise AssertionError("a snapshot of another framework must be refused")


def test_no_engine_means_recorded_failures_not_a_crash(embedder):
    memory = RealMemMemory(MemoryConfig(name="realmem"), embedder=embedder)
    assert memory.ingest(_session("h:S1")) == [] and len(memory) == 0
    assert memory.log.stats()["failures"] == 1 and memory.log.entries[0]["error"].startswith("engine")
