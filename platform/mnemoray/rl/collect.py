"""What one GRPO step trains on, as the controller hands it to the policy workers (plain Python).

The controller asks a collector for a `StepBatch`: token rollouts with their advantages
and sample weights, plus the step's reward record. The loop's default collector samples n
responses per single-turn prompt; an environment with multi-step trajectories registers
its own collector class (`EnvironmentSpec.trajectories`, e.g. dualmem's recurrent chunks,
where every chunk step is a sample and carries its trajectory's advantage). The loop only
calls `collect(step, generate, score)`, so both paths share sampling, rewards and update.

DeepSpeed accumulates a fixed number of micro-batches per optimizer step on every rank, so
a step with fewer samples than the config's `samples_per_step` (short trajectories) is
topped up by `padded` with empty rows: no response token, so no loss and no gradient.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mnemoray.rl.minibatches import epoch_permutation
from mnemoray.rl.rollout import PromptInput, SamplingSettings
from mnemoray.rl.sequences import Rollout

Generate = Callable[[list[PromptInput], SamplingSettings, int], list[Rollout]]  # (prompts, settings, seed)
Score = Callable[[list[Any]], dict[str, Any]]  # RewardItems -> {item id: RewardResult}


@dataclass
class StepBatch:
    rollouts: list[Rollout]
    advantages: list[float]
    weights: list[float]
    record: dict[str, Any] = field(default_factory=dict)  # reward_mean, reward_std, reward/<component>, ...
    zero_std_groups: int = 0
    groups: int = 0

    def __post_init__(self) -> None:
        if not len(self.rollouts) == len(self.advantages) == len(self.weights):
            raise ValueError(f"{len(self.rollouts)} rollouts, {len(self.advantages)} advantages and "
                             f"{len(self.weights)} weights: one each per sample")


class Collector(Protocol):
    def collect(self, step: int, generate: Generate, score: Score) -> StepBatch: ...


def step_slots(items: Sequence[Any], step: int, per_step: int, seed: int) -> list[tuple[str, Any]]:
    """The items (anything with an `id`) of a step (1-based): a seeded permutation per epoch,
    read as one stream, so a resumed run (also at an epoch boundary) sees the same ones.
    Each gets a slot key unique within the step (the same item may come twice)."""
    out = []
    for j in range(per_step):
        position = (step - 1) * per_step + j
        epoch, index = divmod(position, len(items))
        item = items[epoch_permutation(len(items), seed, epoch)[index]]
        out.append((f"{j}:{item.id}", item))
    return out


def reward_record(results: Sequence[Any]) -> dict[str, Any]:
    """reward_mean / std, failures, and the mean of every numeric extra (reward components)."""
    scores = [r.score for r in results]
    record: dict[str, Any] = {
        "reward_mean": statistics.fmean(scores) if scores else None,
        "reward_std": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
        "reward_failed": sum(r.failed for r in results),
    }
    components: dict[str, list[float]] = {}
    for r in results:
        for key, value in r.extras.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                components.setdefault(key, []).append(float(value))
    for key, values in sorted(components.items()):
        record[f"reward/{key}"] = statistics.fmean(values)
    return record


def padded(batch: StepBatch, size: int, pad_id: int) -> tuple[list[Rollout], list[float], list[float]]:
    """(rollouts, advantages, weights) topped up to `size` samples with empty rows (two pad
    tokens, no response: masked out of every loss term); more than `size` is an error."""
    missing = size - len(batch.rollouts)
    if missing < 0:
        raise ValueError(f"the step collected {len(batch.rollouts)} samples, more than the {size} the update "
                         "is sized for (rollout.prompts_per_step x rollout.n x trajectory steps)")
    pads = [Rollout("pad", i, (pad_id, pad_id), (), "", True) for i in range(missing)]
    return batch.rollouts + pads, batch.advantages + [0.0] * missing, batch.weights + [0.0] * missing


__all__ = ["Collector", "Generate", "Score", "StepBatch", "padded", "reward_record", "step_slots"]
