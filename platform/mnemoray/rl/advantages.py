"""Group-relative advantages (GRPO) and dynamic sampling over groups of rollouts.

GRPO samples n rollouts per prompt and judges each rollout against its own group: the
advantage is the reward minus the group mean, optionally divided by the group standard
deviation (docs/ARCHITECTURE.md, "Metrics"). Dividing by the std (GRPO) rescales easy and hard prompts alike;
Dr.GRPO skips it (`scale="none"`) to avoid that difficulty bias.

The std is the UNBIASED sample std (Bessel's correction, n − 1), as `torch.std` and
common GRPO trainers compute it. A group whose rewards are all equal (within `atol`),
including a group of one rollout, carries no learning signal: its std is reported as 0
and its advantages are exactly 0 (never a rounding residue divided by eps). Such groups
are counted, and dynamic sampling (DAPO) can swap them for informative groups from a
pool of extra rollouts so the batch keeps its size.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Scale = Literal["std", "none"]
GroupIds = Sequence[Hashable] | torch.Tensor


def group_index(n: int, group_ids: GroupIds | None = None, group_size: int | None = None) -> torch.Tensor:
    """Each sample's group as 0..G-1, numbered in order of first appearance.

    Give exactly one of `group_ids` (a label per sample, e.g. the prompt id; groups need not be
    contiguous) or `group_size` (consecutive blocks of that size; it must divide n).
    """
    if (group_ids is None) == (group_size is None):
        raise ValueError("give exactly one of group_ids or group_size")
    if group_size is not None:
        if group_size < 1 or n % group_size:
            raise ValueError(f"group_size {group_size} does not divide the {n} samples into whole groups")
        return torch.arange(n) // group_size
    labels = group_ids.tolist() if isinstance(group_ids, torch.Tensor) else list(group_ids)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} group ids for {n} samples")
    numbers: dict[Hashable, int] = {}
    return torch.tensor([numbers.setdefault(label, len(numbers)) for label in labels], dtype=torch.long)


def as_rewards(rewards: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Rewards as a 1-D floating tensor (float tensors keep their dtype)."""
    out = torch.as_tensor(rewards)
    if not out.is_floating_point():
        out = out.to(torch.get_default_dtype())
    if out.dim() != 1:
        raise ValueError(f"rewards must be 1-D (one per rollout), got shape {tuple(out.shape)}")
    return out


def zero_variance_mask(rewards: torch.Tensor, index: torch.Tensor, atol: float = 0.0) -> torch.Tensor:
    """Per GROUP: True where max − min of the group's rewards ≤ atol (no learning signal)."""
    groups = int(index.max()) + 1 if index.numel() else 0
    high = torch.full((groups,), -torch.inf, dtype=rewards.dtype).scatter_reduce(0, index, rewards, "amax")
    low = torch.full((groups,), torch.inf, dtype=rewards.dtype).scatter_reduce(0, index, rewards, "amin")
    return (high - low) <= atol


def zero_variance_groups(rewards: Sequence[float] | torch.Tensor, group_ids: GroupIds | None = None,
                         group_size: int | None = None, atol: float = 0.0) -> list[int]:
    """Group numbers (order of first appearance, as `group_index`) whose rewards are all equal within atol."""
    values = as_rewards(rewards)
    index = group_index(len(values), group_ids, group_size)
    return torch.nonzero(zero_variance_mask(values, index, atol)).flatten().tolist()


@dataclass(frozen=True)
class GroupAdvantages:
    advantages: torch.Tensor  # [n] per rollout
    group_mean: torch.Tensor  # [n] the mean of each rollout's group
    group_std: torch.Tensor  # [n] the unbiased std of each rollout's group (0 for zero-variance groups)
    zero_variance_groups: int  # how many groups had all-equal rewards (their advantages are 0)
    groups: int  # how many groups there were


def group_advantages(rewards: Sequence[float] | torch.Tensor, group_ids: GroupIds | None = None,
                     group_size: int | None = None, scale: Scale = "std", eps: float = 1e-6,
                     atol: float = 0.0) -> GroupAdvantages:
    """A = r − mean(group); with scale="std" A = (r − mean) / (std_unbiased(group) + eps).

    scale="none" is Dr.GRPO's advantage. Zero-variance groups (all rewards equal within
    atol, or a single rollout) get A = 0 exactly.
    """
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', not {scale!r}")
    values = as_rewards(rewards)
    index = group_index(len(values), group_ids, group_size)
    groups = int(index.max()) + 1 if index.numel() else 0
    counts = torch.bincount(index, minlength=groups).to(values.dtype)
    means = torch.zeros(groups, dtype=values.dtype).index_add(0, index, values) / counts.clamp(min=1)
    deviation = values - means[index]
    squares = torch.zeros(groups, dtype=values.dtype).index_add(0, index, deviation**2)
    stds = (squares / (counts - 1).clamp(min=1)).sqrt()
    flat = zero_variance_mask(values, index, atol)
    stds = torch.where(flat, torch.zeros_like(stds), stds)
    advantages = deviation / (stds[index] + eps) if scale == "std" else deviation
    advantages = torch.where(flat[index], torch.zeros_like(advantages), advantages)
    return GroupAdvantages(advantages, means[index], stds[index], int(flat.sum()), groups)


@dataclass(frozen=True)
class Refill:
    """Which rollouts form the training batch after dropping zero-variance groups.

    Indices address `torch.cat([batch_rewards, pool_rewards])`: index ≥ len(batch) is pool
    rollout (index − len(batch)). Whole groups, batch groups first, then pool groups, each
    in their original order.
    """

    indices: list[int]
    groups: list[int]  # group numbers in the same concatenation (pool groups follow the batch's)
    dropped: int  # zero-variance groups of the batch left out
    refilled: int  # informative pool groups taken in
    shortfall: int  # groups still missing to reach the batch's group count (the pool ran out)


def drop_and_refill(batch_rewards: Sequence[float] | torch.Tensor, pool_rewards: Sequence[float] | torch.Tensor,
                    group_size: int, atol: float = 0.0) -> Refill:
    """Dynamic sampling: keep the batch's informative groups and top up from the pool's.

    The target is the batch's number of groups. Zero-variance pool groups are skipped too.
    When the pool runs out the batch keeps what there is (fewer groups, never a
    zero-variance group) and `shortfall` says how many groups are missing, so the caller
    can sample more or train on a smaller batch knowingly.
    """
    batch, pool = as_rewards(batch_rewards), as_rewards(pool_rewards)
    rewards = torch.cat([batch, pool.to(batch.dtype)])
    if len(batch) % group_size or len(pool) % group_size:
        raise ValueError(f"batch ({len(batch)}) and pool ({len(pool)}) must hold whole groups of {group_size}")
    target = len(batch) // group_size
    flat = zero_variance_mask(rewards, group_index(len(rewards), group_size=group_size), atol).tolist()
    kept = [g for g in range(target) if not flat[g]]
    taken = [g for g in range(target, len(flat)) if not flat[g]][: target - len(kept)]
    groups = kept + taken
    indices = [g * group_size + i for g in groups for i in range(group_size)]
    return Refill(indices, groups, dropped=target - len(kept), refilled=len(taken),
                  shortfall=target - len(groups))


__all__ = ["GroupAdvantages", "Refill", "as_rewards", "drop_and_refill", "group_advantages", "group_index",
           "zero_variance_groups", "zero_variance_mask"]
