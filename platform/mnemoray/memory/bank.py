"""Memory banks on disk: one Parquet row per memory item, with provenance columns.

Columns: history_id, framework, id, kind, text, session_id, turn_ids (list of str),
sessions (list of str), timestamp, metadata (JSON text). `BankMemory` serves a built bank
to the retrieval harness: it ranks the bank's items by embedding, shows only items written
by sessions the harness has already fed (`ingest_many`), and expands insights into the
facts they cite — so LLM-built memory is scored against evidence like any baseline.
An item updated in a later session counts as written by that session.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.ranking import EmbeddingCache, rank_items
from mnemoray.records import MemoryItem, MemoryOp, Persona, RetrievedItem, Session

BANK_SCHEMA = pa.schema([
    ("history_id", pa.string()), ("framework", pa.string()), ("id", pa.string()), ("kind", pa.string()),
    ("text", pa.string()), ("session_id", pa.string()), ("turn_ids", pa.list_(pa.string())),
    ("sessions", pa.list_(pa.string())), ("timestamp", pa.string()), ("metadata", pa.string()),
])


def bank_rows(history_id: str, framework: str, items: Sequence[MemoryItem]) -> list[dict[str, Any]]:
    return [{"history_id": history_id, "framework": framework, "id": it.id, "kind": it.kind, "text": it.text,
             "session_id": it.session_id, "turn_ids": list(it.turn_ids),
             "sessions": list(it.metadata.get("sessions", [it.session_id] if it.session_id else [])),
             "timestamp": it.timestamp, "metadata": json.dumps(it.metadata, ensure_ascii=False, sort_keys=True)}
            for it in items]


def write_bank(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=BANK_SCHEMA), path)


def read_bank(path: Path, history_id: str | None = None) -> list[MemoryItem]:
    """Items of a bank file or folder of bank files, optionally of one history only."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no memory bank here")
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    items = []
    for f in files:
        for row in pq.read_table(f).to_pylist():
            if history_id is None or row["history_id"] == history_id:
                items.append(MemoryItem(id=row["id"], text=row["text"], kind=row["kind"], session_id=row["session_id"],
                                        turn_ids=row["turn_ids"] or [], timestamp=row["timestamp"],
                                        metadata=json.loads(row["metadata"] or "{}")))
    return items


class BankMemory(MemoryFramework):
    """A read-only built bank behind the memory interface, for the retrieval harness."""

    name = "bank"

    def __init__(self, items: Sequence[MemoryItem], embedder):
        self.all_items = list(items)
        self.cache = EmbeddingCache(embedder)
        self.seen: set[str] = set()

    def ingest(self, session: Session, persona: Persona | None = None) -> list[MemoryOp]:
        self.seen.add(session.id)
        return []

    def visible(self) -> list[MemoryItem]:
        return [it for it in self.all_items if it.session_id in self.seen or it.session_id is None]

    def memory_items(self) -> list[MemoryItem]:
        return self.visible()

    def retrieve(self, query: str, k: int) -> list[RetrievedItem]:
        return self.retrieve_many([query], k)[0]

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[RetrievedItem]]:
        items = self.visible()
        by_id = {it.id: it for it in items}
        out = []
        for ranked in rank_items(self.cache, list(queries), items, k):
            hits = [(items[i], s) for i, s in ranked]
            seen = {it.id for it, _ in hits}
            for it, s in list(hits):
                for ref in it.metadata.get("refs", []):
                    if ref in by_id and ref not in seen:
                        hits.append((by_id[ref], s))
                        seen.add(ref)
            out.append([RetrievedItem(item=it, score=s, rank=r) for r, (it, s) in enumerate(hits, start=1)])
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "items": [it.model_dump(mode="json") for it in self.all_items],
                "seen": sorted(self.seen)}

    def restore(self, state: dict[str, Any]) -> None:
        self.all_items = [MemoryItem.model_validate(x) for x in state["items"]]
        self.seen = set(state["seen"])
