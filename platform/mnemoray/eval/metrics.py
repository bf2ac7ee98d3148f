"""Evidence-retrieval metrics (see docs/ARCHITECTURE.md), pure functions over ranked evidence ids.

A retrieved item may cover several evidence ids (a session chunk covers many turns) or
share one with a higher-ranked item (two turn pairs of the same session). So:
- recall_any@k: 1 if the top-k items cover at least one gold id.
- recall_all@k: 1 if the top-k items cover every gold id.
- ndcg@k: binary relevance; item i is relevant when it covers a gold id that no
  higher-ranked item covered; ideal DCG puts min(|gold|, k) relevant items first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

METRIC_NAMES = ("recall_any", "recall_all", "ndcg")


def covered(ranked: Sequence[Iterable[str]], gold: set[str], k: int) -> set[str]:
    hit: set[str] = set()
    for ids in ranked[:k]:
        hit.update(i for i in ids if i in gold)
    return hit


def recall_any(ranked: Sequence[Iterable[str]], gold: set[str], k: int) -> float:
    return 1.0 if covered(ranked, gold, k) else 0.0


def recall_all(ranked: Sequence[Iterable[str]], gold: set[str], k: int) -> float:
    return 1.0 if gold and covered(ranked, gold, k) == gold else 0.0


def ndcg(ranked: Sequence[Iterable[str]], gold: set[str], k: int) -> float:
    if not gold:
        return 0.0
    seen: set[str] = set()
    dcg = 0.0
    for pos, ids in enumerate(ranked[:k], start=1):
        new = {i for i in ids if i in gold} - seen
        if new:
            dcg += 1.0 / math.log2(pos + 1)
            seen |= new
    ideal = sum(1.0 / math.log2(pos + 1) for pos in range(1, min(len(gold), k) + 1))
    return dcg / ideal


def query_metrics(ranked: Sequence[Iterable[str]], gold: Iterable[str], ks: Sequence[int]) -> dict[str, float]:
    gold_set = set(gold)
    ranked = [list(r) for r in ranked]
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall_any@{k}"] = recall_any(ranked, gold_set, k)
        out[f"recall_all@{k}"] = recall_all(ranked, gold_set, k)
        out[f"ndcg@{k}"] = ndcg(ranked, gold_set, k)
    return out


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    keys = rows[0].keys()
    return {key: sum(r[key] for r in rows) / len(rows) for key in keys}


def metric_order(ks: Sequence[int]) -> list[str]:
    return [f"{m}@{k}" for m in METRIC_NAMES for k in ks]
