"""Memory configs: the index, the memory-model calls, one settings block per framework,
and the `memory build` job."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from mnemoray.config.base import StrictModel
from mnemoray.config.names import DatasetName, FrameworkName
from mnemoray.config.ray import RayConfig
from mnemoray.memory.registry import llm_frameworks


class IndexConfig(StrictModel):
    embedding_model: str | None = Field(
        None, description="local sentence-transformers folder; None = packaged all-MiniLM-L6-v2"
    )
    device: str = "cpu"
    batch_size: int = Field(64, ge=1)
    max_seq_length: int | None = Field(256, ge=8)
    embedding_cache: str | None = Field(
        "default", description="on-disk cache of embeddings by (model, text): 'default' = $MNEMORAY_EMBEDDING_CACHE "
        "or ~/.cache/mnemoray/embeddings, a folder, or null for none")
    faiss: Literal["flat", "hnsw", "ivf"] = "flat"
    hnsw_m: int = Field(32, ge=4)
    ivf_nlist: int = Field(1024, ge=1)
    bm25_k1: float = Field(1.2, gt=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    rrf_k: int = Field(20, ge=1, description="reciprocal-rank-fusion constant; smaller trusts the top ranks more")
    candidates: int = Field(100, ge=1, description="depth of each ranking fused by the hybrid retriever")
    recency_weight: float = Field(
        0.0, ge=0, description="hybrid only: weight of a most-recent-first ranking of the candidates in the fusion"
    )


class LLMCallConfig(StrictModel):
    """Sampling and output caps of a framework's memory-model calls (caps keep JSON finishable)."""

    max_tokens: int = Field(1024, ge=16)
    temperature: float = Field(0.0, ge=0)
    max_text_chars: int = Field(300, ge=8, description="maxLength put on every string of the call's JSON schema")
    max_items: int = Field(12, ge=1, description="maxItems put on every array of the call's JSON schema")
    max_retries: int | None = Field(None, ge=0, description="None: the engine config's structured_retries")
    prompt_memory_chars: int = Field(6000, ge=0, description="budget for existing memory shown in a prompt")


class DualMemConfig(StrictModel):
    chunk_turns: int = Field(12, ge=1, description="turns read per memory-model call")
    dedup_threshold: float = Field(0.85, gt=0, le=1, description="cosine similarity above which two facts are one")
    min_insight_refs: int = Field(2, ge=1)


class MemBuilderConfig(StrictModel):
    core_limit: int = Field(5000, ge=100, description="core block chars; over it the LLM compresses the block")
    context_items: int = Field(20, ge=1, description="existing memories of its type each agent sees")
    session_chars: int = Field(12000, ge=100, description="session transcript budget per prompt")


class SummaryConfig(StrictModel):
    chunk_turns: int = Field(12, ge=1)
    max_chars: int = Field(2000, ge=50, description="size of the overwritten memory")


class RealMemConfig(StrictModel):
    session_chars: int = Field(12000, ge=100, description="session transcript budget of the extraction prompt")
    keep_drafts: bool = Field(True, description="keep points tagged Draft (not yet agreed) as well as Confirmed ones")
    dedup_batch: int = Field(8, ge=1, description="new memory points judged per dedup call")
    dedup_candidates: int = Field(5, ge=1, description="most similar existing points shown per new point")
    dedup_min_similarity: float = Field(
        0.5, ge=-1, le=1, description="below this cosine a new point is kept without asking"
    )


class HemaConfig(StrictModel):
    chunk_turns: int = Field(12, ge=1, description="turns read per compact-summary update")
    summary_chars: int = Field(600, ge=50, description="size of the compact summary")


class BookmarksConfig(StrictModel):
    chunk_turns: int = Field(12, ge=1, description="turns per step (one story position)")
    reuse_overlap: float = Field(
        0.75, gt=0, le=1, description="token overlap at or above which a question reuses a bookmark"
    )
    new_overlap: float = Field(
        0.35, ge=0, le=1, description="token overlap at or below which a question starts a new bookmark"
    )
    recent_bookmarks: int = Field(8, ge=0, description="recently updated bookmarks shown when proposing questions")
    max_sync_steps: int = Field(8, ge=1, description="most recent unread steps a model-based synchronization reads")
    answer_chars: int = Field(600, ge=50, description="size of a bookmark's answer")
    span_chars: int = Field(160, ge=20, description="size of one concept span")


class MemoryConfig(StrictModel):
    """Which framework (any registered name, `mnemoray.memory.registry`) and its settings."""

    name: FrameworkName = "rag-hybrid"
    chunking: Literal["turn", "pair", "session"] = "pair"
    include_timestamp: bool = True
    index: IndexConfig = Field(default_factory=IndexConfig)
    llm_call: LLMCallConfig = Field(default_factory=LLMCallConfig)
    dualmem: DualMemConfig = Field(default_factory=DualMemConfig)
    membuilder: MemBuilderConfig = Field(default_factory=MemBuilderConfig)
    summary: SummaryConfig = Field(default_factory=SummaryConfig)
    realmem: RealMemConfig = Field(default_factory=RealMemConfig)
    hema: HemaConfig = Field(default_factory=HemaConfig)
    bookmarks: BookmarksConfig = Field(default_factory=BookmarksConfig)


class MemoryBuildConfig(StrictModel):
    """`mnemoray memory build`: one LLM-built memory per history, banks + trajectory log."""

    dataset: DatasetName
    data: Path
    memory: MemoryConfig = Field(default_factory=lambda: MemoryConfig(name="dualmem"))
    llm: Path = Field(Path("configs/llm/tiny_local.yaml"), description="engine config of the memory model")
    llm_overrides: list[str] = Field(default_factory=list, description="key=value settings of the engine config")
    out: Path = Path("runs/memory")
    limit: int | None = Field(None, ge=1, description="build only the first N histories")
    max_sessions: int | None = Field(None, ge=1, description="read only the first N sessions of each history")
    skip_invalid: bool = False
    torch_threads: int | None = Field(
        None, ge=1, description="torch threads per worker (hf engine); None = torch default"
    )
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("memory")
    @classmethod
    def _built_by_a_model(cls, memory: MemoryConfig) -> MemoryConfig:
        if memory.name not in llm_frameworks():
            raise ValueError(f"'{memory.name}' is not built by a memory model; choose one of {llm_frameworks()}")
        return memory
