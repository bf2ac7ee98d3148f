"""How the policy's rank 0 gets new weights to the rollout engines each step
(`rollout.weight_sync`): one copy through the object store, or a broadcast over a weight
group of rank 0 and the engines (gloo on CPU, NCCL on GPU).

The broadcast group is built on the first push and rebuilt whenever an engine is not in
it (it restarted) or a broadcast fails; a failed broadcast falls back to the object store
for that step, so a step never waits on a broken group and no engine keeps old weights.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray

from mnemoray.distributed.actors.rollout import push_weights
from mnemoray.rl.weights import pack_weights

log = logging.getLogger("mnemoray.grpo")

Resync = Any  # what generate_split re-syncs a restarted engine from: a ref, a function making one, or None


class ObjectStoreSync:
    """One `ray.put` of the packed weights per step, read in place by every engine."""

    name = "object_store"
    on_device = False  # the state dict it sends: host memory

    def __init__(self, actors: Sequence[Any], **_: Any) -> None:
        self.actors = list(actors)
        self.builds = self.fallbacks = 0

    def push(self, state: Mapping[str, Any], version: int) -> Resync:
        return push_weights(self.actors, state, version)

    def close(self) -> None:
        pass


class BroadcastSync:
    """Rank 0 of a weight group with the engines; `state` is broadcast bucket by bucket."""

    name = "broadcast"

    def __init__(self, actors: Sequence[Any], device: str = "cpu", bucket_mb: float = 256, timeout_s: float = 300,
                 host: str | None = None) -> None:
        from mnemoray.rl.weight_group import WeightGroup

        self.actors = list(actors)
        self.backend = "nccl" if device.startswith("cuda") else "gloo"  # the engines' device decides
        self.timeout_s = timeout_s
        self.on_device = self.backend == "nccl"  # NCCL sends the policy's GPU tensors as they are
        self.bucket_bytes = max(1, int(bucket_mb * 2**20))
        self.host = host or ray.util.get_node_ip_address()
        self.store = WeightGroup.serve_store(self.host, timeout_s)
        self.group: Any = None
        self.builds = 0  # groups built (1 + rebuilds after engine restarts or failures)
        self.fallbacks = 0  # steps pushed through the object store because a broadcast failed

    def _ensure_group(self) -> Any:
        from mnemoray.rl.weight_group import WeightGroup

        members = ray.get([a.weight_group.remote() for a in self.actors])
        if self.group is not None and all(m == self.group.group_id for m in members):
            return self.group
        self._drop_group()
        group_id = f"weights-{uuid.uuid4().hex[:8]}"
        world = len(self.actors) + 1
        joins = [a.join_weight_group.remote(self.host, self.store.port, i + 1, world, self.backend, group_id,
                                            self.timeout_s) for i, a in enumerate(self.actors)]
        self.group = WeightGroup(self.host, self.store.port, 0, world, self.backend, group_id, self.timeout_s,
                                 store=self.store)
        ray.get(joins)
        self.builds += 1
        return self.group

    def _drop_group(self) -> None:
        if self.group is not None:
            self.group.close()  # the engines still in it fail fast instead of waiting
            self.group = None

    def push(self, state: Mapping[str, Any], version: int) -> Resync:
        from mnemoray.rl.weight_group import weight_layout

        resync = functools.cache(lambda: ray.put(pack_weights(state)))
        layout = weight_layout(state, self.bucket_bytes)
        try:
            group = self._ensure_group()
            receives = [a.receive_weights.remote(layout, version, group.group_id) for a in self.actors]
            group.send(state, layout)
            ray.get(receives)
        except Exception as err:  # noqa: BLE001 - an engine died or left: this step goes through the object store
            log.warning("weight broadcast failed (%s: %s); pushing v%d through the object store",
                        type(err).__name__, err, version)
            self._drop_group()
            self.fallbacks += 1
            ray.get([a.leave_weight_group.remote() for a in self.actors])
            ray.get([a.load_weights.remote(resync(), version) for a in self.actors])
        return resync

    def close(self) -> None:
        self._drop_group()


SYNCS: dict[str, Callable[..., Any]] = {"object_store": ObjectStoreSync, "broadcast": BroadcastSync}


def weight_sync_for(method: str, actors: Sequence[Any], *, device: str, bucket_mb: float, timeout_s: float) -> Any:
    """The sync named by `rollout.weight_sync` (a key of SYNCS)."""
    return SYNCS[method](actors, device=device, bucket_mb=bucket_mb, timeout_s=timeout_s)


__all__ = ["BroadcastSync", "ObjectStoreSync", "SYNCS", "weight_sync_for"]
