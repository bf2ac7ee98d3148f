"""One GRPO update on one policy worker: its share of a rollout batch, epochs × minibatches.

Plain torch over anything that looks like a DeepSpeed engine (`engine(...)` forward,
`engine.backward(loss)`, `engine.step()`), so the update is tested in one process and run
unchanged by each Ray Train worker. Every minibatch is `micro_batches` forward passes that
DeepSpeed accumulates into one optimizer step (its `gradient_accumulation_steps`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mnemoray.rl.losses import GRPOLossConfig, grpo_loss
from mnemoray.rl.minibatches import epoch_permutation
from mnemoray.rl.sequences import Rollout, TokenBatch, pack, token_logprobs


@dataclass(frozen=True)
class UpdatePlan:
    loss: GRPOLossConfig = field(default_factory=GRPOLossConfig)
    entropy_coef: float = 0.0
    epochs: int = 1
    minibatches: int = 1
    micro_batch_size: int = 8


class TorchEngine:
    """A model and a torch optimizer behind the DeepSpeed-engine calls `policy_update` makes
    (one process, no DeepSpeed): for single-process runs, benchmarks and unit tests."""

    def __init__(self, model: Any, optimizer: Any, grad_accum: int = 1, grad_clip: float | None = 1.0):
        self.module, self.optimizer, self.grad_accum, self.grad_clip = model, optimizer, grad_accum, grad_clip
        self._micro = 0

    def __call__(self, **inputs: Any) -> Any:
        return self.module(**inputs)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def eval(self) -> None:
        self.module.eval()

    def train(self) -> None:
        self.module.train()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> None:
        self._micro += 1
        if self._micro % self.grad_accum:
            return
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def chunks(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


def select(batch: TokenBatch, rows: Sequence[int]) -> TokenBatch:
    """The given rows, trimmed to the longest one (less padding in each forward pass)."""
    index = torch.tensor(list(rows), dtype=torch.long, device=batch.input_ids.device)
    width = int(batch.attention_mask[index].sum(dim=1).max())
    extras = {k: v[index][..., : width - 1] if v.dim() == 2 else v[index] for k, v in batch.extras.items()}
    return TokenBatch(batch.input_ids[index, :width], batch.attention_mask[index, :width],
                      batch.response_mask[index, : width - 1], extras)


def worker_batch(rollouts: Sequence[Rollout], advantages: Sequence[float], weights: Sequence[float] | None,
                 pad_id: int) -> TokenBatch:
    batch = pack(rollouts, pad_id)
    batch.extras["advantages"] = torch.tensor(list(advantages), dtype=torch.float32)
    batch.extras["weights"] = torch.tensor(list(weights) if weights is not None else [1.0] * len(rollouts),
                                           dtype=torch.float32)
    return batch


@torch.no_grad()
def score(model: Any, batch: TokenBatch, micro_batch_size: int) -> torch.Tensor:
    """Per-position log-probs [B, L-1] of the batch under `model`, micro-batch by micro-batch."""
    out = torch.zeros(batch.response_mask.shape, dtype=torch.float32, device=batch.response_mask.device)
    for rows in chunks(range(len(batch)), micro_batch_size):
        part = select(batch, rows)
        logp, _ = token_logprobs(model, part)
        out[rows, : logp.shape[1]] = logp.float()
    return out


def policy_update(engine: Any, batch: TokenBatch, plan: UpdatePlan, seed: int) -> dict[str, float]:
    """Epochs × minibatches optimizer steps on this worker's batch (extras: advantages,
    weights, old_logp and, with a reference, ref_logp). Returns token-weighted metrics.

    Without old_logp the update must be on-policy (one epoch, one minibatch): the policy's
    own detached log-probs stand in, saving a forward pass (the ratio is 1, the gradient
    the same)."""
    n = len(batch)
    if "old_logp" not in batch.extras and plan.epochs * plan.minibatches > 1:
        raise ValueError("old_logp is needed for more than one optimizer step per rollout batch")
    if n % plan.minibatches:
        raise ValueError(f"{n} samples do not split into {plan.minibatches} minibatches")
    per_minibatch = n // plan.minibatches
    totals: dict[str, float] = {}
    weight_sum = 0.0
    steps = 0
    grad_norms: list[float] = []
    for epoch in range(plan.epochs):
        order = epoch_permutation(n, seed, epoch)
        for minibatch in chunks(order, per_minibatch):
            for rows in chunks(minibatch, plan.micro_batch_size):
                part = select(batch, rows)
                logp, logits = token_logprobs(engine, part, with_logits=True)
                old_logp = part.extras.get("old_logp")
                if old_logp is None:  # on-policy (one pass, one optimizer step): the ratio is exactly 1
                    old_logp = logp.detach()
                result = grpo_loss(logp, old_logp, part.extras["advantages"], part.response_mask,
                                   plan.loss, ref_logp=part.extras.get("ref_logp"),
                                   weights=part.extras["weights"], logits=logits)
                loss = result.loss
                if plan.entropy_coef:
                    from mnemoray.rl.losses import masked_entropy

                    loss = loss - plan.entropy_coef * masked_entropy(logits, part.response_mask)
                engine.backward(loss)
                engine.step()
                tokens = float(part.response_mask.sum())
                weight_sum += tokens
                for key, value in result.metrics.items():
                    if isinstance(value, float) and math.isfinite(value) and not key.startswith("ratio_m"):
                        totals[key] = totals.get(key, 0.0) + value * tokens
            steps += 1
            norm = getattr(engine, "get_global_grad_norm", lambda: None)()
            if norm is not None and math.isfinite(float(norm)):
                grad_norms.append(float(norm))
    metrics = {k: v / weight_sum for k, v in totals.items()} if weight_sum else {}
    metrics["optimizer_steps"] = float(steps)
    if grad_norms:
        metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
    metrics["tokens"] = weight_sum
    return metrics


__all__ = ["TorchEngine", "UpdatePlan", "chunks", "policy_update", "score", "select", "worker_batch"]
