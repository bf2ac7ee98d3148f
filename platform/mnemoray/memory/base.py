"""The memory interface every framework implements (docs/ARCHITECTURE.md, "Contracts").

Frameworks are plain Python: `ingest` turns a session into memory ops and applies them,
`retrieve` ranks memory items for a query, `memory_items` lists what is stored (banks,
listings), `snapshot`/`restore` round-trip the state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from mnemoray.records import MemoryItem, MemoryOp, Persona, RetrievedItem, Session


class MemoryFramework(ABC):
    name: str = "memory"

    @abstractmethod
    def ingest(self, session: Session, persona: Persona | None = None) -> list[MemoryOp]:
        """Read one session, apply the resulting ops, and return them."""

    def ingest_many(self, sessions: Sequence[Session], persona: Persona | None = None) -> list[MemoryOp]:
        """Several sessions in order; frameworks override this to batch work."""
        ops: list[MemoryOp] = []
        for s in sessions:
            ops.extend(self.ingest(s, persona))
        return ops

    @abstractmethod
    def retrieve(self, query: str, k: int) -> list[RetrievedItem]:
        """The k best memory items for a query, best first."""

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[RetrievedItem]]:
        return [self.retrieve(q, k) for q in queries]

    @abstractmethod
    def memory_items(self) -> list[MemoryItem]:
        """Every item in memory now, in a stable order, with provenance (what a bank stores)."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The whole state, picklable, enough for `restore` to continue identically."""

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot."""

    def __len__(self) -> int:
        return len(self.memory_items())
