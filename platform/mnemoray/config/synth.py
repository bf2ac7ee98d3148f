"""`mnemoray synth rolememo` and `synth realmem` settings: one typed config, the same for a laptop and a cluster.

Only the LLM engine block (a separate file, `llm`) and the Ray block change between the
local preset (tiny model) and the cluster preset (vLLM or an OpenAI-compatible endpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from mnemoray.config.base import StrictModel
from mnemoray.config.memory import LLMCallConfig, MemoryConfig
from mnemoray.config.ray import RayClusterConfig, RayConfig

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


# -- `mnemoray synth realmem` ------------------------------------------------------------------

class RealMemPlanConfig(StrictModel):
    """Project outline -> events -> session plans, per persona goal (project)."""

    projects: int = Field(3, ge=1, le=20, description="goals (projects) used per persona")
    phases: int = Field(3, ge=1, le=10, description="N: phases of a project outline; a project gets 3N-5N events")
    max_sessions_per_event: int = Field(3, ge=1, le=5, description="session summaries per event (1 up to this)")
    start_date: str = Field("2025-01-06", description="simulated date of the first session (YYYY-MM-DD)")
    project_days: int = Field(120, ge=1, description="days a project's events may span")
    cooldown: int = Field(
        1, ge=0, description="sessions of other projects between two sessions of one project, when any are left"
    )


class RealMemDialogueConfig(StrictModel):
    min_turns: int = Field(6, ge=2, description="a session never ends before this many turns (user + assistant)")
    max_turns: int = Field(24, ge=2, le=200, description="a session ends at this many turns even without its goal")
    memory_k: int = Field(5, ge=1, le=20, description="memory points retrieved for each assistant turn")
    regenerate: int = Field(1, ge=0, le=5, description="regenerations of a session flagged by the time check")
    leak_min_overlap: float = Field(
        0.75, gt=0, le=1, description="share of a future event's title words in a user turn that counts as a leak"
    )
    transcript_chars: int = Field(6000, ge=200, description="newest dialogue text shown to each agent")

    @model_validator(mode="after")
    def _turns(self) -> RealMemDialogueConfig:
        if self.max_turns < self.min_turns:
            raise ValueError("max_turns must be >= min_turns")
        return self


class RealMemRayConfig(RayClusterConfig):
    llm_actors: int = Field(1, ge=1, description="engine actors of the one fleet every persona's calls go to")
    workers: int = Field(1, ge=1, description="persona worker actors")
    personas_per_worker: int = Field(
        16, ge=1, description="personas one worker runs at once (each one sequential; their calls interleave)"
    )
    worker_cpus: float = Field(0.25, gt=0, description="CPUs reserved by one persona worker")
    write_every: int = Field(64, ge=1, description="outcome rows a worker buffers per write (a crash loses these)")
    batch_calls: int = Field(
        16, ge=1, description="most LLM calls of one worker's personas sent to the fleet as one batch (1 = each "
        "alone); calls asked at the same moment share one fleet call, which returns when its slowest call does"
    )
    encode_batch: int = Field(
        8, ge=1, description="sentences per sentence-encoder forward pass in a persona worker: a worker's batch of "
        "short texts costs per text about 1.5x as much in chunks of 64 as in chunks of 8 (padding; measured)"
    )


def _default_memory() -> MemoryConfig:
    # the fleet already re-asks invalid JSON; the memory manager must not re-ask on its own
    return MemoryConfig(name="realmem", llm_call=LLMCallConfig(max_retries=0))


class RealMemSynthConfig(StrictModel):
    """`mnemoray synth realmem`: RealMem-style multi-agent histories, many personas at once."""

    personas: Path = Field(description="RealMem's all_persona_topic/ folder (or one of its files), or persona "
                                       "JSON/JSONL records with name, description/facts and goals")
    goals: Path | None = Field(
        None, description="topic&goal&attr.json: goals for personas that bring none, and topic attributes"
    )
    out: Path = Path("runs/synth/realmem")
    limit: int | None = Field(None, ge=1, description="use the first N valid personas")
    llm: Path = Field(Path("configs/llm/tiny_local.yaml"), description="engine config (mnemoray.llm)")
    llm_overrides: list[str] = Field(default_factory=list)
    tokenizer: str | None = Field(
        None, description="tokenizer folder for token counts; None = the engine's local model"
    )
    target_tokens: int = Field(256_000, ge=1, description="a persona's history stops growing at this many tokens")
    seed: int = 0
    call: SynthCallConfig = Field(default_factory=SynthCallConfig)
    plan: RealMemPlanConfig = Field(default_factory=RealMemPlanConfig)
    dialogue: RealMemDialogueConfig = Field(default_factory=RealMemDialogueConfig)
    memory: MemoryConfig = Field(default_factory=_default_memory, description="the realmem memory framework's settings")
    ray: RealMemRayConfig = Field(default_factory=RealMemRayConfig)

    @model_validator(mode="after")
    def _memory(self) -> RealMemSynthConfig:
        if self.memory.name != "realmem":
            raise ValueError(f"memory.name must be 'realmem' (the memory manager), not {self.memory.name!r}")
        return self
