"""GRPO on a two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`, each node with
its own CPUs): with SPREAD placement the policy workers, rollout engines and reward actors
land on both nodes, and the run's per-step rewards equal those of a one-node run with the
same seed (placement changes where work runs, not what is computed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnemoray.config import load_config
from mnemoray.config.grpo import GRPOConfig
from mnemoray.distributed.runtime import WORKER_ENV
from repo_paths import REPO

pytestmark = pytest.mark.integration

# one torch thread everywhere: "auto" would give a node's lone worker more threads than two workers sharing
# a node get, and thread counts may change float sums, which the equality below must not depend on
SETTINGS = ["schedule.steps=3", "schedule.save_every=3", "rollout.engines=2", "ray.num_cpus=null",
            "ray.torch_threads=1", "rollout.threads=1"]
SPREAD = ["ray.placement=SPREAD", "rollout.placement=SPREAD", "reward.placement=SPREAD"]


def _run(tmp_path: Path, tiny_cache: Path, nodes: int, *overrides: str) -> Path:
    import ray
    from ray.cluster_utils import Cluster

    from mnemoray.distributed.train.grpo import run_grpo

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=3)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env={"env_vars": {**WORKER_ENV, "DS_ACCELERATOR": "cpu"}})
    try:
        cfg = load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml",
                          [f"name=n{nodes}", f"out={tmp_path}", f"model.tiny_cache_dir={tiny_cache}", *SETTINGS,
                           *overrides])
        result = run_grpo(cfg)
        assert result.error is None, result.error
        return result.run_dir
    finally:
        ray.shutdown()
        cluster.shutdown()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_spread_over_two_nodes_places_every_role_on_both_and_computes_the_same(tmp_path: Path, tiny_cache: Path):
    one = _run(tmp_path, tiny_cache, 1)
    two = _run(tmp_path, tiny_cache, 2, *SPREAD)
    (placement,) = [e for e in _lines(two / "events.jsonl") if e["event"] == "placement"]
    for role in ("policy", "rollout", "reward"):
        assert len(placement[role]) == 2 and len(set(placement[role])) == 2, (role, placement)
    (single,) = [e for e in _lines(one / "events.jsonl") if e["event"] == "placement"]
    assert len({*single["policy"], *single["rollout"], *single["reward"]}) == 1
    rewards_one = [r["reward_mean"] for r in _lines(one / "metrics.jsonl")]
    rewards_two = [r["reward_mean"] for r in _lines(two / "metrics.jsonl")]
    assert len(rewards_one) == 3 and rewards_one == rewards_two
