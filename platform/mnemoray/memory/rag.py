"""LLM-free baselines: retrieval over raw dialogue chunks (dense, BM25, hybrid).

They are the yardstick every LLM-built memory must beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mnemoray.config.memory import MemoryConfig
from mnemoray.index.embedder import Embedder
from mnemoray.index.fusion import reciprocal_rank_fusion
from mnemoray.index.lexical import BM25Index
from mnemoray.index.vector import VectorIndex
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.chunking import chunk_session
from mnemoray.records import MemoryItem, MemoryOp, Persona, RetrievedItem, Session


class RagMemory(MemoryFramework):
    """Chunks of raw dialogue in a FAISS index and/or a BM25 index."""

    def __init__(self, config: MemoryConfig, embedder: Embedder | None = None, *, dense: bool, bm25: bool):
        """`dense` / `bm25`: which indexes this variant keeps (the registry's options for
        rag-dense, rag-bm25 and rag-hybrid)."""
        if not (dense or bm25):
            raise ValueError("a RAG memory needs a dense or a BM25 index (or both)")
        self.config = config
        self.name = config.name
        self.use_dense = dense
        self.use_bm25 = bm25
        idx = config.index
        self.embedder = None
        self.vectors = None
        if self.use_dense:
            self.embedder = embedder or Embedder.from_index_config(idx)
            self.vectors = VectorIndex(self.embedder.dim, kind=idx.faiss, hnsw_m=idx.hnsw_m, ivf_nlist=idx.ivf_nlist)
        self.bm25 = BM25Index(idx.bm25_k1, idx.bm25_b) if self.use_bm25 else None
        self.items: list[MemoryItem] = []

    def __len__(self) -> int:
        return len(self.items)

    def memory_items(self) -> list[MemoryItem]:
        return list(self.items)

    def ingest(self, session: Session, persona: Persona | None = None) -> list[MemoryOp]:
        return self.ingest_many([session], persona)

    def ingest_many(self, sessions: Sequence[Session], persona: Persona | None = None) -> list[MemoryOp]:
        new: list[MemoryItem] = []
        for s in sessions:
            new.extend(chunk_session(s, self.config.chunking, self.config.include_timestamp))
        if not new:
            return []
        texts = [it.text for it in new]
        if self.vectors is not None:
            self.vectors.add(self.embedder.encode(texts))
        if self.bm25 is not None:
            self.bm25.add(texts)
        self.items.extend(new)
        return [MemoryOp.add(it) for it in new]

    def retrieve(self, query: str, k: int) -> list[RetrievedItem]:
        return self.retrieve_many([query], k)[0]

    def _dense(self, queries: Sequence[str], depth: int) -> list[list[tuple[int, float]]]:
        scores, ids = self.vectors.search(self.embedder.encode(list(queries)), depth)
        return [[(int(i), float(s)) for i, s in zip(row_ids, row_s) if i >= 0] for row_ids, row_s in zip(ids, scores)]

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[RetrievedItem]]:
        if not self.items or not queries:
            return [[] for _ in queries]
        depth = max(k, self.config.index.candidates) if (self.use_dense and self.use_bm25) else k
        dense = self._dense(queries, depth) if self.use_dense else None
        lexical = self.bm25.search(list(queries), depth) if self.use_bm25 else None
        results = []
        for qi in range(len(queries)):
            if dense is not None and lexical is not None:
                ranked = self._fuse(dense[qi], lexical[qi])
            else:
                ranked = (dense or lexical)[qi]
            results.append(
                [RetrievedItem(item=self.items[i], score=s, rank=r) for r, (i, s) in enumerate(ranked[:k], start=1)]
            )
        return results

    def _fuse(self, dense: list[tuple[int, float]], lexical: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """RRF of the dense and BM25 rankings, plus an optional recency ranking of the candidates.

        Items are stored in time order, so a higher position means a more recent session.
        """
        rankings = [[i for i, _ in dense], [i for i, _ in lexical]]
        weights = [1.0, 1.0]
        w = self.config.index.recency_weight
        if w > 0:
            rankings.append(sorted({i for r in rankings for i in r}, reverse=True))
            weights.append(w)
        return reciprocal_rank_fusion(rankings, k=self.config.index.rrf_k, weights=weights)

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config.model_dump(mode="json"),
            "items": [it.model_dump(mode="json") for it in self.items],
            "vectors": self.vectors.state() if self.vectors is not None else None,
            "bm25": self.bm25.state() if self.bm25 is not None else None,
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"snapshot is of '{state.get('name')}', not '{self.name}'")
        self.items = [MemoryItem.model_validate(it) for it in state["items"]]
        if self.vectors is not None:
            self.vectors.load_state(state["vectors"])
        if self.bm25 is not None:
            self.bm25.load_state(state["bm25"])
