"""Memory frameworks behind one interface, looked up by name."""

from __future__ import annotations

from mnemoray.config import MemoryConfig
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.rag import RagMemory

FRAMEWORKS = {"rag-dense": RagMemory, "rag-bm25": RagMemory, "rag-hybrid": RagMemory}


def build_memory(config: MemoryConfig, **kwargs) -> MemoryFramework:
    try:
        cls = FRAMEWORKS[config.name]
    except KeyError:
        raise ValueError(f"unknown memory '{config.name}'; choose one of {sorted(FRAMEWORKS)}") from None
    return cls(config, **kwargs)


__all__ = ["FRAMEWORKS", "MemoryFramework", "build_memory"]
