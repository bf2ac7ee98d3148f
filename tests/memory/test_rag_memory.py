import pytest

from mnemoray.config import MemoryConfig
from mnemoray.memory import build_memory
from mnemoray.memory.chunking import chunk_session
from mnemoray.records import Session, Turn


def _session(sid, date, lines):
    return Session(id=sid, timestamp=date, turns=[
        Turn(id=f"{sid}#t{i}", speaker=spk, text=txt, index=i) for i, (spk, txt) in enumerate(lines)])


SESSIONS = [
    _session("s1", "2023-05-01", [("Ana", "I just adopted a golden retriever named Biscuit."),
                                  ("Bo", "Congrats! Dogs are great company."),
                                  ("Ana", "My sister is moving to Lisbon in June."),
                                  ("Bo", "Portugal is lovely in summer.")]),
    _session("s2", "2023-06-10", [("Ana", "I started a pottery class on Tuesdays."),
                                  ("Bo", "What are you making?"),
                                  ("Ana", "Mostly bowls and a vase for my mother."),
                                  ("Bo", "Sounds relaxing.")]),
]


@pytest.mark.parametrize("chunking,expected", [("turn", 4), ("pair", 2), ("session", 1)])
def test_chunking_keeps_provenance(chunking, expected):
    items = chunk_session(SESSIONS[0], chunking)
    assert len(items) == expected
    assert [t for it in items for t in it.turn_ids] == [f"s1#t{i}" for i in range(4)]
    assert all(it.session_id == "s1" and it.text.startswith("[2023-05-01]") for it in items)
    assert chunk_session(SESSIONS[0], "pair", include_timestamp=False)[0].text.startswith("Ana:")


@pytest.mark.parametrize("name", ["rag-dense", "rag-bm25", "rag-hybrid"])
def test_baselines_retrieve_the_right_turns(name, embedder):
    memory = build_memory(
        MemoryConfig(name=name, chunking="turn"), **({"embedder": embedder} if name != "rag-bm25" else {})
    )
    assert memory.retrieve("anything", 3) == []  # empty memory
    ops = memory.ingest_many(SESSIONS)
    assert len(ops) == 8 and all(op.op == "ADD" and op.item.session_id for op in ops)
    top = memory.retrieve("What pottery class did Ana take?", 3)
    assert top[0].item.turn_ids == ["s2#t0"]
    assert [r.rank for r in top] == [1, 2, 3]
    top = memory.retrieve("Where is Ana's sister moving?", 2)
    assert "s1#t2" in [t for r in top for t in r.item.turn_ids]


def test_snapshot_restore_roundtrip(embedder):
    cfg = MemoryConfig(name="rag-hybrid", chunking="pair")
    memory = build_memory(cfg, embedder=embedder)
    memory.ingest(SESSIONS[0])
    state = memory.snapshot()
    clone = build_memory(cfg, embedder=embedder)
    clone.restore(state)
    q = "golden retriever name"
    assert [r.item.id for r in clone.retrieve(q, 2)] == [r.item.id for r in memory.retrieve(q, 2)]
    # both continue identically after restore
    memory.ingest(SESSIONS[1])
    clone.ingest(SESSIONS[1])
    assert [r.item.id for r in clone.retrieve("pottery", 3)] == [r.item.id for r in memory.retrieve("pottery", 3)]
    with pytest.raises(ValueError, match="snapshot is of"):
        build_memory(MemoryConfig(name="rag-bm25")).restore(state)


def test_recency_weight_prefers_recent_sessions(embedder):
    old = _session("old", "2023-01-01", [("U", "My flight to Tokyo is on Friday.")])
    new = _session("new", "2023-03-01", [("U", "My flight to Osaka is on Monday.")])
    base = MemoryConfig(name="rag-hybrid", chunking="turn")
    plain = build_memory(base, embedder=embedder)
    plain.ingest_many([new, old])  # "old" ingested last: most recent by position
    recent = build_memory(base.model_copy(update={"index": base.index.model_copy(update={"recency_weight": 5.0})}),
                          embedder=embedder)
    recent.ingest_many([new, old])
    assert recent.retrieve("When is my flight?", 1)[0].item.session_id == "old"
    recent2 = build_memory(base.model_copy(update={"index": base.index.model_copy(update={"recency_weight": 5.0})}),
                           embedder=embedder)
    recent2.ingest_many([old, new])
    assert recent2.retrieve("When is my flight?", 1)[0].item.session_id == "new"
