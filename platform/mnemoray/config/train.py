"""SFTConfig: everything an SFT run needs, validated before any worker starts.

Laptop and cluster runs differ only in this config (model, workers, ZeRO stage, dtype),
so mistakes that would surface minutes later inside a worker are rejected here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mnemoray.config.base import StrictModel
from mnemoray.config.llm import TinyModel
from mnemoray.config.ray import RayClusterConfig

DataFormat = Literal["auto", "trajectory", "alpaca", "sharegpt", "messages"]


class DataSource(StrictModel):
    path: Path
    format: DataFormat = Field("auto", description="auto = guess from the first record")


class SFTData(StrictModel):
    train: list[DataSource] = Field(..., min_length=1)
    eval: list[DataSource] = Field(default_factory=list, description="empty = hold out eval_fraction of train")
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(512, ge=8, description="tokens per sample (or per packed row)")
    overlong: Literal["truncate", "drop"] = "truncate"
    train_on: Literal["all_assistant", "last_assistant"] = "all_assistant"
    packing: bool = Field(False, description="concatenate samples into max_length rows (separate attention per sample)")
    shuffle_seed: int = 0
    shard: Literal["stream", "memory"] = Field(
        "stream", description="stream = iterate each worker's Ray Data shard every epoch (any data size); "
        "memory = read the shard once into RAM (no data pipeline competing with the steps)")


class SFTModel(StrictModel):
    path: str | None = Field(None, description="local Hugging Face checkpoint folder")
    tiny: TinyModel | None = Field(None, description="train a tiny random model built in tiny_cache_dir")
    tiny_cache_dir: Path = Path("~/.cache/mnemoray/tiny")
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> SFTModel:
        if (self.path is None) == (self.tiny is None):
            raise ValueError("set exactly one of 'path' or 'tiny'")
        return self

    def resolve_path(self) -> str:
        """The checkpoint folder to start from; builds the tiny model on first use."""
        if self.path is not None:
            return self.path
        from mnemoray.llm.tiny import ensure_tiny

        assert self.tiny is not None
        return str(ensure_tiny(self.tiny_cache_dir, arch=self.tiny.arch, seed=self.tiny.seed))


class SFTOptim(StrictModel):
    lr: float = Field(1e-5, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to lr * min_lr_ratio")
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, gt=0)


class SFTDeepSpeed(StrictModel):
    zero_stage: Literal[0, 1, 2, 3] = 2
    dtype: Literal["fp32", "bf16", "fp16"] = "bf16"
    offload_optimizer: Literal["none", "cpu"] = "none"
    offload_param: Literal["none", "cpu"] = Field("none", description="ZeRO-3 only")
    torch_adam: bool = Field(False, description="torch Adam instead of DeepSpeed's compiled one (CPU runs)")
    extra: dict[str, Any] = Field(default_factory=dict, description="merged last into the DeepSpeed config")


class SFTSchedule(StrictModel):
    micro_batch_size: int = Field(4, ge=1, description="rows per worker per forward pass")
    grad_accum: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; None = epochs over the data")
    epochs: float = Field(1.0, gt=0)
    eval_every: int = Field(0, ge=0, description="optimizer steps; 0 = only at start and end")
    save_every: int = Field(100, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    keep: int = Field(2, ge=1, description="checkpoints kept in storage")
    log_every: int = Field(1, ge=1)
    seed: int = 0


class SFTRay(RayClusterConfig):
    """Where Ray runs (address, num_cpus) and the Ray Train worker group."""

    workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(2, ge=0, description="worker-group restarts from the last checkpoint")
    accelerator: Literal["cpu", "cuda"] = Field("cpu", description="DS_ACCELERATOR set in every worker")
    torch_threads: int | None = Field(1, ge=1, description="torch threads per worker; None = torch default")


class TrainRun(StrictModel):
    """What every training run has: a name (rerun = resume), where it writes, the model,
    the optimizer, DeepSpeed and its Ray Train worker group. SFT and GRPO extend it."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="run name; rerun = resume")
    out: Path = Field(Path("runs/train"), description="metrics.jsonl, plots and hf/ land in out/name")
    storage_path: Path | None = Field(None, description="Ray Train storage; None = out/ray_storage")
    model: SFTModel
    optim: SFTOptim = Field(default_factory=SFTOptim)
    deepspeed: SFTDeepSpeed = Field(default_factory=SFTDeepSpeed)
    ray: SFTRay = Field(default_factory=SFTRay)

    @model_validator(mode="after")
    def _runs_here(self) -> TrainRun:
        ds = self.deepspeed
        if self.ray.accelerator == "cpu":
            if self.ray.use_gpu:
                raise ValueError("ray.use_gpu=true needs ray.accelerator=cuda")
            if ds.dtype == "fp16":
                raise ValueError("deepspeed.dtype=fp16 is not supported on CPU; use fp32 or bf16")
        if ds.offload_param != "none" and ds.zero_stage != 3:
            raise ValueError("deepspeed.offload_param needs deepspeed.zero_stage=3")
        if ds.offload_optimizer != "none" and ds.zero_stage == 0:
            raise ValueError("deepspeed.offload_optimizer needs deepspeed.zero_stage >= 1")
        return self

    @property
    def run_dir(self) -> Path:
        return self.out / self.name

    @property
    def storage(self) -> Path:
        return (self.storage_path or self.out / "ray_storage").expanduser().resolve()

    def resolve_model_path(self) -> str:
        return self.model.resolve_path()


class SFTConfig(TrainRun):
    out: Path = Field(Path("runs/sft"), description="metrics.jsonl, loss.png and hf/ land in out/name")
    data: SFTData
    schedule: SFTSchedule = Field(default_factory=SFTSchedule)
