"""The few collectives the training loops make across policy workers (SFT and GRPO alike).

Each is a no-op without a process group (one process: benchmarks, unit tests). Tensors go
on the device the group's backend reduces on: NCCL only reduces GPU tensors, so on a GPU
cluster (Ray Train's default NCCL group) a CPU tensor would fail the collective.
"""

from __future__ import annotations

from typing import Any


def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def collective_device() -> Any:
    """Where a tensor must be for the default group's collectives."""
    import torch
    import torch.distributed as dist

    if _group_ready() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums of `values` over every rank (float64, so counts stay exact)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    if _group_ready():
        dist.all_reduce(t)
    return t.tolist()


def broadcast_from_rank0(value: Any, rank: int) -> Any:
    """Rank 0's `value` on every rank (any picklable object)."""
    import torch.distributed as dist

    if not _group_ready():
        return value
    box = [value if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_all(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    import torch.distributed as dist

    if not _group_ready():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


__all__ = ["all_sum", "broadcast_from_rank0", "collective_device", "gather_all"]
