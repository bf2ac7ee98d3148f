"""MemBuilder's length-penalised reward: r = task_r · (1 − λ·P_len), λ = 0.8 (docs/ARCHITECTURE.md, "Metrics").

Without a length term a memory model learns to copy the whole dialogue into memory (it
answers every QA). The penalty P_len ∈ [0, 1]:

- core memory (always in the prompt, so its absolute size matters): tokens ≈ chars / 4;
  P = 0 at ≤ 150 tokens, 1 at ≥ 400 tokens, linear in between.
- every other store: ρ = output length / expert length, both in the SAME unit; P = 0 for
  0.5 ≤ ρ ≤ 1.3, min(1, (ρ − 1.3) / 0.7) above, min(1, (0.5 − ρ) / 0.3) below (too
  short loses information just as too long wastes context).

A format failure (the rollout's output could not be parsed or applied) gets r = 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mnemoray.rewards.qa import qa_task_reward
from mnemoray.rewards.scoring import as_score

LENGTH_LAMBDA = 0.8
CHARS_PER_TOKEN = 4.0
CORE_TYPE = "core"
CORE_FREE_TOKENS = 150.0  # no penalty up to here
CORE_FULL_TOKENS = 400.0  # full penalty from here
RHO_LOW, RHO_HIGH = 0.5, 1.3  # the tolerated band of output / expert length
RHO_HIGH_SPAN, RHO_LOW_SPAN = 0.7, 0.3  # how far outside the band the penalty reaches 1


def approx_tokens(text: str) -> float:
    """Token count estimated as chars / 4 (no tokenizer needed inside a reward)."""
    return len(text) / CHARS_PER_TOKEN


def core_penalty(tokens: float) -> float:
    """P_len of a core memory of `tokens` tokens."""
    if tokens <= CORE_FREE_TOKENS:
        return 0.0
    if tokens >= CORE_FULL_TOKENS:
        return 1.0
    return (tokens - CORE_FREE_TOKENS) / (CORE_FULL_TOKENS - CORE_FREE_TOKENS)


def ratio_penalty(rho: float) -> float:
    """P_len of another store at ρ = output length / expert length."""
    if rho > RHO_HIGH:
        return min(1.0, (rho - RHO_HIGH) / RHO_HIGH_SPAN)
    if rho < RHO_LOW:
        return min(1.0, (RHO_LOW - rho) / RHO_LOW_SPAN)
    return 0.0


def relative_penalty(output_length: float, expert_length: float) -> float:
    """ratio_penalty(output / expert); both lengths in the same unit, the expert's > 0."""
    if expert_length <= 0:
        raise ValueError(f"expert length must be > 0 to compare against, got {expert_length}")
    return ratio_penalty(output_length / expert_length)


def penalized_reward(task_reward: float, penalty: float, lam: float = LENGTH_LAMBDA, format_ok: bool = True) -> float:
    """task_r · (1 − λ·P_len), or 0 on a format failure."""
    if not 0.0 <= penalty <= 1.0:
        raise ValueError(f"length penalty must be in [0, 1], got {penalty}")
    return task_reward * (1.0 - lam * penalty) if format_ok else 0.0


def expert_length_of(ground_truth: Any, info: Mapping[str, Any]) -> float:
    if "expert_length" in info:
        return as_score(info["expert_length"])
    if isinstance(ground_truth, str) and ground_truth:
        return float(len(ground_truth))
    raise ValueError("no expert length: give extra_info['expert_length'] (chars) or the expert's text as ground_truth")


def task_reward_of(info: Mapping[str, Any]) -> float:
    if "task_reward" in info:
        return as_score(info["task_reward"])
    if "judgements" in info:
        return qa_task_reward(info["judgements"])
    raise ValueError("no task reward: give extra_info['task_reward'] or extra_info['judgements']")


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """verl signature. `solution_str` is the memory text the rollout wrote for one store.

    extra_info: "memory_type" (required; "core" uses the token rule, anything else the ratio
    rule), "task_reward" (a number) or "judgements" (QA verdicts, task_r = correct / total),
    "expert_length" in chars (else len(ground_truth) when ground_truth is the expert's text),
    "format_ok" (default True) and "length_lambda" (default 0.8). Missing inputs raise
    ValueError (`call_reward` turns that into a counted failure).
    """
    info = dict(extra_info or {})
    memory_type = info.get("memory_type")
    if not isinstance(memory_type, str) or not memory_type:
        raise ValueError("extra_info['memory_type'] must name the memory store (e.g. 'core', 'episodic')")
    lam = as_score(info.get("length_lambda", LENGTH_LAMBDA))
    format_ok = bool(info.get("format_ok", True))
    out: dict[str, Any] = {"memory_type": memory_type, "format_ok": format_ok}
    if not format_ok:
        return {"score": 0.0, **out}
    task = task_reward_of(info)
    if memory_type == CORE_TYPE:
        out["tokens"] = approx_tokens(solution_str)
        penalty = core_penalty(out["tokens"])
    else:
        expert = expert_length_of(ground_truth, info)
        out["rho"] = len(solution_str) / expert if expert > 0 else None
        penalty = relative_penalty(len(solution_str), expert)
    return {"score": penalized_reward(task, penalty, lam), "task_reward": task, "length_penalty": penalty, **out}


__all__ = ["CHARS_PER_TOKEN", "CORE_FREE_TOKENS", "CORE_FULL_TOKENS", "CORE_TYPE", "LENGTH_LAMBDA", "RHO_HIGH",
           "RHO_LOW", "approx_tokens", "compute_score", "core_penalty", "penalized_reward", "ratio_penalty",
           "relative_penalty"]
