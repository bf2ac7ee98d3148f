"""Memory frameworks behind one interface, looked up by name."""

from __future__ import annotations

from mnemoray.config import MemoryConfig
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.bookmarks import BookmarksMemory
from mnemoray.memory.dualmem import DualMemMemory
from mnemoray.memory.hema import HemaMemory
from mnemoray.memory.membuilder import MemBuilderMemory
from mnemoray.memory.rag import RagMemory
from mnemoray.memory.realmem import RealMemMemory
from mnemoray.memory.summary import SummaryMemory

FRAMEWORKS = {
    "rag-dense": RagMemory,
    "rag-bm25": RagMemory,
    "rag-hybrid": RagMemory,
    "dualmem": DualMemMemory,
    "membuilder": MemBuilderMemory,
    "summary": SummaryMemory,
    "realmem": RealMemMemory,
    "hema": HemaMemory,
    "bookmarks": BookmarksMemory,
}
# Frameworks whose memory is written by a memory model (they take engine=, log=, max_retries=).
LLM_FRAMEWORKS = ("dualmem", "membuilder", "summary", "realmem", "hema", "bookmarks")


def build_memory(config: MemoryConfig, **kwargs) -> MemoryFramework:
    try:
        cls = FRAMEWORKS[config.name]
    except KeyError:
        raise ValueError(f"unknown memory '{config.name}'; choose one of {sorted(FRAMEWORKS)}") from None
    return cls(config, **kwargs)


__all__ = ["FRAMEWORKS", "LLM_FRAMEWORKS", "MemoryFramework", "build_memory"]
