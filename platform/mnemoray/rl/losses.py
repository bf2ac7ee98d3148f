"""The GRPO / ADRPO policy loss: clipped log-prob ratio, KL to a reference, aggregation.

Per token, with ratio = exp(logp − old_logp) and Â = advantage × sample weight:

    loss = max(−Â·ratio, −Â·clip(ratio, 1 − ε_low, 1 + ε_high))

ε_high > ε_low is "clip-higher" (DAPO): low-probability tokens with a positive advantage
may grow further, which keeps exploration alive. Dual clip (Ye et al. 2020) bounds the
loss of a negative advantage by −c·Â (c > 1), so one stale token with a huge ratio cannot
dominate the update. The ADRPO sample weight multiplies the advantage before either
branch, hence scales the loss in both branches and in the dual-clip bound alike; since
weights must be ≥ 0, they never change which branch is taken.

Then `grpo_loss` adds kl_coef × KL(π ‖ π_ref) per token (see `mnemoray.rl.kl`) and reduces
over the response mask by an aggregation mode (see `mnemoray.rl.aggregation`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mnemoray.rl.aggregation import AGG_MODES, AggMode, aggregate_loss, masked_mean
from mnemoray.rl.kl import KL_ESTIMATORS, LOG_RATIO_LIMIT, KLEstimator, kl_estimate


def per_token(values: torch.Tensor | None, like: torch.Tensor, what: str) -> torch.Tensor | None:
    """A per-sequence [B] (or per-token [B, T]) tensor broadcast to `like`'s [B, T] shape."""
    if values is None:
        return None
    values = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    if values.dim() == 1:
        values = values.unsqueeze(-1)
    if values.shape[0] != like.shape[0] or values.dim() != 2:
        raise ValueError(f"{what} of shape {tuple(values.shape)} does not fit tokens of shape {tuple(like.shape)}")
    return values.expand_as(like)


@dataclass(frozen=True)
class PolicyLoss:
    per_token: torch.Tensor  # [B, T] loss per token (mask not applied yet)
    metrics: dict[str, float]


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                eps_low: float = 0.2, eps_high: float | None = None, dual_clip: float | None = None,
                weights: torch.Tensor | None = None) -> PolicyLoss:
    """The clipped ratio loss per token (module docstring), and its clipping metrics.

    Shapes: logp, old_logp, mask [B, T]; advantages and weights [B] or [B, T].
    `eps_high` None means eps_low (symmetric clip). Metrics are fractions of valid tokens:
    clip_frac_low (Â < 0 and ratio < 1 − ε_low: the lower bound is active), clip_frac_high
    (Â > 0 and ratio > 1 + ε_high), dual_clip_frac (Â < 0 and ratio > c), plus ratio_mean /
    ratio_min / ratio_max (NaN when no token is valid) and approx_kl = mean(ratio − 1 − log ratio)
    between the rollout policy and the current one.
    """
    high = eps_low if eps_high is None else eps_high
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    adv = per_token(advantages, logp, "advantages")
    weight = per_token(weights, logp, "weights")
    if weight is not None and bool((weight < 0).any()):
        raise ValueError("sample weights must be >= 0 (a negative weight would flip the advantage)")
    scaled = adv if weight is None else adv * weight
    log_ratio = (logp - old_logp).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    ratio = torch.exp(log_ratio)
    unclipped = -scaled * ratio
    clipped = -scaled * ratio.clamp(1.0 - eps_low, 1.0 + high)
    loss = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -scaled * dual_clip), loss)
    with torch.no_grad():
        valid = mask.to(torch.bool)
        r = ratio[valid]
        metrics = {
            "clip_frac_low": float(masked_mean(((ratio < 1.0 - eps_low) & (adv < 0)).to(logp.dtype), mask)),
            "clip_frac_high": float(masked_mean(((ratio > 1.0 + high) & (adv > 0)).to(logp.dtype), mask)),
            "dual_clip_frac": 0.0 if dual_clip is None else float(
                masked_mean(((ratio > dual_clip) & (adv < 0)).to(logp.dtype), mask)),
            "ratio_mean": float(r.mean()) if r.numel() else math.nan,
            "ratio_min": float(r.min()) if r.numel() else math.nan,
            "ratio_max": float(r.max()) if r.numel() else math.nan,
            "approx_kl": float(masked_mean(ratio - 1.0 - log_ratio, mask)),
        }
    return PolicyLoss(loss, metrics)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the next-token distribution at each position: [..., V] -> [...]."""
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def masked_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean token entropy over the valid tokens (logits [B, T, V], mask [B, T])."""
    return masked_mean(token_entropy(logits), mask)


