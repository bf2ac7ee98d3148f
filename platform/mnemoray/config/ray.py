"""Where Ray runs and how much of it a job's workers take."""

from __future__ import annotations

from pydantic import Field, model_validator

from mnemoray.config.base import StrictModel


class RayClusterConfig(StrictModel):
    address: str | None = Field(
        None, description="Ray cluster address ('auto' inside a cluster); None starts local Ray"
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray started for this run")


class RayConfig(RayClusterConfig):
    """A pool of workers (Ray Data actors) of one job: Ray Data's autoscaling actor pool keeps
    `min_workers` and grows to `workers` while work is queued (on an autoscaling cluster, the
    actors' CPU/GPU demand is what adds worker nodes)."""

    workers: int = Field(2, ge=1, description="most actors working in parallel (one history at a time each)")
    min_workers: int = Field(1, ge=1, description="actors kept from the start (the pool's min_size)")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0, description="set > 0 with index.device=cuda on GPU clusters")

    @model_validator(mode="after")
    def _pool_bounds(self) -> RayConfig:
        if self.min_workers > self.workers:
            raise ValueError(f"ray.min_workers ({self.min_workers}) must not exceed ray.workers ({self.workers})")
        return self
