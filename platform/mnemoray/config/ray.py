"""Where Ray runs and how much of it a job's workers take."""

from __future__ import annotations

from pydantic import Field

from mnemoray.config.base import StrictModel


class RayClusterConfig(StrictModel):
    address: str | None = Field(
        None, description="Ray cluster address ('auto' inside a cluster); None starts local Ray"
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray started for this run")


class RayConfig(RayClusterConfig):
    """A pool of workers (Ray Data actors) of one job."""

    workers: int = Field(2, ge=1, description="actors working in parallel (one history at a time each)")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0, description="set > 0 with index.device=cuda on GPU clusters")
