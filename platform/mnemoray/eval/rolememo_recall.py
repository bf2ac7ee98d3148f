"""Recall@k Fact / Insight on RoleMemo-format data (see docs/ARCHITECTURE.md), plain Python.

For every query, the memory retrieves its top-k items at the query's visible point (the
sessions before the query session, as in every other harness). Then, with real sentence
embeddings (the project's all-MiniLM-L6-v2 unless configured otherwise):

- each gold fact fragment scores the max cosine similarity to the k retrieved items and
  is a hit when that is >= the fact threshold (0.60);
- the gold core insight likewise, against the insight threshold (0.65).

Recall per stream is pooled: hits over all gold fragments (or insights) of the run, not a
mean of per-query ratios, so a query with more fragments weighs more. The same pooling is
reported per persona and per insight type. A query whose memory returned nothing scores
its gold items as misses (never left out).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mnemoray.eval.qa import retrieve_at_visible_points
from mnemoray.memory.base import MemoryFramework
from mnemoray.records import EvalSample

STREAMS = ("fact", "insight")


class TextEncoder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class RecallSettings:
    k: int = 10
    fact_threshold: float = 0.60
    insight_threshold: float = 0.65
    max_queries: int | None = None
    item_chars: int = 300  # retrieved text kept per item in per_query.jsonl


def metric_names(k: int) -> tuple[str, str]:
    return f"fact_recall@{k}", f"insight_recall@{k}"


def max_similarities(gold: np.ndarray, items: np.ndarray) -> list[tuple[float | None, int | None]]:
    """Per gold vector: (max cosine to any item, index of that item); (None, None) without items.

    Vectors must be L2-normalised; products are taken in float64.
    """
    if len(gold) == 0:
        return []
    if len(items) == 0:
        return [(None, None)] * len(gold)
    sims = np.asarray(gold, dtype=np.float64) @ np.asarray(items, dtype=np.float64).T
    best = sims.argmax(axis=1)
    return [(float(sims[i, j]), int(j)) for i, j in enumerate(best)]


def is_hit(similarity: float | None, threshold: float) -> bool:
    return similarity is not None and similarity >= threshold


def pooled_recall(rows: Sequence[dict[str, Any]], stream: str) -> dict[str, Any]:
    """Hits over gold items of one stream across rows; recall None when there is no gold item."""
    gold = sum(len(r[stream]) for r in rows)
    hits = sum(g["hit"] for r in rows for g in r[stream])
    return {"recall": hits / gold if gold else None, "hits": hits, "gold": gold}


def evaluate_rolememo_sample(sample: EvalSample, make_memory: Callable[[], MemoryFramework], encoder: TextEncoder,
                             s: RecallSettings) -> list[dict[str, Any]]:
    asked = retrieve_at_visible_points(sample, make_memory, s.k, s.max_queries)
    if not asked:
        return []
    texts: dict[str, int] = {}

    def slot(text: str) -> int:
        return texts.setdefault(text, len(texts))

    plan = []
    for q, v, retrieved in asked:
        fragments = [str(f) for f in q.metadata.get("core_fragments") or [] if str(f).strip()]
        insights = [q.answer] if q.answer and q.answer.strip() else []
        items = [r.item.text for r in retrieved[: s.k]]
        plan.append((q, v, retrieved[: s.k], [slot(t) for t in fragments], [slot(t) for t in insights],
                     [slot(t) for t in items]))
    vecs = encoder.encode(list(texts))
    names = list(texts)
    persona = sample.history.persona
    rows = []
    for q, v, retrieved, frag_ix, ins_ix, item_ix in plan:
        item_vecs = vecs[item_ix] if item_ix else np.zeros((0, vecs.shape[1]), dtype=vecs.dtype)
        row: dict[str, Any] = {
            "query_id": q.id, "history_id": sample.history.id,
            "persona_id": persona.id if persona else sample.history.id,
            "persona_name": persona.name if persona else "",
            "category": q.category, "query": q.text, "visible_sessions": v,
            "retrieved": [r.item.id for r in retrieved],
            "retrieved_text": [r.item.text[: s.item_chars] for r in retrieved],
        }
        for stream, ix, threshold in (("fact", frag_ix, s.fact_threshold), ("insight", ins_ix, s.insight_threshold)):
            sims = max_similarities(vecs[ix] if ix else np.zeros((0, vecs.shape[1])), item_vecs)
            row[stream] = [
                {
                    "text": names[i],
                    "max_similarity": sim,
                    "best_item": None if j is None else retrieved[j].item.id,
                    "hit": is_hit(sim, threshold),
                }
                for i, (sim, j) in zip(ix, sims)
            ]
        row["fact_hits"] = sum(g["hit"] for g in row["fact"])
        row["insight_hits"] = sum(g["hit"] for g in row["insight"])
        rows.append(row)
    return rows


def _recalls(rows: Sequence[dict[str, Any]], k: int) -> dict[str, Any]:
    fact, insight = (pooled_recall(rows, st) for st in STREAMS)
    f_name, i_name = metric_names(k)
    return {"n": len(rows), f_name: fact["recall"], i_name: insight["recall"],
            "fact_hits": fact["hits"], "fact_gold": fact["gold"],
            "insight_hits": insight["hits"], "insight_gold": insight["gold"]}


def summarize_rolememo(rows: list[dict[str, Any]], memory: str, s: RecallSettings,
                       extra: dict | None = None) -> dict[str, Any]:
    """metrics.json content: pooled recall per stream, overall, per persona and per insight type."""
    by_persona: dict[str, list] = defaultdict(list)
    by_cat: dict[str, list] = defaultdict(list)
    for r in rows:
        by_persona[r["persona_id"]].append(r)
        by_cat[str(r.get("category") or "all")].append(r)
    overall = _recalls(rows, s.k)
    f_name, i_name = metric_names(s.k)
    per_persona = {}
    for p, rs in sorted(by_persona.items()):
        per_persona[p] = _recalls(rs, s.k) | {"name": rs[0]["persona_name"]}
    return {
        "dataset": "rolememo",
        "memory": memory,
        "eval": "rolememo",
        "n_queries": len(rows),
        "n_histories": len({r["history_id"] for r in rows}),
        "k": s.k,
        "thresholds": {"fact": s.fact_threshold, "insight": s.insight_threshold},
        "metrics": {f_name: overall[f_name], i_name: overall[i_name]},
        "pooled": {st: {"hits": overall[f"{st}_hits"], "gold": overall[f"{st}_gold"]} for st in STREAMS},
        "by_persona": per_persona,
        "by_category": {c: _recalls(rs, s.k) for c, rs in sorted(by_cat.items())},
        **(extra or {}),
    }
