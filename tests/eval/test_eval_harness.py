"""The harness feeds sessions in order and never lets a query see later sessions."""

from mnemoray.eval.retrieval import collapse_redundant, evaluate_sample
from mnemoray.memory.base import MemoryFramework
from mnemoray.records import EvalSample, EvidenceQuery, History, MemoryItem, RetrievedItem, Session, Turn


class SpyMemory(MemoryFramework):
    """Control-flow double: records what was ingested when each query was asked."""

    name = "spy"

    def __init__(self):
        self.sessions: list[str] = []
        self.seen_at_query: dict[str, list[str]] = {}

    def ingest(self, session, persona=None):
        self.sessions.append(session.id)
        return []

    def memory_items(self):
        return [MemoryItem(id=f"{s}#c0", text=s, session_id=s, turn_ids=[f"{s}#t0"]) for s in reversed(self.sessions)]

    def retrieve(self, query, k):
        self.seen_at_query[query] = list(self.sessions)
        items = self.memory_items()
        return [RetrievedItem(item=it, score=1.0, rank=i + 1) for i, it in enumerate(items[:k])]

    def snapshot(self):
        return {"sessions": self.sessions}

    def restore(self, state):
        self.sessions = list(state["sessions"])


def _history(n):
    return History(id="h", dataset="test", sessions=[
        Session(id=f"s{i}", turns=[Turn(id=f"s{i}#t0", speaker="u", text=f"turn {i}", index=0)]) for i in range(n)])


def test_queries_are_asked_after_exactly_their_visible_sessions():
    queries = [
        EvidenceQuery(id="a", history_id="h", text="qa", gold_ids=["s1"], gold_level="session", visible_sessions=2),
        EvidenceQuery(id="b", history_id="h", text="qb", gold_ids=["s0"], gold_level="session", visible_sessions=0),
        EvidenceQuery(id="c", history_id="h", text="qc", gold_ids=["s3#t0"], gold_level="turn"),
    ]
    spy = SpyMemory()
    rows = evaluate_sample(EvalSample(history=_history(4), queries=queries), lambda: spy, [1, 2])
    assert spy.seen_at_query == {"qb": [], "qa": ["s0", "s1"], "qc": ["s0", "s1", "s2", "s3"]}
    by_id = {r["query_id"]: r for r in rows}
    assert by_id["b"]["retrieved"] == [] and by_id["b"]["metrics"]["recall_any@2"] == 0.0
    assert by_id["a"]["retrieved"] == ["s1#c0", "s0#c0"] and by_id["a"]["hits"] == ["s1"]
    assert by_id["a"]["metrics"]["recall_all@1"] == 1.0
    assert by_id["c"]["metrics"]["recall_any@1"] == 1.0
    assert spy.sessions == ["s0", "s1", "s2", "s3"]  # each session ingested once


def test_collapse_keeps_first_item_per_evidence_unit():
    def r(i, sid, turns):
        return RetrievedItem(item=MemoryItem(id=i, text=i, session_id=sid, turn_ids=turns), score=0, rank=0)

    items = [r("a", "s1", ["s1#0", "s1#1"]), r("b", "s1", ["s1#2"]), r("c", "s2", ["s2#0"])]
    assert [x.item.id for x, _ in collapse_redundant(items, "session")] == ["a", "c"]
    assert [x.item.id for x, _ in collapse_redundant(items, "turn")] == ["a", "b", "c"]
