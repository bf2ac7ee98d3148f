"""`mnemoray synth rolememo` settings: one typed config, the same for a laptop and a cluster.

Only the LLM engine block (a separate file, `llm`) and the Ray block change between the
local preset (tiny model) and the cluster preset (vLLM or an OpenAI-compatible endpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from mnemoray.config.base import StrictModel
from mnemoray.config.ray import RayConfig

INSIGHT_TYPES = ("decision_guidance", "interpretive_attribution", "value_judgment", "contradiction_revelation")
CRITERIA = ("specific", "grounded", "non_trivial", "consistent")


class SynthCallConfig(StrictModel):
    """Sampling and JSON caps for every synthesis call (caps keep answers finishable)."""

    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(4096, ge=16)
    max_text_chars: int = Field(400, ge=8, description="maxLength on every string of a call's JSON schema")


class InsightConfig(StrictModel):
    per_type: int = Field(5, ge=1, le=20, description="insights per type (4 types)")


class DialogueConfig(StrictModel):
    rounds: int = Field(24, ge=2, le=80, description="user/assistant rounds per dialogue")
    fragment_min_overlap: float = Field(
        0.6, gt=0, le=1, description="share of a fragment's content words a turn must hold to contain it"
    )
    echo_max_overlap: float = Field(
        0.6, gt=0, le=1, description="an assistant turn holding this share of a fragment echoes it"
    )
    insert_missing: bool = Field(
        True, description="append a fragment the writer left out of its user turn (counted) instead of rejecting"
    )


class SafetyConfig(StrictModel):
    review_flagged: bool = Field(
        True, description="ask the LLM to review dialogues the patterns flag; False: reject them"
    )


class DistractorConfig(StrictModel):
    pool_size: int = Field(200, ge=1, description="persona-free sessions generated once and shared by all histories")
    rounds: int = Field(24, ge=2, le=80)


class AssemblyConfig(StrictModel):
    start_date: str = "2024-01-01"
    min_gap_hours: int = Field(6, ge=1)
    max_gap_hours: int = Field(96, ge=1)
    allow_repeats: bool = Field(True, description="reuse pool sessions within a history once the pool is exhausted")

    @model_validator(mode="after")
    def _gaps(self) -> AssemblyConfig:
        if self.max_gap_hours < self.min_gap_hours:
            raise ValueError("max_gap_hours must be >= min_gap_hours")
        return self


class SynthRayConfig(RayConfig):
    llm_actors: int = Field(
        1, ge=1, description="engine actors of the fleet (stream) or per LLM stage (stages; vLLM replicas)"
    )
    llm_actors_min: int | None = Field(
        None, ge=1, description="stages mode: autoscaling lower bound; None = llm_actors"
    )
    write_every: int = Field(512, ge=1, description="rows per write of the driver (the unit a crash can lose)")
    mode: Literal["stream", "stages"] = Field(
        "stream", description="stream: all LLM stages in one Ray Data pipeline sharing one engine fleet; "
                              "stages: one pass per stage (vLLM through ray.data.llm with autoscaling replicas)")
    chunk_personas: int = Field(
        4, ge=1, description="stream: personas per source block (the unit that moves between stages)"
    )
    chunk_records: int = Field(64, ge=1, description="stream: records per block when a rerun replays unfinished inputs")
    stage_concurrency: int = Field(8, ge=1, description="stream: blocks each stage operator works on at once")


class RoleMemoConfig(StrictModel):
    personas: Path = Field(description="MSC persona-pair JSON, or JSON/JSONL records with a description or facts")
    out: Path = Path("runs/synth/rolememo")
    limit: int | None = Field(None, ge=1, description="use the first N valid personas")
    llm: Path = Field(Path("configs/llm/tiny_local.yaml"), description="engine config (mnemoray.llm)")
    llm_overrides: list[str] = Field(default_factory=list)
    tokenizer: str | None = Field(
        None, description="tokenizer folder for token counts; None = the engine's local model"
    )
    target_tokens: int = Field(256_000, ge=1)
    seed: int = 0
    call: SynthCallConfig = Field(default_factory=SynthCallConfig)
    insights: InsightConfig = Field(default_factory=InsightConfig)
    dialogue: DialogueConfig = Field(default_factory=DialogueConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    distractors: DistractorConfig = Field(default_factory=DistractorConfig)
    assembly: AssemblyConfig = Field(default_factory=AssemblyConfig)
    ray: SynthRayConfig = Field(default_factory=SynthRayConfig)
