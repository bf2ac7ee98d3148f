"""DualMem trajectories inside the GRPO loop: the collector the controller runs each step (plain Python).

With `environment.trajectories` set, environment.path is a dataset of histories (any
registered loader; RoleMemo by default). Each step takes `rollout.prompts_per_step`
histories and runs `rollout.n` trajectories of each (`dualmem.run_trajectory`: the policy
writes the memory its next chunk's prompt shows). All trajectories of the step advance in
lockstep (`rl.lockstep`): chunk by chunk, every pending prompt goes to the rollout engines
in one call. Then every (trajectory, role-play query) pair goes to the reward pool as one
`dualmem-roleplay` item (the top-k of that trajectory's final memory travel with it); a
trajectory's reward is the mean over its queries, its advantage is computed over the n
trajectories of its history and copied to each of its chunk steps, each step one sample.

Histories are cut to `max_chunks` chunk steps (and to the sessions before their first
query), which bounds the step's samples: the update is sized for that many.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mnemoray.config import MemoryConfig
from mnemoray.loaders import load_dataset
from mnemoray.loaders.errors import DatasetError
from mnemoray.memory.transcript import spoken_turns
from mnemoray.records import EvalSample, History
from mnemoray.rewards.roleplay import to_reward_item
from mnemoray.rewards.scoring import failure
from mnemoray.rl.collect import Generate, Score, StepBatch, reward_record, step_slots
from mnemoray.rl.environments.dualmem import (
    FRAMEWORK,
    RoleplayQuery,
    Trajectory,
    roleplay_items,
    run_trajectory,
    set_rewards,
    step_samples,
)
from mnemoray.rl.lockstep import Lockstep
from mnemoray.rl.rollout import PromptInput, SamplingSettings


@dataclass(frozen=True)
class TrajectorySource:
    """One history to run trajectories over, with the queries that judge their memories."""

    id: str
    history: History
    queries: tuple[RoleplayQuery, ...]


def clip_history(history: History, chunk_turns: int, max_chunks: int, visible_sessions: int | None = None) -> History:
    """The history cut to its first `max_chunks` chunks of `chunk_turns` spoken turns (and to
    its first `visible_sessions` sessions); empty sessions are dropped."""
    sessions = history.sessions if visible_sessions is None else history.sessions[:visible_sessions]
    kept, left = [], max_chunks
    for session in sessions:
        turns = spoken_turns(session)
        if not turns or left == 0:
            continue
        take = min(left, math.ceil(len(turns) / chunk_turns))
        kept.append(session.model_copy(update={"turns": turns[: take * chunk_turns]}))
        left -= take
    return history.model_copy(update={"sessions": kept})


def trajectory_source(sample: EvalSample, chunk_turns: int, max_chunks: int, max_queries: int, where: Path
                      ) -> TrajectorySource:
    """A dataset sample as a source; DatasetError (naming the file and history) if it has no
    queries or no dialogue before them."""
    queries = [q for q in sample.queries if q.text.strip()][:max_queries]
    hid = sample.history.id
    if not queries:
        raise DatasetError(where, f"history {hid}", "queries", "no queries to judge its memory with")
    visible = [q.visible_sessions for q in queries if q.visible_sessions is not None]
    history = clip_history(sample.history, chunk_turns, max_chunks, min(visible) if visible else None)
    if not history.sessions:
        raise DatasetError(where, f"history {hid}", "sessions", "no dialogue turns before its first query")
    return TrajectorySource(hid, history, tuple(RoleplayQuery(q.id, q.text) for q in queries))


def load_sources(env: Any) -> tuple[list[TrajectorySource], list[DatasetError]]:
    """The histories of `env.path` (an `EnvironmentConfig` with trajectories set) as sources."""
    t = env.trajectories
    samples, errors = load_dataset(t.dataset, env.path, skip_invalid=env.skip_invalid, limit=env.limit)
    sources = []
    for sample in samples:
        try:
            sources.append(trajectory_source(sample, t.chunk_turns, t.max_chunks, t.max_queries, Path(env.path)))
        except DatasetError as err:
            if not env.skip_invalid:
                raise
            errors.append(err)
    return sources, errors


class DualmemCollector:
    """The controller's collector for `environment.name: dualmem` with trajectories (rl.collect.Collector)."""

    load = staticmethod(load_sources)

    def __init__(self, cfg: Any, sources: Sequence[TrajectorySource], embedder: Any = None):
        t = cfg.environment.trajectories
        self.sources, self.k = list(sources), t.k
        self.per_step, self.n, self.seed = cfg.rollout.prompts_per_step, cfg.rollout.n, cfg.schedule.seed
        self.scale = "std" if cfg.algorithm.advantage_scale == "std" else "none"
        self.settings = SamplingSettings(n=1, max_new_tokens=cfg.rollout.max_new_tokens,
                                         temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p)
        self.memory = MemoryConfig(name=FRAMEWORK, dualmem={"chunk_turns": t.chunk_turns})
        if embedder is None:
            from mnemoray.index.embedder import Embedder

            embedder = Embedder()
        self.embedder = embedder

    def trajectories(self, slots: list[tuple[str, TrajectorySource]], generate: Generate,
                     seed: int) -> list[Trajectory]:
        """n trajectories per slot (slot-major), every chunk round sampled as one batch."""
        plan = [(key, src, i) for key, src in slots for i in range(self.n)]

        def sample(round_: int, batch: list[tuple[int, list[dict[str, str]]]]) -> list[Any]:
            inputs = [PromptInput(f"{plan[e][0]}#{plan[e][2]}.{round_}", tuple(m)) for e, m in batch]
            return generate(inputs, self.settings, seed + 7_919 * round_)

        def episode(key: str, src: TrajectorySource, index: int):
            history = src.history.model_copy(update={"id": key})  # the slot: n trajectories of it form a group
            return lambda policy: run_trajectory(history, policy, self.memory, self.embedder, index=index)

        return Lockstep(sample).run([episode(key, src, i) for key, src, i in plan])

    def collect(self, step: int, generate: Generate, score: Score) -> StepBatch:
        slots = step_slots(self.sources, step, self.per_step, self.seed)
        trajectories = self.trajectories(slots, generate, self.seed * 1_000_003 + step)
        queries = {key: src.queries for key, src in slots}
        asked = roleplay_items(trajectories, queries, self.k)
        items = [to_reward_item(f"{t.sample_id}#{t.index}/{item.query_id}", item) for t, item in asked]
        scored = score(items)
        results = [scored.get(it.id) or failure("dualmem", f"item {it.id}: no reward came back") for it in items]
        set_rewards(trajectories, [t for t, _ in asked], results)
        samples = step_samples(trajectories, self.scale)
        missing = [s.id for s in samples if s.rollout is None]
        if missing:
            raise RuntimeError(f"chunk steps without token ids (re-asked or skipped calls): {missing[:5]}")
        rollouts = [replace(s.rollout, prompt_id=s.id, sample=0) for s in samples]
        return StepBatch(rollouts, [s.advantage for s in samples], [1.0] * len(samples),
                         trajectory_record(trajectories, results), *group_stats(trajectories))


