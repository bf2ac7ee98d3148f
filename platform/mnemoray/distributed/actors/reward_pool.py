"""Reward actors: a step's rollouts scored concurrently on a pool of Ray actors, none lost.

Each `RewardActor` holds a `RewardScorer` (mnemoray.rewards.items: timeouts, retries,
rate limit, in-flight calls). The `RewardPool` cuts a step's items into batches, keeps
every actor busy, and resends a batch whose actor died (the actor restarts:
`max_restarts=-1`); after `max_resubmits` deaths the batch's items are scored as failed
rather than stopping training. Items are keyed by id, so a resent batch never counts twice.
An actor whose batch failed gets no new batch until it is back: a batch sent to a restarting
actor fails at once (ActorUnavailableError) without running, which used up its resubmits
(as deaths) while the actor was still starting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError

from mnemoray.config.rl import RewardPoolConfig
from mnemoray.distributed.placement import bundle, current_node, in_bundle, release, reserve
from mnemoray.rewards.items import RewardItem, RewardScorer
from mnemoray.rewards.scoring import RewardResult, failure


@ray.remote(max_restarts=-1, max_task_retries=0)
class RewardActor:
    def __init__(self, cfg: dict[str, Any]):
        pool = RewardPoolConfig.model_validate(cfg)
        engine = None
        if pool.engine is not None:
            from mnemoray.llm.registry import build_engine

            engine = build_engine(pool.engine)
        self.scorer = RewardScorer(pool.reward, in_flight=pool.in_flight_per_actor, timeout_s=pool.timeout_s,
                                   max_retries=pool.max_retries, rate_limit_per_s=pool.rate_limit_per_s,
                                   engine=engine, judge_retries=pool.judge_retries)

    def score(self, items: Sequence[RewardItem]) -> list[RewardResult]:
        return self.scorer.score(items)

    def stats(self) -> dict[str, int]:
        return asdict(self.scorer.stats)

    def node(self) -> str:
        return current_node()

    def pid(self) -> int:
        import os

        return os.getpid()

    @ray.method(max_task_retries=-1)
    def ready(self) -> bool:
        """Answers once the actor is up: Ray retries this call through a restart."""
        return True


@dataclass
class PoolStats:
    items: int = 0
    batches: int = 0
    resubmits: int = 0  # batches resent after their actor died
    lost_batches: int = 0  # batches given up after max_resubmits deaths (their items scored as failed)
    failed: int = 0  # items whose reward could not be computed


class RewardPool:
    def __init__(self, actors: Sequence[Any], batch_size: int, max_resubmits: int = 3, group: Any = None):
        if not actors:
            raise ValueError("a reward pool needs at least one actor")
        self.actors, self.batch_size, self.max_resubmits = list(actors), batch_size, max_resubmits
        self.group = group  # the placement group the actors live in, released by close()
        self.stats = PoolStats()
        self._restarting: set[int] = set()  # actor slots whose last batch failed: wait for them first

    @classmethod
    def from_config(cls, cfg: RewardPoolConfig) -> RewardPool:
        group = reserve(cfg.num_actors, bundle(cfg.cpus_per_actor), cfg.placement, "mnemoray-reward")
        payload = cfg.model_dump(mode="json")
        actors = [RewardActor.options(num_cpus=cfg.cpus_per_actor, **in_bundle(group, i)).remote(payload)
                  for i in range(cfg.num_actors)]
        return cls(actors, batch_size=cfg.in_flight_per_actor, max_resubmits=cfg.max_resubmits, group=group)

    def score(self, items: Sequence[RewardItem]) -> dict[str, RewardResult]:
        """A result for every distinct item id (a repeated id is scored once)."""
        unique = list({item.id: item for item in items}.values())
        batches = [unique[i : i + self.batch_size] for i in range(0, len(unique), self.batch_size)]
        self.stats.items += len(unique)
        self.stats.batches += len(batches)
        results: dict[str, RewardResult] = {}
        deaths = [0] * len(batches)
        todo = list(range(len(batches)))
        running: dict[Any, tuple[int, int]] = {}  # ref -> (batch, actor slot)
        busy = [0] * len(self.actors)
        while todo or running:
            # one batch per actor at a time (it runs in_flight_per_actor calls at once), so an
            # actor's death is charged to the batch that caused it, not to one queued behind it
            while todo and 0 in busy:
                slot = busy.index(0)
                if slot in self._restarting:
                    ray.get(self.actors[slot].ready.remote())  # back after its restart
                    self._restarting.discard(slot)
                b = todo.pop(0)
                running[self.actors[slot].score.remote(batches[b])] = (b, slot)
                busy[slot] += 1
            (ref,), _ = ray.wait(list(running), num_returns=1)
            b, slot = running.pop(ref)
            busy[slot] -= 1
            try:
                scored = ray.get(ref)
            except RayActorError as err:
                self._restarting.add(slot)
                deaths[b] += 1
                if deaths[b] <= self.max_resubmits:
                    self.stats.resubmits += 1
                    todo.append(b)
                    continue
                self.stats.lost_batches += 1
                scored = [failure("reward actor", f"item {item.id}: the actor died {deaths[b]} times "
                                  f"scoring its batch ({type(err).__name__})") for item in batches[b]]
            for item, result in zip(batches[b], scored, strict=True):
                results[item.id] = result
        self.stats.failed += sum(r.failed for r in results.values())
        return results

    def actor_stats(self) -> list[dict[str, int]]:
        return ray.get([a.stats.remote() for a in self.actors])

    def nodes(self) -> list[str]:
        return ray.get([a.node.remote() for a in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        release(self.group)
        self.group = None


__all__ = ["PoolStats", "RewardActor", "RewardPool"]
