"""RewardPool on real local Ray: a step's items spread over reward actors, one result per
distinct id; an actor that dies mid-batch restarts and its batch is resent (nothing lost,
nothing counted twice); a batch that keeps killing its actor is scored as failed after
max_resubmits, and the other batches still score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnemoray.config.rl import RewardPoolConfig
from mnemoray.rewards.items import RewardItem

pytestmark = pytest.mark.integration


def items(n: int) -> list[RewardItem]:
    return [RewardItem(id=f"s{k}", data_source="t", solution_str="e" * (k % 4) + "x", ground_truth="e")
            for k in range(n)]


def pool_for(reward: str, **extra):
    from mnemoray.distributed.actors.reward_pool import RewardPool

    return RewardPool.from_config(RewardPoolConfig(**{"reward": reward, "num_actors": 2, "in_flight_per_actor": 4,
                                                      "cpus_per_actor": 0.1, **extra}))


def test_items_spread_over_actors_one_result_per_id(ray_local):
    pool = pool_for("keyword-count")
    try:
        batch = items(30)
        scored = pool.score(batch + batch[:5])  # a repeated id is scored once
        assert sorted(scored) == sorted(i.id for i in batch)
        assert all(scored[f"s{k}"].score == pytest.approx((k % 4) / (k % 4 + 1)) for k in range(30))
        calls = [s["calls"] for s in pool.actor_stats()]
        assert sum(calls) == 30 and all(c > 0 for c in calls)  # both actors worked
        assert pool.stats.items == 30 and pool.stats.batches == 8 and pool.stats.resubmits == 0
    finally:
        pool.close()


def test_an_actor_killed_mid_batch_restarts_and_its_batch_is_resent(ray_local, tmp_path: Path):
    reward = tmp_path / "dies_once.py"
    reward.write_text(
        "import os\n"
        f"MARK = {str(tmp_path / 'died')!r}\n"
        "def compute_score(ds, s, gt, extra=None):\n"
        "    if extra.get('die') and not os.path.exists(MARK):\n"
        "        open(MARK, 'w').close()\n"
        "        os._exit(1)\n"
        "    return {'score': 1.0, 'pid': os.getpid()}\n")
    pool = pool_for(f"{reward}:compute_score")
    try:
        batch = [RewardItem(id=f"k{k}", data_source="t", solution_str="x", extra_info={"die": k == 9})
                 for k in range(20)]
        scored = pool.score(batch)
        assert sorted(scored) == sorted(i.id for i in batch)
        assert all(r.score == 1.0 and not r.failed for r in scored.values()), [
            r.error for r in scored.values() if r.failed]
        assert (tmp_path / "died").exists() and pool.stats.resubmits == 1 and pool.stats.lost_batches == 0
        again = pool.score(items(8))  # both actors (one of them restarted) keep serving
        assert all(r.score == 1.0 for r in again.values()) and len({r.extras["pid"] for r in again.values()}) == 2
    finally:
        pool.close()


def test_a_batch_that_always_kills_its_actor_fails_alone(ray_local, tmp_path: Path):
    reward = tmp_path / "always_dies.py"
    reward.write_text(
        "import os\n"
        "def compute_score(ds, s, gt, extra=None):\n"
        "    if s == 'poison':\n        os._exit(1)\n"
        "    return 1.0\n")
    pool = pool_for(f"{reward}:compute_score", max_resubmits=1)
    try:
        batch = [RewardItem(id=f"p{k}", data_source="t", solution_str="poison" if k == 0 else "ok")
                 for k in range(12)]
        scored = pool.score(batch)
        failed = sorted(i for i, r in scored.items() if r.failed)
        assert failed == ["p0", "p1", "p2", "p3"]  # the poisoned item's batch of 4
        assert "the actor died 2 times" in scored["p0"].error
        assert all(scored[f"p{k}"].score == 1.0 for k in range(4, 12))
        assert pool.stats.resubmits == 1 and pool.stats.lost_batches == 1 and pool.stats.failed == 4
    finally:
        pool.close()


def test_a_reward_actor_killed_during_dualmem_trajectories_counts_every_trajectory_once(
        ray_local, tmp_path: Path, embedder):
    """The dualmem collector (multi-step trajectories) scores through the pool; an actor dies
    mid-step: every (trajectory, query) item comes back once, so each trajectory's reward is
    the mean of its own queries' scores and its advantage is computed from exactly those."""
    import statistics

    from mnemoray.config import load_config
    from mnemoray.config.grpo import GRPOConfig
    from mnemoray.records import EvalSample, EvidenceQuery, History, Persona, Session, Turn
    from mnemoray.rl.advantages import group_advantages
    from mnemoray.rl.environments.dualmem_collect import DualmemCollector, trajectory_source
    from mnemoray.rl.sequences import Rollout
    from repo_paths import REPO

    reward = tmp_path / "dies_once.py"
    reward.write_text(
        "import os\n"
        f"MARK = {str(tmp_path / 'died')!r}\n"
        "def compute_score(ds, s, gt, extra=None):\n"
        "    if not os.path.exists(MARK):\n"
        "        open(MARK, 'w').close()\n"
        "        os._exit(1)\n"
        "    return (len(s) % 10) / 10\n")
    lines = ["I grew up in Porto.", "Lovely.", "I play the cello.", "Nice.", "Rita is a pilot.", "Wow."]
    history = History(id="h1", dataset="test", persona=Persona(id="ana", name="Ana", description="A musician."),
                      sessions=[Session(id="h1:S0", timestamp="2023-06-01", turns=[
                          Turn(id=f"h1:S0#{i}", speaker="Ana" if i % 2 == 0 else "Bot", text=t, index=i)
                          for i, t in enumerate(lines)])])
    sample = EvalSample(history=history, queries=[
        EvidenceQuery(id=f"h1:q{i}", history_id="h1", text=q, gold_ids=[], gold_level="session")
        for i, q in enumerate(["Where did you grow up?", "What do you play?"])])
    cfg = load_config(GRPOConfig, REPO / "configs/train/grpo_dualmem_local.yaml",
                      ["rollout.n=3", "ray.workers=1", "environment.trajectories.chunk_turns=2",
                       "environment.trajectories.max_chunks=3", "environment.trajectories.k=3"])
    collector = DualmemCollector(cfg, [trajectory_source(sample, 2, 3, 2, REPO)], embedder)

    def generate(inputs, settings, seed):  # trajectory t writes the chunk's first t lines as facts
        out = []
        for p in inputs:
            t = int(p.id.split("#")[1].split(".")[0])
            chunk = p.messages[-1]["content"].split("Dialogue chunk:\n")[1].splitlines()
            facts = [line.split(": ", 1)[1] for line in chunk[:t]]
            out.append(Rollout(p.id, 0, (1, 2), (3,), json.dumps({"facts": facts, "insights": []}), True))
        return out

    pool = pool_for(f"{reward}:compute_score", in_flight_per_actor=2)
    sent: list[RewardItem] = []

    def score(batch):
        sent.extend(batch)
        return pool.score(batch)

    try:
        for step in (1, 2):  # the actor dies in step 1; step 2 runs on the restarted one
            sent.clear()
            batch = collector.collect(step, generate, score)
            assert len(sent) == 3 * 2 and len({i.id for i in sent}) == len(sent)  # 3 trajectories x 2 queries
            own = {}
            for item in sent:
                own.setdefault(item.id.split("/")[0], []).append((len(item.solution_str) % 10) / 10)
            expected = [statistics.fmean(own[f"0:h1#{t}"]) for t in range(3)]
            assert len(set(expected)) > 1  # the trajectories' memories differ, so their rewards do
            r = batch.record
            assert r["reward_failed"] == 0 and r["trajectory/queries"] == 6
            assert r["reward_mean"] == pytest.approx(statistics.fmean(expected))
            adv = group_advantages(expected, ["h"] * 3).advantages.tolist()
            steps = r["trajectory/steps_mean"]
            assert steps == 3 and batch.advantages == pytest.approx([a for a in adv for _ in range(3)], rel=1e-5)
        assert (tmp_path / "died").exists()
        assert pool.stats.resubmits == 1 and pool.stats.lost_batches == 0 and pool.stats.failed == 0
    finally:
        pool.close()
