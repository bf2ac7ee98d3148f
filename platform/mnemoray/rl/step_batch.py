"""Which rollouts a GRPO step trains on, and with what per-sample weight (plain Python).

- Dynamic sampling (DAPO): a group whose n rewards are all equal has zero advantage and
  teaches nothing. The controller samples extra groups and swaps them in
  (`mnemoray.rl.advantages.drop_and_refill`); `keep_batch_size` then tops the batch up
  with the dropped groups when the extra groups ran out, so every step trains on the same
  number of samples (the policy workers' split and DeepSpeed's accumulation stay fixed).
- ADRPO attribution: rewards that answer QA from a built memory report, per sample, how
  many retrieved items of each memory type served correct answers (a dict under
  `counts_key` in the reward's extras); the dominant type's samples get weight α
  (`mnemoray.rewards.attribution`). The weight multiplies the advantage in both clip branches.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mnemoray.rewards.attribution import Attribution, attribution_weights
from mnemoray.rl.advantages import Refill


def keep_batch_size(refill: Refill, batch_groups: int, group_size: int) -> list[int]:
    """Refill's indices, plus as many dropped batch groups as it is short (in batch order)."""
    kept = set(refill.groups)
    dropped = [g for g in range(batch_groups) if g not in kept]
    groups = refill.groups + dropped[: refill.shortfall]
    return [g * group_size + i for g in groups for i in range(group_size)]


@dataclass(frozen=True)
class AttributionSettings:
    alpha: float = 4.0
    boost_core: bool = False
    counts_key: str = "attribution_counts"  # in each reward result's extras: {memory type: count}
    type_key: str = "memory_type"  # in each prompt's extra_info: the store the rollout writes


def valid_counts(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0 for n in value.values())


def sample_attribution(extras: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]],
                       settings: AttributionSettings) -> tuple[Attribution, int]:
    """ADRPO weights of one step's samples from their reward extras and prompt extra_info,
    and how many samples had invalid counts (counted as none: a reward bug must not stop a step).

    A sample without counts counts nothing; sample types are used when every prompt names one.
    """
    counts, invalid = [], 0
    for extra in extras:
        value = extra.get(settings.counts_key)
        if value is not None and not valid_counts(value):
            invalid += 1
            value = None
        counts.append(value or {})
    types = [info.get(settings.type_key) for info in infos]
    sample_types = [str(t) for t in types] if types and all(t is not None for t in types) else None
    return attribution_weights(counts, sample_types, alpha=settings.alpha, boost_core=settings.boost_core), invalid


__all__ = ["AttributionSettings", "keep_batch_size", "sample_attribution"]
