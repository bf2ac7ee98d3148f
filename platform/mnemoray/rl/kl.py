"""Per-token estimators of KL(π ‖ π_ref) from log-probs of tokens sampled from π.

The KL penalty keeps the policy π near a frozen reference π_ref (docs/ARCHITECTURE.md, "Metrics"). With
log_ratio = logp − ref_logp (policy MINUS reference) per sampled token:

- k1 = log_ratio: unbiased but can be negative per token (positive when the policy
  likes the token more than the reference does).
- k2 = 0.5 · log_ratio²: ≥ 0, biased, low variance.
- k3 = exp(−log_ratio) − (−log_ratio) − 1 = exp(ref − logp) − (ref − logp) − 1:
  ≥ 0, unbiased, low variance (Schulman's estimator; the GRPO default).

All three are 0 where logp == ref_logp. The log ratio is clamped to ±20 before exp so a
token the reference finds impossible cannot overflow the loss.
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")
LOG_RATIO_LIMIT = 20.0


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator = "k3",
                coef: float = 1.0) -> torch.Tensor:
    """coef × the per-token estimate of KL(π ‖ π_ref) (same shape as logp)."""
    log_ratio = (logp - ref_logp).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    if estimator == "k1":
        value = log_ratio
    elif estimator == "k2":
        value = 0.5 * log_ratio**2
    elif estimator == "k3":
        value = torch.exp(-log_ratio) + log_ratio - 1.0
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {list(KL_ESTIMATORS)}")
    return coef * value


__all__ = ["KLEstimator", "KL_ESTIMATORS", "LOG_RATIO_LIMIT", "kl_estimate"]
