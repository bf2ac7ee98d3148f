"""Policy weights broadcast over a process group of their own: rank 0 (the policy's rank 0)
sends, the rollout engines receive. gloo on CPU, NCCL on GPU; plain torch, no Ray.

Why a group of its own: the policy workers' default group (DeepSpeed's) does not include
the engines, and a process has one default group, so this one is built directly on a
`TCPStore` that rank 0 serves. Tensors travel as byte buckets (fewer, larger messages; any
dtype mix), each tensor at an aligned offset, so a receiver views them back without a copy.
Tied tensors (embeddings and lm_head sharing storage) travel once, as in `rl/weights.py`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

ALIGN = 64  # bytes; a bucket offset every dtype can be viewed at


@dataclass(frozen=True)
class TensorSlot:
    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without "torch."
    bucket: int
    offset: int  # bytes into the bucket
    same_as: str | None = None  # a tied tensor: the name it shares storage with

    @property
    def nbytes(self) -> int:
        return _numel(self.shape) * _dtype(self.dtype).itemsize


@dataclass(frozen=True)
class WeightLayout:
    """Where each tensor sits in which bucket: sent with the receive call, a few KB."""

    slots: list[TensorSlot]
    bucket_bytes: list[int]

    @property
    def nbytes(self) -> int:
        return sum(self.bucket_bytes)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def weight_layout(state: Mapping[str, torch.Tensor], bucket_bytes: int) -> WeightLayout:
    """Tensors packed in order into buckets of at most `bucket_bytes` (a larger tensor gets a
    bucket of its own)."""
    slots: list[TensorSlot] = []
    sizes: list[int] = []
    seen: dict[tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype], str] = {}
    for name, t in state.items():
        key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
        dtype = str(t.dtype).removeprefix("torch.")
        if key in seen:
            slots.append(TensorSlot(name, tuple(t.shape), dtype, -1, 0, same_as=seen[key]))
            continue
        seen[key] = name
        nbytes = t.numel() * t.element_size()
        start = -(-sizes[-1] // ALIGN) * ALIGN if sizes else 0
        if not sizes or (start + nbytes > bucket_bytes and sizes[-1] > 0):
            sizes.append(0)
            start = 0
        slots.append(TensorSlot(name, tuple(t.shape), dtype, len(sizes) - 1, start))
        sizes[-1] = start + nbytes
    return WeightLayout(slots, sizes)


class WeightGroup:
    """One member of a weight-broadcast group (rank 0 sends). Build rank 0 first: it serves
    the rendezvous store; the others connect to `host:port`."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: str = "gloo",
                 group_id: str = "weights", timeout_s: float = 300.0, store: Any = None) -> None:
        timeout = datetime.timedelta(seconds=timeout_s)
        if store is None:
            store = dist.TCPStore(host, port, None, rank == 0, timeout=timeout, wait_for_workers=False)
        self.store = store  # rank 0's store must outlive the group
        self.rank, self.world_size, self.backend, self.group_id = rank, world_size, backend, group_id
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        prefixed = dist.PrefixStore(group_id, store)
        if backend == "gloo":
            self.pg = dist.ProcessGroupGloo(prefixed, rank, world_size, timeout)
        elif backend == "nccl":
            self.pg = dist.ProcessGroupNCCL(prefixed, rank, world_size)
        else:
            raise ValueError(f"weight group backend must be gloo or nccl, not {backend!r}")

    @staticmethod
    def serve_store(host: str, timeout_s: float = 300.0) -> Any:
        """Rank 0's rendezvous store on a free port (`.port`), reusable for later groups."""
        return dist.TCPStore(host, 0, None, True, timeout=datetime.timedelta(seconds=timeout_s),
                             wait_for_workers=False)

    def _broadcast(self, buffer: torch.Tensor) -> None:
        self.pg.broadcast(buffer, 0).wait()

    def send(self, state: Mapping[str, torch.Tensor], layout: WeightLayout) -> None:
        """Rank 0: every bucket, filled from `state` in the layout's order."""
        by_bucket: dict[int, list[TensorSlot]] = {}
        for slot in layout.slots:
            if slot.same_as is None:
                by_bucket.setdefault(slot.bucket, []).append(slot)
        for index, size in enumerate(layout.bucket_bytes):
            slots = by_bucket.get(index, [])
            if len(slots) == 1 and slots[0].offset == 0 and self._sendable(state[slots[0].name]):
                self._broadcast(_bytes_of(state[slots[0].name]))  # a bucket of one: sent in place
                continue
            buffer = torch.empty(size, dtype=torch.uint8, device=self.device)
            for slot in slots:
                buffer[slot.offset : slot.offset + slot.nbytes].copy_(_bytes_of(state[slot.name].detach()))
            self._broadcast(buffer)

    def _sendable(self, t: torch.Tensor) -> bool:
        return t.is_contiguous() and t.device.type == self.device.type

    def receive_stream(self, layout: WeightLayout) -> Iterator[tuple[str, torch.Tensor]]:
        """Ranks > 0: (name, tensor) pairs in the layout's order, bucket by bucket, each bucket
        received when the pairs reach it. A consumer that loads each tensor as it comes needs
        one bucket of extra memory, not a second copy of the model (on a GPU that vLLM has
        mostly reserved, a whole copy would not fit). Drain it: rank 0 sends every bucket."""
        tied_sources = {slot.same_as for slot in layout.slots if slot.same_as is not None}
        held: dict[str, torch.Tensor] = {}  # only what a later tied name points back to
        bucket: tuple[int, torch.Tensor] | None = None
        for slot in layout.slots:
            if slot.same_as is not None:
                yield slot.name, held[slot.same_as]
                continue
            if bucket is None or bucket[0] != slot.bucket:
                buffer = torch.empty(layout.bucket_bytes[slot.bucket], dtype=torch.uint8, device=self.device)
                self._broadcast(buffer)
                bucket = (slot.bucket, buffer)
            raw = bucket[1][slot.offset : slot.offset + slot.nbytes]
            tensor = raw.view(_dtype(slot.dtype)).view(slot.shape)
            if slot.name in tied_sources:
                held[slot.name] = tensor
            yield slot.name, tensor  # every bucket holds a slot (weight_layout), so every one is received

    def receive(self, layout: WeightLayout) -> dict[str, torch.Tensor]:
        """Ranks > 0: every tensor at once (tied names share one), viewing the received buckets."""
        return dict(self.receive_stream(layout))

    def close(self) -> None:
        pg = getattr(self, "pg", None)
        self.pg = None
        if pg is not None and hasattr(pg, "abort") and self.backend == "nccl":
            pg.abort()


def _bytes_of(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


__all__ = ["WeightGroup", "WeightLayout", "TensorSlot", "weight_layout"]
