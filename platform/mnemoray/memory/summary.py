"""Recurrent summary memory (MemAgent-style): one text, overwritten after every chunk.

The memory model reads the previous memory and the next chunk (default 12 turns) and
writes the whole new memory, capped at `max_chars`. A failed call keeps the old memory.
Retrieval returns that single item; its provenance is every turn it has read, since an
overwrite may keep anything it saw.
"""

from __future__ import annotations

from typing import Any

from mnemoray.config import MemoryConfig
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.llm_calls import CallSpec, LLMMemoryFramework
from mnemoray.memory.ops import CoreBlock, CoreOp, Provenance
from mnemoray.memory.prompts import load_prompt
from mnemoray.memory.trajectory import TrajectoryLog
from mnemoray.memory.transcript import chunk_turns, transcript
from mnemoray.records import MemoryItem, MemoryOp, Persona, RetrievedItem, Session


class SummaryMemory(LLMMemoryFramework, MemoryFramework):
    name = "summary"

    def __init__(self, config: MemoryConfig, engine=None, embedder=None, log: TrajectoryLog | None = None,
                 max_retries: int = 2):
        super().__init__(config, engine, embedder, log, max_retries)
        self.block = CoreBlock()  # a single overwritten text with provenance

    def __len__(self) -> int:
        return 1 if self.block.text else 0

    def memory_items(self) -> list[MemoryItem]:
        if not self.block.text:
            return []
        return [self.block.item().model_copy(update={"id": "summary", "kind": "summary"})]

    def ingest(self, session: Session, persona: Persona | None = None) -> list[MemoryOp]:
        prompt = load_prompt("summary", "update")
        ops: list[MemoryOp] = []
        for chunk in chunk_turns(session, self.settings.chunk_turns):
            prov = Provenance(session.id, tuple(t.id for t in chunk), session.timestamp)
            spec = CallSpec(prompt, {"max_chars": self.settings.max_chars, "memory": self.block.text or "(empty)",
                                     "session": session.id, "date": session.timestamp or "unknown",
                                     "chunk": transcript(chunk)},
                            session.id, {"memory": self.block.text}, max_chars=self.settings.max_chars)
            out = self.model.run([spec])[0]
            text = out.parsed.get("memory") if out.ok and isinstance(out.parsed, dict) else None
            if not isinstance(text, str) or not text.strip():
                if out.ok:
                    self.log.note("op_errors")
                continue
            done, _ = self.block.apply([CoreOp("REWRITE", text.strip()[: self.settings.max_chars])], prov)
            ops.extend(op.model_copy(update={"target_id": "summary"}) for op in done)
        return ops

    def retrieve(self, query: str, k: int) -> list[RetrievedItem]:
        return [RetrievedItem(item=it, score=1.0, rank=1) for it in self.memory_items()[:k]]

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.model_dump(mode="json"), "block": self.block.state(),
                "stats": self.log.stats()}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"snapshot is of '{state.get('name')}', not '{self.name}'")
        self.block = CoreBlock.from_state(state["block"])
