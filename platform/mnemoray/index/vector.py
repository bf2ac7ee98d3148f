"""FAISS vector store: exact inner product by default, HNSW or IVF for large stores."""

from __future__ import annotations

from typing import Literal

import faiss
import numpy as np

IndexKind = Literal["flat", "hnsw", "ivf"]


class VectorIndex:
    """Append-only vector index over normalised vectors; rebuilt lazily where FAISS needs training."""

    def __init__(self, dim: int, kind: IndexKind = "flat", hnsw_m: int = 32, hnsw_ef_search: int = 128,
                 ivf_nlist: int = 1024, ivf_nprobe: int = 32):
        self.dim = dim
        self.kind = kind
        self.hnsw_m = hnsw_m
        self.hnsw_ef_search = hnsw_ef_search
        self.ivf_nlist = ivf_nlist
        self.ivf_nprobe = ivf_nprobe
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._index: faiss.Index | None = None
        self._indexed = 0

    def __len__(self) -> int:
        return int(self._vectors.shape[0])

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        self._vectors = np.concatenate([self._vectors, vectors]) if len(self) else vectors.copy()

    def _new_index(self, n: int) -> faiss.Index:
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.hnsw_ef_search
            return index
        if self.kind == "ivf":
            nlist = max(1, min(self.ivf_nlist, n // 39))
            if nlist > 1:
                quantizer = faiss.IndexFlatIP(self.dim)
                index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
                index.train(self._vectors)
                index.nprobe = min(self.ivf_nprobe, nlist)
                return index
        return faiss.IndexFlatIP(self.dim)

    def _sync(self) -> faiss.Index:
        n = len(self)
        if self._index is None or (self.kind == "ivf" and self._indexed < n):
            # IVF centroids are trained on what is there; retrain when the store grew.
            self._index = self._new_index(n)
            self._indexed = 0
        if self._indexed < n:
            self._index.add(self._vectors[self._indexed:])
            self._indexed = n
        return self._index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if len(self) == 0 or k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores, ids = self._sync().search(queries, min(k, len(self)))
        return scores, ids

    def state(self) -> dict:
        return {"dim": self.dim, "kind": self.kind, "vectors": self._vectors.copy()}

    def load_state(self, state: dict) -> None:
        self._vectors = np.asarray(state["vectors"], dtype=np.float32).reshape(-1, self.dim)
        self._index = None
        self._indexed = 0
