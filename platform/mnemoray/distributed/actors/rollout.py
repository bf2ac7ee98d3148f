"""Rollout engines as Ray actors: a sampler (`mnemoray.rl.rollout`) that the policy
workers push new weights to after every update: through the object store, or broadcast
over a weight group (`rl/weight_group.py`; `distributed/actors/weight_sync.py` drives it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ray

from mnemoray.distributed.placement import Strategy, bundle, bundle_nodes, current_node, in_bundle, node_cpus, reserve
from mnemoray.rl.rollout import PromptInput, SamplingSettings
from mnemoray.rl.rollout_registry import build_sampler
from mnemoray.rl.sequences import Rollout
from mnemoray.rl.threads import Threads, machine_cores, phase_threads, set_torch_threads
from mnemoray.rl.weights import PackedWeights, pack_weights, unpack_weights


class StaleWeights(RuntimeError):
    """A rollout engine asked for rollouts of a weight version it does not hold."""


class NotInGroup(RuntimeError):
    """A rollout engine asked to receive over a weight group it is not a member of (it
    restarted since the group was built, or the group was rebuilt without it)."""


@ray.remote(max_restarts=-1, max_task_retries=2)
class RolloutActor:
    def __init__(self, engine: str, model_path: str, device: str, dtype: str, torch_threads: Threads,
                 cpus: float = 1.0, peers: int = 1, options: Mapping[str, Any] | None = None):
        """`cpus`: the CPUs of this engine's node, shared by the `peers` engines placed there
        (they sample at the same time; "auto" threads split the node between them).
        `options`: the sampler's own keyword arguments (`rollout.engine_options`)."""
        import os

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.threads = phase_threads(torch_threads, cpus, peers, machine_cores())
        set_torch_threads(self.threads)
        self.sampler = build_sampler(engine, model_path, device=device, dtype=dtype, **dict(options or {}))
        self.device = device
        self.group: Any = None

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str,
                          group_id: str, timeout_s: float) -> str:
        """Blocks until every member (rank 0: the policy's rank 0) has joined."""
        from mnemoray.rl.weight_group import WeightGroup

        self.leave_weight_group()
        if backend == "nccl":
            import torch

            device = torch.device(self.device)
            if device.index is not None:  # "cuda": the one GPU Ray gave this actor, already current
                torch.cuda.set_device(device)
        self.group = WeightGroup(host, port, rank, world_size, backend, group_id, timeout_s)
        return group_id

    def weight_group(self) -> str | None:
        return None if self.group is None else self.group.group_id

    def leave_weight_group(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None

    def receive_weights(self, layout: Any, version: int, group_id: str) -> int:
        """The weights rank 0 broadcasts over `group_id`, loaded into the sampler. A failed
        receive leaves the group (its peers then fail fast instead of waiting)."""
        if self.group is None or self.group.group_id != group_id:
            raise NotInGroup(f"engine is in weight group {self.weight_group()!r}, not {group_id!r}")
        stream = self.group.receive_stream(layout)  # loaded as it arrives: one bucket held at a time
        try:
            loaded = self.sampler.load_weights(stream, version)
            for _ in stream:  # buckets the sampler did not read still have to be received
                pass
        except Exception:
            self.leave_weight_group()
            raise
        return loaded

    def load_weights(self, state: PackedWeights | Mapping[str, Any], version: int) -> int:
        return self.sampler.load_weights(unpack_weights(state), version)

    def version(self) -> int:
        return self.sampler.version

    def node(self) -> str:
        return current_node()

    def torch_threads(self) -> int | None:
        return self.threads

    def pid(self) -> int:
        import os

        return os.getpid()

    def generate(self, prompts: Sequence[PromptInput], settings: SamplingSettings, seed: int,
                 version: int | None = None) -> list[Rollout]:
        """Rollouts from the weights of `version`; StaleWeights if this engine holds others
        (it restarted with the initial weights after a crash)."""
        if version is not None and self.sampler.version != version:
            raise StaleWeights(f"engine holds weights v{self.sampler.version}, the step needs v{version}")
        return self.sampler.generate(prompts, settings, seed)


def start_rollout_actors(count: int, engine: str, model_path: str, *, num_cpus: float, num_gpus: float,
                         device: str, dtype: str, torch_threads: Threads = 1,
                         strategy: Strategy = "PACK", options: Mapping[str, Any] | None = None
                         ) -> tuple[list[Any], Any]:
    """`count` engines in one placement group (returned, to release when done); with
    torch_threads "auto" the engines on a node share its CPUs."""
    group = reserve(count, bundle(num_cpus, num_gpus), strategy, "mnemoray-rollout")
    nodes = bundle_nodes(group)
    actors = [RolloutActor.options(num_cpus=num_cpus, num_gpus=num_gpus, **in_bundle(group, i)).remote(
        engine, model_path, device, dtype, torch_threads, node_cpus(node), nodes.count(node), options)
        for i, node in enumerate(nodes)]
    return actors, group


def push_weights(actors: Sequence[Any], state: Mapping[str, Any], version: int) -> Any:
    """One copy of the weights into the object store, read by every engine; returns its ref
    (keep it to re-sync an engine that restarts)."""
    ref = ray.put(pack_weights(state))  # numpy: engines read it from shared memory, no copy per engine
    ray.get([a.load_weights.remote(ref, version) for a in actors])
    return ref


def generate_split(actors: Sequence[Any], prompts: Sequence[PromptInput], settings: SamplingSettings,
                   seed: int, version: int = 0, weights: Any = None) -> list[Rollout]:
    """Prompts dealt round-robin over the engines; rollouts back in prompt order.

    An engine that restarted since the last push (it holds the initial weights) gets
    `weights` (the ref `push_weights` returned, or a function that makes one; None = the
    initial weights, version 0) again and its share is sampled again, so no rollout comes
    from a stale policy.
    """
    parts = [list(prompts[i :: len(actors)]) for i in range(len(actors))]
    by_prompt: dict[str, list[Rollout]] = {}
    calls = {i: a.generate.remote(p, settings, seed + 1000 * i, version)
             for i, (a, p) in enumerate(zip(actors, parts)) if p}
    for i, call in calls.items():
        try:
            result = ray.get(call)
        except ray.exceptions.RayTaskError as err:
            if not isinstance(err.cause, StaleWeights) or weights is None:
                raise
            ray.get(actors[i].load_weights.remote(weights() if callable(weights) else weights, version))
            result = ray.get(actors[i].generate.remote(parts[i], settings, seed + 1000 * i, version))
        for r in result:
            by_prompt.setdefault(r.prompt_id, []).append(r)
    return [r for p in prompts for r in sorted(by_prompt.get(p.id, []), key=lambda x: x.sample)]
