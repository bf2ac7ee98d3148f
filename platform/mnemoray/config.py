"""Typed configs (pydantic) loaded from YAML with `key.sub=value` command-line overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

T = TypeVar("T", bound=BaseModel)
DatasetName = Literal["locomo", "realmem", "longmemeval", "perltqa", "rolememo", "bookmarks"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"


class ConfigError(Exception):
    """A config file or override that does not validate; the message names the key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IndexConfig(StrictModel):
    embedding_model: str | None = Field(None, description="local sentence-transformers folder; None = packaged all-MiniLM-L6-v2")
    device: str = "cpu"
    batch_size: int = Field(64, ge=1)
    max_seq_length: int | None = Field(256, ge=8)
    faiss: Literal["flat", "hnsw", "ivf"] = "flat"
    hnsw_m: int = Field(32, ge=4)
    ivf_nlist: int = Field(1024, ge=1)
    bm25_k1: float = Field(1.2, gt=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    rrf_k: int = Field(20, ge=1, description="reciprocal-rank-fusion constant; smaller trusts the top ranks more")
    candidates: int = Field(100, ge=1, description="depth of each ranking fused by the hybrid retriever")
    recency_weight: float = Field(0.0, ge=0, description="hybrid only: weight of a most-recent-first ranking of the candidates in the fusion")


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
    dedup_min_similarity: float = Field(0.5, ge=-1, le=1, description="below this cosine a new point is kept without asking")


class HemaConfig(StrictModel):
    chunk_turns: int = Field(12, ge=1, description="turns read per compact-summary update")
    summary_chars: int = Field(600, ge=50, description="size of the compact summary")


class BookmarksConfig(StrictModel):
    chunk_turns: int = Field(12, ge=1, description="turns per step (one story position)")
    reuse_overlap: float = Field(0.75, gt=0, le=1, description="token overlap at or above which a question reuses a bookmark")
    new_overlap: float = Field(0.35, ge=0, le=1, description="token overlap at or below which a question starts a new bookmark")
    recent_bookmarks: int = Field(8, ge=0, description="recently updated bookmarks shown when proposing questions")
    max_sync_steps: int = Field(8, ge=1, description="most recent unread steps a model-based synchronization reads")
    answer_chars: int = Field(600, ge=50, description="size of a bookmark's answer")
    span_chars: int = Field(160, ge=20, description="size of one concept span")


class MemoryConfig(StrictModel):
    name: Literal["rag-dense", "rag-bm25", "rag-hybrid", "dualmem", "membuilder", "summary", "realmem", "hema",
                  "bookmarks"] = "rag-hybrid"
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


class RayConfig(StrictModel):
    address: str | None = Field(None, description="Ray cluster address; None starts local Ray")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray instance")
    workers: int = Field(2, ge=1, description="actors evaluating histories in parallel")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0, description="set > 0 with index.device=cuda on GPU clusters")


class RetrievalEvalConfig(StrictModel):
    dataset: DatasetName
    data: Path
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    overfetch: int = Field(5, ge=1, description="items asked per evidence unit, so k distinct units can be filled")
    memory_bank: Path | None = Field(None, description="score a bank built by `mnemoray memory build` instead of building memory")
    out: Path = Path("runs/retrieval")
    skip_invalid: bool = False
    limit: int | None = Field(None, ge=1, description="evaluate only the first N histories")
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("ks")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError("k values must be positive integers")
        return sorted(set(v))


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
    torch_threads: int | None = Field(None, ge=1, description="torch threads per worker (hf engine); None = torch default")
    ray: RayConfig = Field(default_factory=RayConfig)


class SuiteRun(StrictModel):
    dataset: DatasetName
    data: Path
    memory_overrides: list[str] = Field(
        default_factory=list, description="key=value settings of `memory` for this dataset only"
    )


class RetrievalSuiteConfig(StrictModel):
    """The main job: several memories × several datasets, then one comparison table."""

    runs: list[SuiteRun]
    memories: list[Literal["rag-dense", "rag-bm25", "rag-hybrid"]]
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    overfetch: int = Field(5, ge=1)
    out: Path = Path("runs/main")
    skip_invalid: bool = False
    limit: int | None = None
    ray: RayConfig = Field(default_factory=RayConfig)


