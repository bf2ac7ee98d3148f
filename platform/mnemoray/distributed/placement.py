"""Placing actor groups on a cluster: one placement group per role, PACK or SPREAD by config.

PACK keeps a group on as few nodes as possible (fast weight pushes, one node's shared
memory); SPREAD puts its members on different nodes (judge/reward actors should not share
one node's network and CPUs; rollout engines should spread over GPU nodes). Both are soft:
on one node everything still fits. STRICT_* refuse to place rather than bend.
"""

from __future__ import annotations

from typing import Any, Literal

Strategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]


def bundle(cpus: float, gpus: float = 0.0) -> dict[str, float]:
    return {"CPU": cpus} | ({"GPU": gpus} if gpus else {})


def reserve(count: int, resources: dict[str, float], strategy: Strategy, name: str) -> Any:
    """A ready placement group of `count` identical bundles (waits until Ray can place it)."""
    from ray.util.placement_group import placement_group

    group = placement_group([dict(resources) for _ in range(count)], strategy=strategy, name=name)
    import ray

    ray.get(group.ready())
    return group


def in_bundle(group: Any, index: int) -> dict[str, Any]:
    """Actor options that schedule it into bundle `index` of `group`."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
        placement_group=group, placement_group_bundle_index=index)}


def release(group: Any) -> None:
    from ray.util.placement_group import remove_placement_group

    if group is not None:
        remove_placement_group(group)


def bundle_nodes(group: Any) -> list[str]:
    """The node id of each bundle of a ready placement group, in bundle order."""
    from ray.util import placement_group_table

    nodes = placement_group_table(group)["bundles_to_node_id"]
    return [nodes[i] for i in sorted(nodes)]


def node_cpus(node_id: str) -> float:
    """The CPUs Ray gives node `node_id` (0 when it is not known)."""
    import ray

    return next((float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n["NodeID"] == node_id), 0.0)


def current_node() -> str:
    """The Ray node id of the calling process (for placement logs and tests)."""
    import ray

    return ray.get_runtime_context().get_node_id()


__all__ = ["Strategy", "bundle", "bundle_nodes", "current_node", "in_bundle", "node_cpus", "release", "reserve"]
