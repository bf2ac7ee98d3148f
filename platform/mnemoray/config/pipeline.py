"""PipelineConfig: the whole loop as one job (`mnemoray pipeline run`, jobs/pipeline.py).

Each stage names the config file its own command takes (configs/synth, memory, train,
serve, eval) plus key=value overrides; the pipeline wires the stages together (data paths,
output folders, the model each stage starts from) and validates every stage's config
before anything runs (docs/ARCHITECTURE.md, "The pipeline").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from mnemoray.config.base import StrictModel
from mnemoray.config.names import FrameworkName
from mnemoray.config.ray import RayClusterConfig
from mnemoray.rl.environments.registry import ENVIRONMENTS

STAGE_NAMES = ("synth", "memory", "sft", "grpo", "export", "serve", "eval_service", "baselines")


class StageFile(StrictModel):
    config: Path = Field(..., description="the stage command's own config file")
    overrides: list[str] = Field(default_factory=list, description="key=value settings of that file")


class SynthStage(StageFile):
    config: Path = Path("configs/synth/rolememo_local.yaml")


class MemoryStage(StageFile):
    config: Path = Field(Path("configs/memory/dualmem_local.yaml"),
                         description="the teacher's `memory build` config (framework, teacher engine in `llm`)")


class SFTStage(StageFile):
    config: Path = Path("configs/train/sft_local.yaml")


class GRPOStage(StageFile):
    config: Path = Path("configs/train/grpo_local.yaml")
    environment: Annotated[str, AfterValidator(ENVIRONMENTS.check)] = Field(
        "dualmem", description="GRPO environment reading the teacher's build folder (its trajectory log)")
    reward: str = Field("keyword-count", description="a registered reward or 'path/to/file.py:function'")


class ServeStage(StageFile):
    config: Path = Path("configs/serve/memory_local.yaml")
    port: int | None = Field(None, ge=1, le=65535, description="None = a free port on the service's host")


class EvalServiceStage(StrictModel):
    config: Path | None = Field(None, description="an `eval retrieval` config file (optional)")
    overrides: list[str] = Field(default_factory=list)
    memory: FrameworkName = Field("dualmem", description="framework of the eval tenants (built by the served model)")
    limit: int | None = Field(1, ge=1, description="evaluate only the first N synthesized histories")


class BaselinesStage(StageFile):
    config: Path = Path("configs/eval/retrieval_local.yaml")


class PipelineConfig(StrictModel):
    out: str = Field("runs/pipeline/local", description="output path or URI (s3://, gs://, file://)")
    work_dir: Path | None = Field(
        None, description="local folder the stages run in when `out` is a URI (default under "
        "~/.cache/mnemoray/pipeline/); each finished stage is copied to `out`")
    ray: RayClusterConfig = Field(default_factory=lambda: RayClusterConfig(num_cpus=4))
    disabled: list[str] = Field(default_factory=list, description="stages not to run (reported as disabled)")
    synth: SynthStage = Field(default_factory=SynthStage)
    memory: MemoryStage = Field(default_factory=MemoryStage)
    sft: SFTStage = Field(default_factory=SFTStage)
    grpo: GRPOStage = Field(default_factory=GRPOStage)
    serve: ServeStage = Field(default_factory=ServeStage)
    eval_service: EvalServiceStage = Field(default_factory=EvalServiceStage)
    baselines: BaselinesStage = Field(default_factory=BaselinesStage)

    @field_validator("disabled")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in STAGE_NAMES]
        if unknown:
            raise ValueError(f"unknown stages {unknown}; the stages are {list(STAGE_NAMES)}")
        return names


__all__ = ["STAGE_NAMES", "BaselinesStage", "EvalServiceStage", "GRPOStage", "MemoryStage", "PipelineConfig",
           "SFTStage", "ServeStage", "StageFile", "SynthStage"]
