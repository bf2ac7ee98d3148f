"""Evaluation configs: retrieval (one run and the suite of the main job), QA, RoleMemo
recall, role-play and the RealMem judge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from mnemoray.config.base import StrictModel
from mnemoray.config.memory import MemoryConfig
from mnemoray.config.names import DatasetName, FrameworkName
from mnemoray.config.ray import RayConfig
from mnemoray.memory.registry import FRAMEWORKS


def _http_url(url: str | None) -> str | None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise ValueError(f"'{url}' is not an http(s) URL of a running `mnemoray serve memory`")
    return url.rstrip("/") if url else url


ServiceURL = Annotated[str | None, AfterValidator(_http_url), Field(
    None, description="URL of a running `mnemoray serve memory`: each history's memory lives there, on a "
    "fresh tenant (admin key from $MNEMORAY_ADMIN_KEY)")]


class RetrievalSettings(StrictModel):
    """What every retrieval evaluation shares: the memory, the cut-offs, the input limits, Ray."""

    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    overfetch: int = Field(5, ge=1, description="items asked per evidence unit, so k distinct units can be filled")
    skip_invalid: bool = False
    limit: int | None = Field(None, ge=1, description="evaluate only the first N histories")
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("ks")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError("k values must be positive integers")
        return sorted(set(v))


class RetrievalEvalConfig(RetrievalSettings):
    """`mnemoray eval retrieval`: one memory on one dataset."""

    dataset: DatasetName
    data: Path
    memory_bank: Path | None = Field(
        None, description="score a bank built by `mnemoray memory build` instead of building memory"
    )
    service: ServiceURL = None
    out: Path = Path("runs/retrieval")


class SuiteRun(StrictModel):
    dataset: DatasetName
    data: Path
    memory_overrides: list[str] = Field(
        default_factory=list, description="key=value settings of `memory` for this dataset only"
    )


class RetrievalSuiteConfig(RetrievalSettings):
    """The main job: several memories × several datasets, then one comparison table."""

    runs: list[SuiteRun] = Field(..., min_length=1)
    memories: list[FrameworkName] = Field(
        ..., min_length=1, description="memories built without a model (the baselines)"
    )
    out: Path = Path("runs/main")

    @field_validator("memories")
    @classmethod
    def _built_here(cls, names: list[str]) -> list[str]:
        llm_built = [n for n in names if FRAMEWORKS.spec(n).built_by_llm]
        if llm_built:
            raise ValueError(
                f"{llm_built} are built by a memory model; the suite runs {FRAMEWORKS.names(built_by_llm=False)}"
            )
        return names


class MemoryEvalBase(StrictModel):
    """Shared by the QA, RoleMemo recall, role-play and RealMem-judge evaluations."""

    data: Path
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    memory_bank: Path | None = Field(None, description="score a bank built by `mnemoray memory build` (LLM frameworks)")
    k: int = Field(10, ge=1, description="memory items retrieved per query")
    limit: int | None = Field(None, ge=1, description="only the first N histories")
    max_queries: int | None = Field(None, ge=1, description="only the first N queries per history")
    skip_invalid: bool = False
    torch_threads: int | None = Field(1, ge=1, description="torch threads per worker")
    service: ServiceURL = None
    ray: RayConfig = Field(default_factory=RayConfig)


class QAEvalConfig(MemoryEvalBase):
    """`mnemoray eval qa`: answers from retrieved memory, lenient and strict judges, F1, BLEU-1."""

    dataset: DatasetName
    answerer: Path = Path("configs/llm/tiny_local.yaml")
    judge: Path = Path("configs/llm/tiny_local.yaml")
    max_queries: int | None = Field(None, ge=1, description="only the first N answerable queries per history")
    answer_chars: int = Field(200, ge=1)
    reasoning_chars: int = Field(400, ge=1)
    memory_chars: int = Field(6000, ge=100)
    answer_tokens: int = Field(128, ge=8)
    judge_tokens: int = Field(256, ge=8)
    out: Path = Path("runs/qa")


class RoleMemoRecallConfig(MemoryEvalBase):
    """`mnemoray eval rolememo`: Recall@k Fact / Insight by embedding similarity (docs/ARCHITECTURE.md, metrics)."""

    fact_threshold: float = Field(0.60, ge=-1, le=1, description="a gold fragment is hit at max cosine >= this")
    insight_threshold: float = Field(0.65, ge=-1, le=1, description="a gold insight is hit at max cosine >= this")
    similarity_model: str | None = Field(
        None, description="sentence-transformers model for the similarities; None = packaged all-MiniLM-L6-v2"
    )
    similarity_device: str = "cpu"
    out: Path = Path("runs/rolememo")


class JudgedEvalBase(MemoryEvalBase):
    judge: Path = Field(Path("configs/llm/tiny_local.yaml"), description="LLM engine config of the judge")
    judge_runs: int = Field(1, ge=1, description="judge calls per item (distinct seeds), averaged")
    judge_seed: int = Field(0, description="seed of the first judge run; run i uses judge_seed + i")
    judge_temperature: float = Field(0.0, ge=0, description="judge sampling temperature")
    reason_chars: int = Field(300, ge=1, description="cap on the judge's reasoning string")
    memory_chars: int = Field(4000, ge=100, description="retrieved memory shown in a prompt")
    judge_tokens: int = Field(384, ge=16)


class RolePlayEvalConfig(JudgedEvalBase):
    """`mnemoray eval roleplay`: in-character replies from memory, judged on 4 dimensions 0–5."""

    responder: Path = Field(Path("configs/llm/tiny_local.yaml"), description="LLM engine config playing the persona")
    judge_runs: int = Field(3, ge=1, description="judge calls per reply (distinct seeds), averaged")
    judge_temperature: float = Field(0.7, ge=0, description="judge sampling temperature (> 0 so seeds matter)")
    response_chars: int = Field(600, ge=1)
    persona_chars: int = Field(1500, ge=50)
    response_tokens: int = Field(256, ge=8)
    out: Path = Path("runs/roleplay")


class RealMemJudgeConfig(JudgedEvalBase):
    """`mnemoray eval realmem-judge`: RealMem QA score 0–3, memory recall, memory helpfulness 0–2."""

    answerer: Path = Field(Path("configs/llm/tiny_local.yaml"), description="LLM engine config replying to the user")
    answer_chars: int = Field(600, ge=1)
    gold_point_chars: int = Field(800, ge=20, description="chars kept of each gold memory point in judge prompts")
    answer_tokens: int = Field(256, ge=8)
    out: Path = Path("runs/realmem_judge")
