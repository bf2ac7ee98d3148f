"""GRPOConfig: a GRPO / ADRPO run, validated before any worker starts.

It reuses the SFT blocks (model, optimizer, DeepSpeed, the Ray Train worker group) so
the two training stages read alike; what is new is the environment (what a prompt is),
the rollout engines, the reward pool and the algorithm's knobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from mnemoray.config.base import StrictModel
from mnemoray.config.rl import RewardPoolConfig
from mnemoray.config.train import SFTOptim, SFTRay, TrainRun
from mnemoray.loaders.registry import DATASETS
from mnemoray.rl.environments.registry import ENVIRONMENTS
from mnemoray.rl.rollout_registry import ROLLOUTS, check_engine_options

Strategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]


class TrajectoryConfig(StrictModel):
    """Multi-step trajectories written by the policy inside the loop (environments with a
    trajectory hook, e.g. dualmem): environment.path is then a dataset of histories."""

    dataset: Annotated[str, AfterValidator(DATASETS.check)] = Field(
        "rolememo", description="the dataset loader of environment.path (histories with their queries)")
    chunk_turns: int = Field(12, ge=1, description="dialogue turns per chunk step")
    max_chunks: int = Field(4, ge=1, description="chunk steps per trajectory at most (the history is cut there); "
                            "fixes the update's batch: prompts_per_step x n x max_chunks samples, short ones padded")
    max_queries: int = Field(2, ge=1, description="role-play queries per history that judge its memory")
    k: int = Field(10, ge=1, description="memories retrieved per query for the in-character reply")


class EnvironmentConfig(StrictModel):
    name: Annotated[str, AfterValidator(ENVIRONMENTS.check)] = Field(
        "prompts", description="an environment of mnemoray.rl.environments (what a prompt is)")
    path: Path = Field(..., description="the environment's data: for 'prompts', a JSONL file or folder of them")
    skip_invalid: bool = Field(False, description="skip malformed records (listed in events.jsonl) instead of stopping")
    limit: int | None = Field(None, ge=1, description="use the first N prompts")
    trajectories: TrajectoryConfig | None = Field(
        None, description="run multi-step trajectories in the loop (None: one prompt per record, single-turn)")

    @model_validator(mode="after")
    def _has_trajectories(self) -> EnvironmentConfig:
        if self.trajectories is not None and ENVIRONMENTS.spec(self.name).trajectories is None:
            able = [s.name for s in ENVIRONMENTS if s.trajectories is not None]
            raise ValueError(f"environment {self.name!r} has no multi-step trajectories (environments that do: "
                             f"{able}); drop environment.trajectories")
        return self


class RolloutConfig(StrictModel):
    engine: Annotated[str, AfterValidator(ROLLOUTS.check)] = Field(
        "hf", description="rollout sampler (mnemoray.rl.rollout_registry.ROLLOUTS)")
    engines: int = Field(1, ge=1, description="rollout engine actors; prompts are split across them")
    colocate: bool = Field(
        False, description="sample with the policy's own DeepSpeed module on rank 0 (verl's hybrid engine, TRL's "
        "layout): no rollout actors and no weight sync; hf sampler, ZeRO 0-2; best with one policy worker")
    weight_sync: Literal["object_store", "broadcast"] = Field(
        "object_store", description="how new weights reach the engines each step: one copy through Ray's object "
        "store, or a broadcast from the policy's rank 0 over a group of its own (gloo on CPU, NCCL on GPU)")
    sync_bucket_mb: float = Field(256.0, gt=0, description="broadcast: tensors travel in byte buckets of this size")
    sync_timeout_s: float = Field(300.0, gt=0, description="broadcast: how long a member waits for the others")
    engine_options: dict[str, Any] = Field(
        default_factory=dict, description="the sampler's own keyword arguments: vllm.LLM's for vllm "
        "(gpu_memory_utilization, max_model_len, enforce_eager, ...), batch_size for hf")
    cpus_per_engine: float = Field(0.5, gt=0)
    gpus_per_engine: float = Field(0.0, ge=0)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    n: int = Field(8, ge=2, description="responses per prompt (the group advantages are computed over)")
    prompts_per_step: int = Field(2, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    placement: Strategy = Field("PACK", description="placement group strategy of the rollout engines")
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        1, description="torch threads per engine; auto = its node's CPUs / the engines there (faster with "
        "one policy worker; with several, the ranks waiting in the broadcast keep the cores busy); None = torch's")

    @model_validator(mode="after")
    def _engine_options(self) -> RolloutConfig:
        check_engine_options(self.engine, self.engine_options)
        return self


class AttributionConfig(StrictModel):
    """ADRPO: the samples of the memory type that served the correct answers get weight alpha."""

    alpha: float = Field(4.0, ge=0)
    boost_core: bool = Field(False, description="may core memory be the boosted type (MemBuilder: never)")
    counts_key: str = Field("attribution_counts", description="reward extra: {memory type: items that served}")
    type_key: str = Field("memory_type", description="prompt extra_info: the store a rollout writes")


class AlgorithmConfig(StrictModel):
    advantage_scale: Literal["std", "none"] = Field(
        "std", description="std = GRPO (r - mean) / std; none = Dr.GRPO (r - mean)")
    eps_low: float = Field(0.2, ge=0, lt=1)
    eps_high: float | None = Field(0.28, ge=0, description="clip-higher; None = eps_low")
    dual_clip: float | None = Field(None, gt=1)
    kl_coef: float = Field(0.0, ge=0, description="KL penalty weight; a frozen reference model sits on every worker")
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    log_kl: bool = Field(True, description="keep the reference even at kl_coef 0 to log the KL (one more forward)")
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    entropy_coef: float = Field(0.0, ge=0)
    epochs: int = Field(1, ge=1, description="passes over each rollout batch")
    minibatches: int = Field(1, ge=1, description="optimizer steps per pass")
    micro_batch_size: int = Field(8, ge=1, description="samples per forward pass on a worker")
    dynamic_sampling: bool = Field(False, description="swap zero-variance groups for freshly sampled ones (DAPO)")
    max_refill_rounds: int = Field(2, ge=1, description="extra sampling rounds per step for dynamic sampling")
    attribution: AttributionConfig | None = Field(None, description="ADRPO per-sample weights; None = all 1")


class GRPOSchedule(StrictModel):
    steps: int = Field(30, ge=1, description="rollout + update steps")
    save_every: int = Field(10, ge=1)
    keep: int = Field(2, ge=1)
    seed: int = 0


class GRPORay(SFTRay):
    placement: Strategy = Field("PACK", description="placement strategy of the policy workers (Ray Train)")
    torch_threads: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(  # type: ignore[assignment]
        1, description="torch threads per policy worker; auto = its node's CPUs / the workers there (the "
        "engines wait while the workers score and update); None = torch's default")


class GRPOConfig(TrainRun):
    out: Path = Field(Path("runs/grpo"), description="metrics.jsonl, report.md, plots and hf/ land in out/name")
    environment: EnvironmentConfig
    reward: RewardPoolConfig
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    optim: SFTOptim = Field(default_factory=lambda: SFTOptim(lr=1e-6, grad_clip=1.0))
    schedule: GRPOSchedule = Field(default_factory=GRPOSchedule)
    ray: GRPORay = Field(default_factory=GRPORay)

    @model_validator(mode="after")
    def _batch_splits(self) -> GRPOConfig:
        samples = self.rollout.prompts_per_step * self.rollout.n
        split = self.algorithm.minibatches * self.ray.workers
        if samples % split:
            raise ValueError(
                f"rollout.prompts_per_step x rollout.n = {samples} samples per step must split evenly into "
                f"algorithm.minibatches x ray.workers = {split} parts")
        return self

    @model_validator(mode="after")
    def _colocation(self) -> GRPOConfig:
        if self.rollout.colocate:
            if self.rollout.engine != "hf":
                raise ValueError(f"rollout.colocate samples with transformers' generate: rollout.engine must be "
                                 f"'hf', not {self.rollout.engine!r} (or set rollout.colocate: false)")
            if self.deepspeed.zero_stage == 3:
                raise ValueError("rollout.colocate needs whole weights on rank 0: deepspeed.zero_stage 0, 1 or 2, "
                                 "not 3 (or set rollout.colocate: false and use rollout engines)")
            if self.rollout.weight_sync != "object_store":
                raise ValueError(f"rollout.colocate syncs no weights: drop rollout.weight_sync "
                                 f"({self.rollout.weight_sync!r}) or set rollout.colocate: false")
        return self

    @model_validator(mode="after")
    def _trajectory_limits(self) -> GRPOConfig:
        if self.environment.trajectories is not None:
            if self.algorithm.dynamic_sampling:
                raise ValueError("algorithm.dynamic_sampling is not supported with environment.trajectories")
            if self.algorithm.attribution is not None:
                raise ValueError("algorithm.attribution is not supported with environment.trajectories")
        return self

    @property
    def samples_per_step(self) -> int:
        """Samples each update trains on (with trajectories: one per chunk step, padded to max_chunks)."""
        steps = self.environment.trajectories.max_chunks if self.environment.trajectories else 1
        return self.rollout.prompts_per_step * self.rollout.n * steps

    @property
    def micro_batches(self) -> int:
        """Forward passes per optimizer step on one worker (DeepSpeed's gradient accumulation)."""
        per_worker = self.samples_per_step // (self.algorithm.minibatches * self.ray.workers)
        return -(-per_worker // self.algorithm.micro_batch_size)
