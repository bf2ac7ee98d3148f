"""The memory-framework registry: every framework's name, class and traits in one table.

The config's allowed `memory.name` values, the frameworks `memory build` accepts (those
written by a memory model), the CLI's choices and the evaluations' checks all come from
here. A new framework is one module with a `MemoryFramework` subclass plus one
`register_framework` call (docs/ARCHITECTURE.md, "Adding a memory framework"); settings of
its own go in a block of `mnemoray.config.memory.MemoryConfig` named like the framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mnemoray.registry import Registry

if TYPE_CHECKING:
    from mnemoray.config.memory import MemoryConfig
    from mnemoray.memory.base import MemoryFramework


@dataclass(frozen=True)
class FrameworkSpec:
    name: str
    target: Any  # the MemoryFramework subclass (or "module:Class")
    description: str
    built_by_llm: bool  # a memory model writes it (takes engine=, log=, max_retries=); scored from a built bank
    uses_embedder: bool  # needs sentence embeddings (an Embedder is shared with it)
    options: dict[str, Any] = field(default_factory=dict)  # constructor keywords of this variant


FRAMEWORKS: Registry[FrameworkSpec] = Registry("memory framework")


def register_framework(spec: FrameworkSpec, *, replace: bool = False) -> FrameworkSpec:
    return FRAMEWORKS.register(spec, replace=replace)


for _name, _dense, _bm25, _what in (
    ("rag-dense", True, False, "raw dialogue chunks in FAISS (sentence embeddings)"),
    ("rag-bm25", False, True, "raw dialogue chunks in a BM25 index"),
    ("rag-hybrid", True, True, "dense and BM25 rankings fused by reciprocal rank"),
):
    register_framework(FrameworkSpec(_name, "mnemoray.memory.rag:RagMemory", _what, built_by_llm=False,
                                     uses_embedder=_dense, options={"dense": _dense, "bm25": _bm25}))
for _name, _cls, _embeds, _what in (
    ("dualmem", "DualMemMemory", True, "RoleMemo DualMem: facts + persona insights grounded in them"),
    ("membuilder", "MemBuilderMemory", True, "MemBuilder: core, episodic, semantic and procedural stores"),
    ("summary", "SummaryMemory", False, "recurrent overwritten summary (MemAgent-style)"),
    ("realmem", "RealMemMemory", True, "RealMem memory points (Dynamic/Static/Schedule) with batched dedup"),
    ("hema", "HemaMemory", True, "HEMA-style compact summary + vector store of raw chunks"),
    ("bookmarks", "BookmarksMemory", True, "BOOKMARKS question-answer bookmarks, synchronized lazily"),
):
    register_framework(FrameworkSpec(_name, f"mnemoray.memory.{_name}:{_cls}", _what, built_by_llm=True,
                                     uses_embedder=_embeds))


def llm_frameworks() -> list[str]:
    """Frameworks whose memory a memory model writes (built by `mnemoray memory build`)."""
    return FRAMEWORKS.names(built_by_llm=True)


def build_memory(config: MemoryConfig, **kwargs: Any) -> MemoryFramework:
    """A fresh memory of `config.name`; keyword arguments go to its constructor (embedder=,
    and for LLM-built frameworks engine=, log=, max_retries=)."""
    spec = FRAMEWORKS.spec(config.name)
    return FRAMEWORKS.load(config.name)(config, **spec.options, **kwargs)


__all__ = ["FRAMEWORKS", "FrameworkSpec", "build_memory", "llm_frameworks", "register_framework"]