class _MemoryEvalBase(StrictModel):
    """Shared by the RoleMemo recall, role-play and RealMem-judge evaluations."""

    data: Path
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    memory_bank: Path | None = Field(None, description="score a bank built by `mnemoray memory build` (LLM frameworks)")
    k: int = Field(10, ge=1, description="memory items retrieved per query")
    limit: int | None = Field(None, ge=1, description="only the first N histories")
    max_queries: int | None = Field(None, ge=1, description="only the first N queries per history")
    skip_invalid: bool = False
    torch_threads: int | None = Field(1, ge=1, description="torch threads per worker")
    ray: RayConfig = Field(default_factory=RayConfig)


class RoleMemoRecallConfig(_MemoryEvalBase):
    """`mnemoray eval rolememo`: Recall@k Fact / Insight by embedding similarity (DESIGN §8)."""

    fact_threshold: float = Field(0.60, ge=-1, le=1, description="a gold fragment is hit at max cosine >= this")
    insight_threshold: float = Field(0.65, ge=-1, le=1, description="a gold insight is hit at max cosine >= this")
    similarity_model: str | None = Field(None, description="sentence-transformers model for the similarities; None = packaged all-MiniLM-L6-v2")
    similarity_device: str = "cpu"
    out: Path = Path("runs/rolememo")


class _JudgedEvalBase(_MemoryEvalBase):
    judge: Path = Field(Path("configs/llm/tiny_local.yaml"), description="LLM engine config of the judge")
    judge_runs: int = Field(1, ge=1, description="judge calls per item (distinct seeds), averaged")
    judge_seed: int = Field(0, description="seed of the first judge run; run i uses judge_seed + i")
    judge_temperature: float = Field(0.0, ge=0, description="judge sampling temperature")
    reason_chars: int = Field(300, ge=1, description="cap on the judge's reasoning string")
    memory_chars: int = Field(4000, ge=100, description="retrieved memory shown in a prompt")
    judge_tokens: int = Field(384, ge=16)


class RolePlayEvalConfig(_JudgedEvalBase):
    """`mnemoray eval roleplay`: in-character replies from memory, judged on 4 dimensions 0–5."""

    responder: Path = Field(Path("configs/llm/tiny_local.yaml"), description="LLM engine config playing the persona")
    judge_runs: int = Field(3, ge=1, description="judge calls per reply (distinct seeds), averaged")
    judge_temperature: float = Field(0.7, ge=0, description="judge sampling temperature (> 0 so seeds matter)")
    response_chars: int = Field(600, ge=1)
    persona_chars: int = Field(1500, ge=50)
    response_tokens: int = Field(256, ge=8)
    out: Path = Path("runs/roleplay")


class RealMemJudgeConfig(_JudgedEvalBase):
    """`mnemoray eval realmem-judge`: RealMem QA score 0–3, memory recall, memory helpfulness 0–2."""

    answerer: Path = Field(Path("configs/llm/tiny_local.yaml"), description="LLM engine config replying to the user")
    answer_chars: int = Field(600, ge=1)
    gold_point_chars: int = Field(800, ge=20, description="chars kept of each gold memory point in judge prompts")
    answer_tokens: int = Field(256, ge=8)
    out: Path = Path("runs/realmem_judge")


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = _parse_value(value)
    return data


def _resolve_data_paths(data: dict[str, Any], base: Path) -> None:
    """`${data_root}` in paths means ../shared/data next to the repo (the config default)."""
    def fix(value: Any) -> Any:
        if isinstance(value, str) and "${data_root}" in value:
            return value.replace("${data_root}", str(DEFAULT_DATA_ROOT))
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    data.update(fix(data))


def validate(model: type[T], data: dict[str, Any], source: str = "config") -> T:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(f"{source}: key '{loc}': {first.get('msg')}") from None


def load_config(model: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> T:
    data: dict[str, Any] = dict(base or {})
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML ({err})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data.update(loaded)
    apply_overrides(data, overrides or [])
    _resolve_data_paths(data, Path.cwd())
    return validate(model, data, source)
