"""The memory interface every framework implements (DESIGN §3).

Frameworks are plain Python: `ingest` turns a session into memory ops and applies them,
`retrieve` ranks memory items for a query, `snapshot`/`restore` round-trip the state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from mnemoray.records import MemoryOp, Persona, RetrievedItem, Session


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
    def snapshot(self) -> dict[str, Any]:
        """The whole state, picklable, enough for `restore` to continue identically."""

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot."""

    def __len__(self) -> int:  # number of memory items
        return 0
