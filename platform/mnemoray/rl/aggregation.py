"""Masked reductions and the ways a per-token loss becomes one number.

Responses in a batch have different lengths, padded to a common width; the response
mask (1 = a generated token that is trained on, 0 = padding or prompt) says which
tokens count. How the valid tokens are averaged changes what a long response weighs:

- "token-mean": mean over all valid tokens of the batch (every token weighs the same;
  DAPO's choice).
- "seq-mean-token-mean": each sequence's token mean, then the mean over sequences that
  have at least one valid token (every response weighs the same; original GRPO).
- "seq-mean-token-sum-norm": each sequence's token SUM divided by a constant `norm`
  (default: the padded width, i.e. the max response length), then the mean over ALL
  sequences (Dr.GRPO: no length normalisation, so no bias toward long wrong answers).

An empty mask gives 0 (still connected to the graph, so backward() works).
"""

from __future__ import annotations

from typing import Literal

import torch

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
AGG_MODES: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `values` where `mask` is 1 (mask broadcast to values)."""
    masked = values * mask.to(values.dtype)
    return masked.sum() if dim is None else masked.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is 1; 0 where nothing is valid (instead of NaN)."""
    weights = mask.to(values.dtype).expand_as(values)
    total = masked_sum(values, weights, dim)
    count = weights.sum() if dim is None else weights.sum(dim=dim)
    return total / count.clamp(min=1)


def aggregate_loss(loss: torch.Tensor, mask: torch.Tensor, mode: AggMode = "token-mean",
                   norm: float | None = None) -> torch.Tensor:
    """Reduce a [batch, tokens] loss over `mask` by `mode` (see the module docstring).

    `norm` is only used by "seq-mean-token-sum-norm"; None means the padded width `loss.shape[-1]`.
    """
    if loss.dim() != 2 or loss.shape != mask.shape:
        raise ValueError(f"loss {tuple(loss.shape)} and mask {tuple(mask.shape)} must both be [batch, tokens]")
    weights = mask.to(loss.dtype)
    if mode == "token-mean":
        return masked_mean(loss, weights)
    if mode == "seq-mean-token-mean":
        lengths = weights.sum(dim=-1)
        per_seq = masked_sum(loss, weights, dim=-1) / lengths.clamp(min=1)
        present = (lengths > 0).to(loss.dtype)
        return (per_seq * present).sum() / present.sum().clamp(min=1)
    if mode == "seq-mean-token-sum-norm":
        scale = float(loss.shape[-1] if norm is None else norm)
        if scale <= 0:
            raise ValueError(f"norm must be positive, got {scale}")
        return (masked_sum(loss, weights, dim=-1) / scale).mean() if loss.shape[0] else loss.sum()
    raise ValueError(f"unknown aggregation {mode!r}; choose one of {list(AGG_MODES)}")


__all__ = ["AGG_MODES", "AggMode", "aggregate_loss", "masked_mean", "masked_sum"]
