"""Core records shared by every part of mnemoray (plain pydantic, no Ray).

Every record carries a stable id so that reruns of any job are idempotent, and memory
items keep provenance (session id, turn ids) so retrieval can be scored against evidence.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnemoray.ids import stable_id

GoldLevel = Literal["turn", "session"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Persona(Record):
    id: str
    name: str = ""
    description: str = ""
    facts: list[str] = Field(default_factory=list)


class Turn(Record):
    id: str
    speaker: str
    text: str
    index: int
    is_query: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class Session(Record):
    id: str
    timestamp: str | None = None
    turns: list[Turn]
    metadata: dict[str, Any] = Field(default_factory=dict)


class History(Record):
    """One persona's (or one conversation's) sessions in time order."""

    id: str
    dataset: str
    persona: Persona | None = None
    sessions: list[Session]
    metadata: dict[str, Any] = Field(default_factory=dict)

    def session_index(self) -> dict[str, int]:
        return {s.id: i for i, s in enumerate(self.sessions)}


class EvidenceQuery(Record):
    """A question asked at some point of a history, with the evidence that answers it.

    `visible_sessions` is how many leading sessions the memory may have seen when the
    question is asked (None: the whole history).
    """

    id: str
    history_id: str
    text: str
    gold_ids: list[str]
    gold_level: GoldLevel
    category: str | None = None
    answer: str | None = None
    visible_sessions: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class EvalSample(Record):
    """A history plus the queries asked over it: the unit of work of the eval harness."""

    history: History
    queries: list[EvidenceQuery]


class MemoryItem(Record):
    id: str
    text: str
    kind: str = "chunk"
    session_id: str | None = None
    turn_ids: list[str] = Field(default_factory=list)
    timestamp: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def evidence_ids(self, level: GoldLevel) -> list[str]:
        if level == "session":
            return [self.session_id] if self.session_id else []
        return list(self.turn_ids)


class RetrievedItem(Record):
    item: MemoryItem
    score: float
    rank: int


class MemoryOp(Record):
    """One change to a memory store; ADD for baselines, richer ops for LLM-built memory."""

    op: str
    item: MemoryItem | None = None
    target_id: str | None = None
    session_id: str | None = None
    reason: str = ""

    @classmethod
    def add(cls, item: MemoryItem) -> MemoryOp:
        return cls(op="ADD", item=item, session_id=item.session_id)


def make_turn_id(session_id: str, index: int) -> str:
    return f"{session_id}#t{index}"


def content_id(prefix: str, *parts: Any) -> str:
    return f"{prefix}-{stable_id(*parts)}"
