"""A toy reward that a tiny random model can learn: the share of target characters in its reply.

It exists so GRPO can be tried (and tested) on a laptop in minutes: the reward has a
smooth slope any policy can climb, so a rising curve shows that rollouts, rewards,
advantages and updates are wired correctly. Not a memory task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_TARGET = "e"


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """verl signature: share of non-space characters of the reply that are in ground_truth."""
    target = set(ground_truth) if isinstance(ground_truth, str) and ground_truth else set(DEFAULT_TARGET)
    chars = [c for c in solution_str if not c.isspace()]
    hits = sum(c in target for c in chars)
    return {"score": hits / len(chars) if chars else 0.0, "chars": len(chars)}
