"""HEMA-style baseline: compact summary per chunk, raw chunks in a vector index, summary-first retrieval, state."""

from __future__ import annotations

import json
import re

import numpy as np

from mnemoray.config import MemoryConfig
from mnemoray.memory.hema import SUMMARY_ID, HemaMemory, pack_vectors, parse_summary, unpack_vectors
from mnemoray.records import Session, Turn

LINES = ["I adopted a rescue dog named Max.", "How is Max doing?", "He loves long walks in the park.",
         "I started pottery classes on Tuesdays.", "What do you make?", "Mostly bowls, and a mug for my sister.",
         "My sister Jo lives in Leeds.", "Do you visit her often?"]


def _session(sid: str, n: int, date: str = "1 May 2023") -> Session:
    return Session(id=sid, timestamp=date, turns=[
        Turn(id=f"{sid}#t{i}", speaker="Ann" if i % 2 == 0 else "Bo", text=LINES[i % len(LINES)], index=i)
        for i in range(n)])


def _cfg(**hema) -> MemoryConfig:
    return MemoryConfig.model_validate({"name": "hema", "chunking": "pair", "hema": {"chunk_turns": 4, **hema}})


def _writer(call, request):
    """Appends the first line of each chunk to the summary (keeps the test's summary readable)."""
    user = request.messages[1].content
    previous = re.search(r"Current compact memory:\n(.*?)\n\n", user, re.DOTALL).group(1)
    first = re.search(r"\):\n(.*)", user).group(1)
    text = first if previous == "(empty)" else f"{previous} / {first}"
    return {"summary": text[-150:]}


def test_parse_summary_gives_text_or_typed_error():
    assert parse_summary({"summary": "  Ann has a dog.  "}, 100) == ("Ann has a dog.", None)
    assert parse_summary({"summary": "abcdef"}, 3) == ("abc", None)
    for bad in ({"summary": "   "}, {"summary": 3}, {"memory": "x"}, ["x"], None, "x"):
        text, error = parse_summary(bad, 100)
        assert text is None and error is not None and error.reason


def test_vectors_pack_exactly():
    vecs = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    packed = json.loads(json.dumps(pack_vectors(vecs)))
    assert np.array_equal(unpack_vectors(packed), vecs)


def test_ingest_indexes_chunks_and_rewrites_the_summary_per_chunk(scripted, embedder):
    engine = scripted(_writer)
    memory = HemaMemory(_cfg(), engine=engine, embedder=embedder)
    memory.log.history_id = "h"
    ops = memory.ingest(_session("h:S1", 6))
    memory.ingest(_session("h:S2", 8, date="9 May 2023"))
    # 6 turns in chunks of 4 → 2 summary calls, 8 turns → 2 more; every call saw the previous text
    assert [e["call"] for e in memory.log.entries] == ["hema/update"] * 4
    assert memory.log.entries[0]["memory_state"] == {"summary": ""}
    assert memory.log.entries[1]["memory_state"] == {"summary": "Ann: I adopted a rescue dog named Max."}
    assert [o.op for o in ops] == ["ADD"] * 3 + ["REWRITE"] * 2
    assert len(memory.chunks) == 3 + 4 and len(memory.vectors) == 7 and len(memory) == 8
    chunk = memory.chunks[0]
    assert chunk.kind == "chunk" and chunk.turn_ids == ["h:S1#t0", "h:S1#t1"] and chunk.text.startswith("[1 May 2023]")
    summary = memory.summary_item()
    assert summary.id == SUMMARY_ID and summary.kind == "summary" and summary.session_id == "h:S2"
    assert summary.turn_ids == [] and summary.metadata["sessions"] == ["h:S1", "h:S2"]
    assert summary.metadata["turns_read"] == 14 and summary.text.endswith("/ Ann: What do you make?")
    assert len(summary.text) <= 150


def test_retrieval_puts_the_summary_first_then_k_minus_1_chunks(scripted, embedder):
    memory = HemaMemory(_cfg(), engine=scripted(_writer), embedder=embedder)
    memory.ingest(_session("h:S1", 8))
    hits = memory.retrieve("Where does Ann's sister live?", 3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].item.id == SUMMARY_ID and hits[0].score == 1.0
    assert hits[1].item.turn_ids == ["h:S1#t6", "h:S1#t7"]  # "My sister Jo lives in Leeds."
    assert hits[1].score >= hits[2].score and all(h.item.kind == "chunk" for h in hits[1:])
    assert [h.item.id for h in memory.retrieve("sister", 1)] == [SUMMARY_ID]
    assert memory.retrieve("sister", 0) == []
    many = memory.retrieve_many(["pottery", "dog"], 2)
    assert [len(r) for r in many] == [2, 2]
    assert many[0][1].item.turn_ids == ["h:S1#t2", "h:S1#t3"] and many[1][1].item.turn_ids == ["h:S1#t0", "h:S1#t1"]


def test_failed_or_invalid_answers_keep_the_previous_summary(scripted, embedder):
    answers = iter([{"summary": "Ann adopted Max."}, "not JSON", {"summary": "x" * 500}])
    memory = HemaMemory(_cfg(summary_chars=100), engine=scripted(lambda call, req: next(answers)),
                        embedder=embedder, max_retries=1)
    memory.ingest(_session("h:S1", 8))  # chunk 1 ok; chunk 2: bad JSON, then too long for the schema
    assert memory.summary_item().text == "Ann adopted Max." and len(memory.chunks) == 4
    stats = memory.log.stats()
    assert stats["calls"] == 2 and stats["failures"] == 1
    assert memory.log.entries[1]["error"].startswith("schema")
    assert memory.summary_item().metadata["sessions"] == ["h:S1"]
    # no summary yet and no engine: retrieval is chunks only
    bare = HemaMemory(_cfg(), embedder=embedder)
    bare.ingest(_session("h:S1", 4))
    assert bare.summary_item() is None and bare.log.stats()["failures"] == 1
    assert [h.item.kind for h in bare.retrieve("dog", 5)] == ["chunk", "chunk"]


def test_snapshot_restore_round_trip_continues_identically(scripted, embedder):
    memory = HemaMemory(_cfg(), engine=scripted(_writer), embedder=embedder)
    memory.ingest(_session("h:S1", 6))
    state = json.loads(json.dumps(memory.snapshot()))
    again = HemaMemory(_cfg(), engine=scripted(_writer), embedder=embedder)
    again.restore(state)
    assert [i.model_dump() for i in again.memory_items()] == [i.model_dump() for i in memory.memory_items()]
    assert np.array_equal(again.vectors.vectors, memory.vectors.vectors)
    memory.ingest(_session("h:S2", 8))
    again.ingest(_session("h:S2", 8))
    assert [i.model_dump() for i in again.memory_items()] == [i.model_dump() for i in memory.memory_items()]
    query = "Who lives in Leeds?"
    assert [(h.item.id, round(h.score, 5)) for h in again.retrieve(query, 4)] == \
        [(h.item.id, round(h.score, 5)) for h in memory.retrieve(query, 4)]
    broken = dict(state, vectors=pack_vectors(np.zeros((2, 3), np.float32)))
    try:
        HemaMemory(_cfg(), embedder=embedder).restore(broken)
    except ValueError as err:
        assert "do not fit" in str(err)
    else:
        raise AssertionError("vectors that do not fit the chunks must be refused")
