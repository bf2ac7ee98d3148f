"""Rollouts as token sequences, and the per-token log-probs a policy gives them.

The loss compares log-probs of exactly the tokens the rollout engine sampled, so a rollout
keeps its token ids (text is only for the reward). A batch is prompt + response per row,
right-padded; position t of the log-prob tensor scores token t + 1, and `response_mask`
marks the positions that score response tokens, which is where every RL term lives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Rollout:
    """One sampled response to one prompt."""

    prompt_id: str
    sample: int  # index within the prompt's group
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    text: str
    finished: bool  # ended with an end-of-sequence token (False: cut at max_new_tokens)

    @property
    def id(self) -> str:
        return f"{self.prompt_id}/{self.sample}"


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, L] prompt + response, right-padded
    attention_mask: torch.Tensor  # [B, L]
    response_mask: torch.Tensor  # [B, L-1] 1 where position t predicts a response token
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: Any) -> TokenBatch:
        """The same batch on `device` (the policy worker's GPU; a no-op where it already is)."""
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device),
                          {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.extras.items()})


def pack(rollouts: Sequence[Rollout], pad_id: int) -> TokenBatch:
    """Right-padded prompt + response tensors with the response positions marked."""
    if not rollouts:
        raise ValueError("cannot pack an empty list of rollouts")
    width = max(len(r.prompt_ids) + len(r.response_ids) for r in rollouts)
    ids = torch.full((len(rollouts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rollouts), width), dtype=torch.long)
    response = torch.zeros((len(rollouts), width - 1), dtype=torch.float32)
    for row, r in enumerate(rollouts):
        tokens = list(r.prompt_ids) + list(r.response_ids)
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention[row, : len(tokens)] = 1
        start = len(r.prompt_ids) - 1  # position that predicts the first response token
        response[row, start : start + len(r.response_ids)] = 1.0
    return TokenBatch(ids, attention, response)


def token_logprobs(model: Any, batch: TokenBatch,
                   with_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(token t+1 | tokens ≤ t) for every position [B, L-1]; the logits too when asked
    (for the entropy metric). Runs with or without grad, as the caller's context says."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    logits = out.logits[:, :-1, :].float()
    targets = batch.input_ids[:, 1:]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, (logits if with_logits else None)


def response_lengths(rollouts: Sequence[Rollout]) -> list[int]:
    return [len(r.response_ids) for r in rollouts]


__all__ = ["Rollout", "TokenBatch", "pack", "response_lengths", "token_logprobs"]
