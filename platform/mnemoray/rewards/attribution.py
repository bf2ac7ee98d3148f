"""ADRPO attribution weights: boost the samples of the memory type that served the answers.

One QA reward is shared by all memory stores a rollout built, so a store that did the
work and one that did not get the same credit. MemBuilder's ADRPO counts, while scoring
the reward QA, which retrieved items (by memory type) served correct answers; the type
with the largest count over the batch is the dominant one, and its samples get weight α
(default 4) while the others keep 1. The weight multiplies the advantage in both clip
branches (`mnemoray.rl.losses.policy_loss(weights=...)`).

Conventions:
- Types are free strings; `core_type` ("core") is never boosted unless `boost_core`
  (MemBuilder never boosts core: it is always in the prompt, so it is always "used").
- A tie for the largest count means no single dominant type: nobody is boosted (a fixed
  preference order would bias training toward one store).
- No counts at all (or only core counts without boost_core): all weights are 1.
- A sample belongs to the dominant type when its `sample_types` entry names it (a
  rollout that wrote that store); without `sample_types`, when its own count for the
  dominant type is positive (its items of that type served correct answers).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ATTRIBUTION_ALPHA = 4.0
CORE_TYPE = "core"


@dataclass(frozen=True)
class Attribution:
    weights: list[float]  # one per sample: alpha for the dominant type's samples, else 1.0
    totals: dict[str, int]  # summed counts per type over the batch, core included (for logging)
    dominant: str | None  # the boosted type, None when nobody is boosted


def total_counts(counts: Sequence[Mapping[str, int]]) -> dict[str, int]:
    """Per type, the sum over samples (types in order of first appearance); counts must be ints ≥ 0."""
    totals: dict[str, int] = {}
    for i, sample in enumerate(counts):
        for kind, count in sample.items():
            if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
                raise ValueError(f"sample {i}: count of {kind!r} must be an integer >= 0, got {count!r}")
            totals[str(kind)] = totals.get(str(kind), 0) + int(count)
    return totals


def dominant_type(totals: Mapping[str, int], boost_core: bool = False, core_type: str = CORE_TYPE) -> str | None:
    """The type with the single largest positive total (core only if boost_core); None on a tie or no counts."""
    candidates = {kind: n for kind, n in totals.items() if n > 0 and (boost_core or kind != core_type)}
    if not candidates:
        return None
    top = max(candidates.values())
    leaders = [kind for kind, n in candidates.items() if n == top]
    return leaders[0] if len(leaders) == 1 else None


def attribution_weights(counts: Sequence[Mapping[str, int]], sample_types: Sequence[str] | None = None,
                        alpha: float = ATTRIBUTION_ALPHA, boost_core: bool = False,
                        core_type: str = CORE_TYPE) -> Attribution:
    """Per-sample ADRPO weights for one batch/step (see the module docstring for the rules)."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if sample_types is not None and len(sample_types) != len(counts):
        raise ValueError(f"{len(sample_types)} sample types for {len(counts)} samples")
    totals = total_counts(counts)
    dominant = dominant_type(totals, boost_core, core_type)
    if dominant is None:
        return Attribution([1.0] * len(counts), totals, None)
    if sample_types is not None:
        members = [kind == dominant for kind in sample_types]
    else:
        members = [any(str(kind) == dominant and n > 0 for kind, n in sample.items()) for sample in counts]
    return Attribution([float(alpha) if member else 1.0 for member in members], totals, dominant)


__all__ = ["ATTRIBUTION_ALPHA", "Attribution", "CORE_TYPE", "attribution_weights", "dominant_type", "total_counts"]
