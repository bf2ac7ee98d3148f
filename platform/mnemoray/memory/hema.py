"""HEMA-style baseline: a compact running summary plus a vector store of raw dialogue chunks.

Two memories side by side, as in HEMA (Hippocampus-inspired Extended Memory Architecture):
- compact memory: one short text the memory model rewrites after every `chunk_turns`
  turns, capped at `summary_chars` (a failed call keeps the previous text);
- vector memory: the raw dialogue cut like the RAG baselines (`MemoryConfig.chunking`,
  default turn pairs, with the session date), embedded into a FAISS index.

`retrieve(query, k)` returns the compact summary first (score 1.0, it frames every
answer) followed by the k-1 chunks nearest to the query; with no summary yet, k chunks.
Chunks keep exact provenance (session, turn ids). The summary is a lossy rewrite of
everything read, so it is not evidence for any particular turn: its `turn_ids` are left
empty (it would otherwise "hit" every gold turn at rank 1), its `session_id` is the last
session that rewrote it and `metadata["sessions"]` lists every session it has read.
Not implemented from the paper: age-weighted pruning of old chunks and the second summary
level for conversations of thousands of turns.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from mnemoray.config import MemoryConfig
from mnemoray.index.vector import VectorIndex
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.chunking import chunk_session
from mnemoray.memory.llm_calls import CallSpec, LLMMemoryFramework
from mnemoray.memory.ops import CoreBlock, CoreOp, OpError, Provenance
from mnemoray.memory.prompts import load_prompt
from mnemoray.memory.trajectory import TrajectoryLog
from mnemoray.memory.transcript import chunk_turns, transcript
from mnemoray.records import MemoryItem, MemoryOp, Persona, RetrievedItem, Session

SUMMARY_ID = "hema-summary"


def parse_summary(value: Any, max_chars: int) -> tuple[str | None, OpError | None]:
    """`{"summary": "..."}` → the new compact text (cut to `max_chars`), or a typed error."""
    text = value.get("summary") if isinstance(value, dict) else None
    if not isinstance(text, str):
        return None, OpError("the answer has no 'summary' string")
    text = text.strip()
    if not text:
        return None, OpError("empty summary")
    return text[:max_chars].strip(), None


def pack_vectors(vectors: np.ndarray) -> dict[str, Any]:
    """float32 matrix → JSON-safe dict (exact bytes, base64)."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    return {"shape": list(arr.shape), "float32": base64.b64encode(arr.tobytes()).decode("ascii")}


def unpack_vectors(packed: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(packed["float32"])
    return np.frombuffer(raw, dtype=np.float32).reshape(packed["shape"]).copy()


class HemaMemory(LLMMemoryFramework, MemoryFramework):
    name = "hema"

    def __init__(self, config: MemoryConfig, engine=None, embedder=None, log: TrajectoryLog | None = None,
                 max_retries: int = 2):
        super().__init__(config, engine, embedder, log, max_retries)
        self.cache = self.embedding_cache()
        self.embedder = self.cache.embedder
        self.vectors = self._new_index()
        self.chunks: list[MemoryItem] = []
        self.block = CoreBlock()  # the compact summary, with the sessions it has read

    def _new_index(self) -> VectorIndex:
        idx = self.config.index
        return VectorIndex(self.embedder.dim, kind=idx.faiss, hnsw_m=idx.hnsw_m, ivf_nlist=idx.ivf_nlist)

    def __len__(self) -> int:
        return len(self.memory_items())

    def summary_item(self) -> MemoryItem | None:
        if not self.block.text:
            return None
        return MemoryItem(id=SUMMARY_ID, text=self.block.text, kind="summary", session_id=self.block.session_id,
                          turn_ids=[], timestamp=self.block.timestamp,
                          metadata={"sessions": list(self.block.sessions), "turns_read": len(self.block.turn_ids)})

    def memory_items(self) -> list[MemoryItem]:
        summary = self.summary_item()
        return ([summary] if summary else []) + list(self.chunks)

    # -- building --------------------------------------------------------------------------------

    def _index_chunks(self, session: Session) -> list[MemoryOp]:
        new = chunk_session(session, self.config.chunking, self.config.include_timestamp)
        if not new:
            return []
        self.vectors.add(self.embedder.encode([it.text for it in new]))
        self.chunks.extend(new)
        return [MemoryOp.add(it) for it in new]

    def _update_summary(self, session: Session) -> list[MemoryOp]:
        prompt = load_prompt("hema", "update")
        limit = self.settings.summary_chars
        ops: list[MemoryOp] = []
        for chunk in chunk_turns(session, self.settings.chunk_turns):
            prov = Provenance(session.id, tuple(t.id for t in chunk), session.timestamp)
            spec = CallSpec(prompt, {"max_chars": limit, "summary": self.block.text or "(empty)",
                                     "session": session.id, "date": session.timestamp or "unknown",
                                     "chunk": transcript(chunk)},
                            session.id, {"summary": self.block.text}, max_chars=limit)
            out = self.model.run([spec])[0]
            if not out.ok:
                continue
            text, error = parse_summary(out.parsed, limit)
            if error is not None:
                self._note_errors(session.id, "update", [error])
                continue
            done, _ = self.block.apply([CoreOp("REWRITE", text)], prov)
            ops.extend(op.model_copy(update={"target_id": SUMMARY_ID, "item": self.summary_item()}) for op in done)
        return ops

    def ingest(self, session: Session, persona: Persona | None = None) -> list[MemoryOp]:
        return self._index_chunks(session) + self._update_summary(session)

    # -- retrieval -------------------------------------------------------------------------------

    def retrieve(self, query: str, k: int) -> list[RetrievedItem]:
        return self.retrieve_many([query], k)[0]

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[RetrievedItem]]:
        if not queries:
            return []
        summary = self.summary_item()
        n_chunks = k - 1 if summary is not None else k
        if n_chunks > 0 and self.chunks:
            scores, ids = self.vectors.search(self.embedder.encode(list(queries)), n_chunks)
        else:
            scores, ids = np.zeros((len(queries), 0)), np.zeros((len(queries), 0), dtype=np.int64)
        out = []
        for row_ids, row_scores in zip(ids, scores):
            hits: list[tuple[MemoryItem, float]] = [(summary, 1.0)] if summary is not None and k > 0 else []
            hits += [(self.chunks[int(i)], float(s)) for i, s in zip(row_ids, row_scores) if i >= 0]
            out.append([RetrievedItem(item=it, score=s, rank=r) for r, (it, s) in enumerate(hits, start=1)])
        return out

    # -- state -----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.model_dump(mode="json"), "summary": self.block.state(),
                "chunks": [it.model_dump(mode="json") for it in self.chunks],
                "vectors": pack_vectors(self.vectors.vectors), "op_errors": list(self.op_errors),
                "stats": self.log.stats()}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"snapshot is of '{state.get('name')}', not '{self.name}'")
        chunks = [MemoryItem.model_validate(x) for x in state["chunks"]]
        vectors = unpack_vectors(state["vectors"])
        if len(chunks) and vectors.shape != (len(chunks), self.embedder.dim):
            raise ValueError(
                f"snapshot vectors {vectors.shape} do not fit {len(chunks)} chunks of dim {self.embedder.dim}"
            )
        self.block = CoreBlock.from_state(state["summary"])
        self.chunks = chunks
        self.vectors = self._new_index()
        if len(chunks):
            self.vectors.add(vectors)
        self.op_errors = list(state.get("op_errors", []))
