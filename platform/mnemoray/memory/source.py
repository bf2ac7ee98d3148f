"""Where an evaluation gets its memory: built fresh per history, or read from a built bank.

Shared by the retrieval and QA evaluations so both score LLM-built banks the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mnemoray.config import MemoryConfig
from mnemoray.memory.base import MemoryFramework


class MemorySource:
    def __init__(self, config: MemoryConfig, memory_bank: str | Path | None = None):
        self.config = config
        self.memory_bank = Path(memory_bank) if memory_bank else None
        self.embedder = None
        if self.memory_bank or config.name in ("rag-dense", "rag-hybrid"):
            from mnemoray.index.embedder import Embedder

            idx = config.index
            self.embedder = Embedder(idx.embedding_model, idx.device, idx.batch_size, idx.max_seq_length)

    def factory(self, history_id: str) -> Callable[[], MemoryFramework]:
        """A fresh memory for one history (the bank's items of that history, if a bank is used)."""
        if self.memory_bank:
            from mnemoray.memory.bank import BankMemory, read_bank

            items = read_bank(self.memory_bank, history_id)
            return lambda: BankMemory(items, self.embedder)
        from mnemoray.memory import build_memory

        return lambda: build_memory(self.config, embedder=self.embedder)
