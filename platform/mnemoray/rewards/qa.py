"""MemBuilder's dense QA task reward and the mix of its synthetic questions (docs/ARCHITECTURE.md, "Metrics").

A trajectory-level reward (did the final memory answer the benchmark?) is sparse; instead
each session gets a few synthetic QA pairs, the rollout's memory ops are applied to the
memory state before that session, each question is answered from the result and judged,
and task_r = correct / total. This module turns judged verdicts into the reward ("dense-qa",
verdicts judged upstream, e.g. under verl); `mnemoray.rewards.dense_qa` ("membuilder-qa")
does the whole loop inside GRPO's reward actors and `mnemoray.rewards.qa_synth` writes and
caches the questions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

QA_PER_SESSION = 5
QA_MIX: tuple[tuple[str, float], ...] = (("single-session", 0.5), ("multi-session", 0.3), ("temporal", 0.2))


def verdicts(judgements: Iterable[Any]) -> list[bool]:
    """Judged answers as bools (numpy bools from a Parquet `extra_info` accepted)."""
    if isinstance(judgements, (str, bytes, Mapping)) or not isinstance(judgements, Iterable):
        raise ValueError(f"judgements must be a list of bools, got {type(judgements).__name__}")
    values = list(judgements)
    bad = [i for i, v in enumerate(values) if not isinstance(v, (bool, np.bool_))]
    if bad:
        raise ValueError(f"judgements at positions {bad} are not bools (failed judge calls?)")
    return [bool(v) for v in values]


def qa_task_reward(judgements: Iterable[bool]) -> float:
    """correct / total over a session's judged answers.

    Zero questions is an error (there is nothing to reward), and so is a verdict that is not
    a bool (e.g. None for a failed judge call): a failed judgement is not a wrong answer.
    """
    values = verdicts(judgements)
    if not values:
        raise ValueError("no judged questions for this session: the QA reward is undefined")
    return sum(values) / len(values)


def qa_mix(n: int, shares: Sequence[tuple[str, float]] = QA_MIX) -> dict[str, int]:
    """Per-type question counts for n questions that sum to n, by largest remainder.

    Each type first gets floor(n · share); the questions left go one each to the types
    with the largest fractional parts, earlier types first on equal parts. Default mix:
    50% single-session, 30% multi-session, 20% temporal (n = 5 → 3/1/1).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    total = sum(share for _, share in shares)
    if not shares or total <= 0 or any(share < 0 for _, share in shares):
        raise ValueError(f"shares must be non-negative with a positive sum, got {list(shares)}")
    exact = [n * share / total for _, share in shares]
    counts = [math.floor(x + 1e-9) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return {name: count for (name, _), count in zip(shares, counts, strict=True)}


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """verl signature: task_r from extra_info["judgements"] (one bool per synthetic question)."""
    judgements = (extra_info or {}).get("judgements")
    if judgements is None:
        raise ValueError("extra_info['judgements'] (one bool per judged question) is required")
    values = verdicts(judgements)
    return {"score": qa_task_reward(values), "correct": sum(values), "total": len(values)}


__all__ = ["QA_MIX", "QA_PER_SESSION", "compute_score", "qa_mix", "qa_task_reward", "verdicts"]
