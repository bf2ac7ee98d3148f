"""BM25 over memory texts through `bm25s`, with English stopwords and Snowball stemming."""

from __future__ import annotations

import bm25s

try:
    import Stemmer

    _STEMMER = Stemmer.Stemmer("english")
except ImportError:  # pragma: no cover - PyStemmer is a dependency, but stay usable without it
    _STEMMER = None


def tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False)


class BM25Index:
    """Append-only BM25 index; statistics are recomputed lazily after additions."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1 = k1
        self.b = b
        self._tokens: list[list[str]] = []
        self._retriever: bm25s.BM25 | None = None
        self._indexed = -1

    def __len__(self) -> int:
        return len(self._tokens)

    def add(self, texts: list[str]) -> None:
        self._tokens.extend(tokenize(texts))

    def _sync(self) -> bm25s.BM25:
        if self._retriever is None or self._indexed != len(self._tokens):
            retriever = bm25s.BM25(k1=self.k1, b=self.b)
            # bm25s rejects empty documents; give them a placeholder token that never matches.
            retriever.index([t or ["\x00"] for t in self._tokens], show_progress=False)
            self._retriever = retriever
            self._indexed = len(self._tokens)
        return self._retriever

    def search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        """Per query, (position, score) pairs with a positive score, best first."""
        if not self._tokens or k <= 0:
            return [[] for _ in queries]
        retriever = self._sync()
        out: list[list[tuple[int, float]]] = []
        for q in tokenize(queries):
            if not q:
                out.append([])
                continue
            ids, scores = retriever.retrieve([q], k=min(k, len(self._tokens)), show_progress=False)
            out.append([(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0])
        return out

    def state(self) -> dict:
        return {"k1": self.k1, "b": self.b, "tokens": [list(t) for t in self._tokens]}

    def load_state(self, state: dict) -> None:
        self._tokens = [list(t) for t in state["tokens"]]
        self._retriever = None


