"""Where an evaluation gets its memory: built fresh per history, or read from a built bank.

Shared by the retrieval and QA evaluations so both score LLM-built banks the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from mnemoray.config.base import ConfigError
from mnemoray.config.memory import MemoryConfig
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.registry import FRAMEWORKS, build_memory


class MemorySource:
    def __init__(self, config: MemoryConfig, memory_bank: str | Path | None = None,
                 service: dict[str, str] | None = None):
        """`service`: {"url", "admin_key"} of a memory service holding the memories instead."""
        self.config = config
        self.memory_bank = Path(memory_bank) if memory_bank else None
        self.service = service
        self._tenants: list[str] = []  # service tenants made for the histories in progress
        self.embedder = None
        if service is None and (self.memory_bank or FRAMEWORKS.spec(config.name).uses_embedder):
            from mnemoray.index.embedder import Embedder

            self.embedder = Embedder.from_index_config(config.index)

    def factory(self, history_id: str) -> Callable[[], MemoryFramework]:
        """A fresh memory for one history (the bank's items of that history, if a bank is used)."""
        if self.service is not None:
            return lambda: self._service_memory(history_id)
        if self.memory_bank:
            from mnemoray.memory.bank import BankMemory, read_bank

            items = read_bank(self.memory_bank, history_id)
            return lambda: BankMemory(items, self.embedder)
        return lambda: build_memory(self.config, embedder=self.embedder)


    def _service_memory(self, history_id: str) -> MemoryFramework:
        from mnemoray.service.remote import ServiceMemory

        memory = ServiceMemory.fresh(self.service["url"], self.service["admin_key"], self.config.name)
        memory.history_id = history_id  # named in its errors
        self._tenants.append(memory.tenant)
        return memory

    def release(self) -> None:
        """Delete the service tenants made so far (a history's evaluation is over); a tenant
        that cannot be deleted is logged, never a reason to lose the history's rows."""
        if not self._tenants:
            return
        from mnemoray.service.remote import delete_tenant

        while self._tenants:
            tenant = self._tenants.pop()
            try:
                delete_tenant(self.service["url"], self.service["admin_key"], tenant)
            except OSError as err:
                logging.getLogger(__name__).warning("could not delete service tenant %s: %s", tenant, err)


def check_memory_source(memory_name: str, memory_bank: Path | None, service: str | None = None) -> None:
    """LLM-built memories are scored from a built bank or built by a memory service's model;
    say so instead of failing per call."""
    if service is not None:
        if memory_bank is not None:
            raise ConfigError("--service and --memory-bank exclude each other: the service builds the memory")
        return
    if memory_bank is None and FRAMEWORKS.spec(memory_name).built_by_llm:
        raise ConfigError(
            f"memory '{memory_name}' is built by an LLM: run `mnemoray memory build --framework "
            f"{memory_name} ...` first and pass its output folder with --memory-bank DIR"
        )
    if memory_bank is not None and not Path(memory_bank).exists():
        raise ConfigError(f"--memory-bank {memory_bank}: no such folder")