def group_stats(trajectories: Sequence[Trajectory]) -> tuple[int, int]:
    """(groups whose trajectories all got the same reward, groups)."""
    from mnemoray.rl.advantages import zero_variance_groups

    ids = [t.sample_id for t in trajectories]
    return len(zero_variance_groups([t.reward.score for t in trajectories], ids)), len(set(ids))


def trajectory_record(trajectories: Sequence[Trajectory], results: Sequence[Any]) -> dict[str, Any]:
    """reward_mean / std over trajectories (what is trained on), failed role-play results, the
    judge's components over the replies, and the trajectories' shape."""
    rewards = [t.reward.score for t in trajectories]
    components = {k: v for k, v in reward_record(results).items() if k.startswith("reward/")}
    steps = [len(t.steps) for t in trajectories]
    return {"reward_mean": statistics.fmean(rewards), "reward_std": statistics.pstdev(rewards),
            "reward_failed": sum(r.failed for r in results), **components,
            "reward/format_failed": sum(t.reward.extras["format_failures"] for t in trajectories) / max(1, sum(steps)),
            "trajectory/steps_mean": statistics.fmean(steps),
            "trajectory/memory_items_mean": statistics.fmean(len(t.memory) for t in trajectories),
            "trajectory/queries": len(results)}


__all__ = ["DualmemCollector", "TrajectorySource", "clip_history", "group_stats", "load_sources",
           "trajectory_record", "trajectory_source"]
