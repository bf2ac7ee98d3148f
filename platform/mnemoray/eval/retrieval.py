"""Evaluate one history: feed sessions to a memory in time order, ask each query when due.

Plain Python (no Ray) so it can be unit-tested and reused; the Ray pipeline maps it over
histories. Queries with `visible_sessions = v` are asked after exactly the first v sessions
were ingested, so no memory ever sees the future.

k counts distinct evidence units: a retrieved item that adds no new evidence id at the
gold level (a second turn pair of an already retrieved session, when gold is a session)
is collapsed into the earlier one, as in LongMemEval's turn-to-session evaluation. To
fill k units the memory is asked for `overfetch` × k items. Abstention questions
(`metadata["abstention"]`, LongMemEval `_abs`) have no evidence to find and are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mnemoray.eval.metrics import query_metrics
from mnemoray.memory.base import MemoryFramework
from mnemoray.records import EvalSample, RetrievedItem


@dataclass(frozen=True)
class EvidenceSettings:
    """Cut-offs of the evidence-retrieval metrics and how many items to ask per unit."""

    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    overfetch: int = 5


def collapse_redundant(retrieved: list[RetrievedItem], level: str) -> list[tuple[RetrievedItem, list[str]]]:
    """Drop items whose evidence ids (at the gold level) were all covered by better items."""
    seen: set[str] = set()
    kept = []
    for r in retrieved:
        ids = r.item.evidence_ids(level)
        if not ids or set(ids) - seen:
            kept.append((r, ids))
            seen.update(ids)
    return kept


def evaluate_sample(sample: EvalSample, make_memory: Callable[[], MemoryFramework], ks: Sequence[int],
                    overfetch: int = 5) -> list[dict[str, Any]]:
    history = sample.history
    n = len(history.sessions)
    due: dict[int, list] = defaultdict(list)
    for q in sample.queries:
        if q.metadata.get("abstention"):  # nothing to retrieve by design (LongMemEval `_abs`): not scored
            continue
        v = n if q.visible_sessions is None else max(0, min(q.visible_sessions, n))
        due[v].append(q)
    memory = make_memory()
    depth = max(ks)
    ingested = 0
    rows: list[dict[str, Any]] = []
    for v in sorted(due):
        if v > ingested:
            memory.ingest_many(history.sessions[ingested:v], history.persona)
            ingested = v
        queries = due[v]
        results = memory.retrieve_many([q.text for q in queries], depth * overfetch)
        for q, retrieved in zip(queries, results):
            units = collapse_redundant(retrieved, q.gold_level)[:depth]
            evidence = [ids for _, ids in units]
            gold = set(q.gold_ids)
            hits = sorted({e for ids in evidence for e in ids if e in gold})
            rows.append(
                {
                    "query_id": q.id,
                    "history_id": history.id,
                    "query": q.text,
                    "category": q.category,
                    "gold_level": q.gold_level,
                    "gold": list(q.gold_ids),
                    "visible_sessions": v,
                    "retrieved": [r.item.id for r, _ in units],
                    "retrieved_evidence": evidence,
                    "hits": hits,
                    "metrics": query_metrics(evidence, gold, ks),
                }
            )
    return rows