@dataclass(frozen=True)
class GRPOLossConfig:
    eps_low: float = 0.2
    eps_high: float | None = None  # None: same as eps_low; larger: clip-higher
    dual_clip: float | None = None  # c > 1, or None for no dual clip
    kl_coef: float = 0.0  # ~0.001–0.02 with a reference; 0 for none
    kl_estimator: KLEstimator = "k3"
    agg: AggMode = "token-mean"
    norm: float | None = None  # "seq-mean-token-sum-norm" divisor; None: the padded width

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps_low < 1.0:
            raise ValueError(f"eps_low must be in [0, 1), got {self.eps_low}")
        if self.eps_high is not None and self.eps_high < 0:
            raise ValueError(f"eps_high must be >= 0, got {self.eps_high}")
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {self.dual_clip}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {list(KL_ESTIMATORS)}, got {self.kl_estimator!r}")
        if self.agg not in AGG_MODES:
            raise ValueError(f"agg must be one of {list(AGG_MODES)}, got {self.agg!r}")


@dataclass(frozen=True)
class GRPOLoss:
    loss: torch.Tensor  # scalar, differentiable
    metrics: dict[str, float]


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              config: GRPOLossConfig | None = None, *, ref_logp: torch.Tensor | None = None,
              weights: torch.Tensor | None = None, logits: torch.Tensor | None = None) -> GRPOLoss:
    """aggregate(policy loss + kl_coef · KL(π ‖ π_ref)) over `mask`, with its metrics.

    A positive kl_coef needs `ref_logp` (a silently missing penalty would be a bug); with
    `ref_logp` and kl_coef 0 the KL is still reported. Metrics: loss, pg_loss (aggregated
    policy part), kl (token mean of the unscaled estimate, when ref_logp is given), the
    policy metrics of `policy_loss`, and entropy (token mean) when `logits` are given.
    """
    cfg = config or GRPOLossConfig()
    if cfg.kl_coef > 0 and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp (the frozen reference's log-probs)")
    policy = policy_loss(logp, old_logp, advantages, mask, eps_low=cfg.eps_low, eps_high=cfg.eps_high,
                         dual_clip=cfg.dual_clip, weights=weights)
    total = policy.per_token
    metrics = dict(policy.metrics)
    if ref_logp is not None:
        kl = kl_estimate(logp, ref_logp, cfg.kl_estimator)
        metrics["kl"] = float(masked_mean(kl.detach(), mask))
        if cfg.kl_coef > 0:
            total = total + cfg.kl_coef * kl
    loss = aggregate_loss(total, mask, cfg.agg, cfg.norm)
    with torch.no_grad():
        metrics["pg_loss"] = float(aggregate_loss(policy.per_token, mask, cfg.agg, cfg.norm))
        metrics["loss"] = float(loss)
        if logits is not None:
            metrics["entropy"] = float(masked_entropy(logits, mask))
    return GRPOLoss(loss, metrics)


__all__ = ["GRPOLoss", "GRPOLossConfig", "PolicyLoss", "grpo_loss", "masked_entropy", "per_token", "policy_loss",
           "token_entropy"]
