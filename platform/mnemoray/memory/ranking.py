"""Dense ranking of a small, changing set of memory items.

LLM-built stores replace and delete items, which append-only FAISS indexes do not like;
per history they hold hundreds to a few thousand items, so an exact cosine over cached
embeddings (keyed by text, so an item is embedded once) is both simple and fast enough.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mnemoray.records import MemoryItem


class EmbeddingCache:
    def __init__(self, embedder):
        self.embedder = embedder
        self._vecs: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vecs))
        if missing:
            for text, vec in zip(missing, self.embedder.encode(missing)):
                self._vecs[text] = vec
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.stack([self._vecs[t] for t in texts])


def rank_items(
    cache: EmbeddingCache, queries: Sequence[str], items: Sequence[MemoryItem], k: int
) -> list[list[tuple[int, float]]]:
    """For each query, (item index, cosine) of the k most similar items, best first (ties: older first)."""
    if not items or not queries or k <= 0:
        return [[] for _ in queries]
    q = cache.encode(list(queries))
    m = cache.encode([it.text for it in items])
    scores = q @ m.T
    out = []
    for row in scores:
        order = np.lexsort((np.arange(len(row)), -row))[:k]
        out.append([(int(i), float(row[i])) for i in order])
    return out
