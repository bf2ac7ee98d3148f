"""Scored LLM-judge calls: repeated runs with distinct seeds, clipping, failure accounting.

Plain Python shared by `mnemoray eval roleplay` and `mnemoray eval realmem-judge`.

A judge call scores one item on one or more dimensions, each a number on a fixed scale
(role-play: 0–5; RealMem QA: 0–3, helpfulness: 0–2, memory recall: 0–1). Each item is
judged `runs` times with distinct seeds. Per run and dimension a call either yields a
score or a recorded failure (engine error, unparsable or invalid JSON after retries,
a missing or non-numeric value); nothing is dropped and nothing becomes 0 by default.
A number outside the scale (an endpoint that ignored the schema) is clipped into it and
counted as clipped. An item's score on a dimension is the mean of its successful runs;
the overall figure is the mean over items that got at least one successful run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mnemoray.llm.types import ChatRequest, ChatResult


@dataclass(frozen=True)
class Dimension:
    name: str
    low: float
    high: float

    def clip(self, value: float) -> tuple[float, bool]:
        """The value moved into [low, high], and whether it had to be moved."""
        clipped = min(max(float(value), self.low), self.high)
        return clipped, clipped != float(value)


@dataclass(frozen=True)
class JudgeSettings:
    """What every judged evaluation sets (mirrors `config._JudgedEvalBase`); each adds its own budgets."""

    k: int = 10
    max_queries: int | None = None
    judge_runs: int = 1
    judge_seed: int = 0
    judge_temperature: float = 0.0
    reason_chars: int = 300
    memory_chars: int = 4000
    judge_tokens: int = 384
    max_retries: int = 2


def failure_record(result: ChatResult, kind: str | None = None, error: str | None = None) -> dict[str, Any]:
    """Why a call gave no usable value, with its raw output kept for inspection."""
    return {"kind": kind or result.error_kind or "error", "error": error or result.error, "raw": result.text[:2000]}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def score_run(result: ChatResult, dims: Sequence[Dimension],
              extract: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """One judge call's outcome: {"scores": {dim: value|None}, "clipped": [dims], "failures": {dim: record}}.

    `extract` maps the parsed output to {dimension: raw value}; it may raise ValueError
    (e.g. a list of verdicts of the wrong length), which fails every dimension of the call.
    """
    scores: dict[str, float | None] = {d.name: None for d in dims}
    failures: dict[str, dict[str, Any]] = {}
    clipped: list[str] = []
    parsed = result.parsed if result.ok else None
    if hasattr(parsed, "model_dump"):
        parsed = parsed.model_dump()
    if not result.ok or parsed is None:
        rec = failure_record(result) if not result.ok else failure_record(result, "schema", "no parsed output")
        return {"scores": scores, "clipped": clipped, "failures": {d.name: rec for d in dims}}
    try:
        values = extract(parsed) if extract else dict(parsed)
    except (ValueError, TypeError, KeyError) as err:
        rec = failure_record(result, "schema", str(err))
        return {"scores": scores, "clipped": clipped, "failures": {d.name: rec for d in dims}}
    for d in dims:
        number = _number(values.get(d.name))
        if number is None:
            failures[d.name] = failure_record(result, "schema", f"'{d.name}' is not a number: {values.get(d.name)!r}")
            continue
        scores[d.name], moved = d.clip(number)
        if moved:
            clipped.append(d.name)
    return {"scores": scores, "clipped": clipped, "failures": failures}


def seeded_runs(request: ChatRequest, runs: int, seed: int, temperature: float | None = None) -> list[ChatRequest]:
    """`runs` copies of a judge request with seeds seed, seed+1, ... (distinct cache keys too)."""
    params = request.params if temperature is None else request.params.model_copy(update={"temperature": temperature})
    return [ChatRequest(messages=request.messages, params=params, seed=seed + r, json_schema=request.json_schema,
                        metadata={**request.metadata, "run": r}) for r in range(runs)]


def combine_runs(runs: list[dict[str, Any]], dims: Sequence[Dimension]) -> dict[str, Any]:
    """An item's figures from its runs: per dimension the mean of the successful runs."""
    out: dict[str, Any] = {}
    for d in dims:
        vals = [r["scores"][d.name] for r in runs if r["scores"].get(d.name) is not None]
        out[d.name] = sum(vals) / len(vals) if vals else None
        out[f"{d.name}_n_scored"] = len(vals)
        out[f"{d.name}_n_failed"] = len(runs) - len(vals)
    return out


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def summarize_dimensions(rows: list[dict[str, Any]], dims: Sequence[Dimension], runs_key: str = "judge_runs",
                         score_key: str = "scores") -> dict[str, dict[str, Any]]:
    """Per dimension: mean over items, item counts and judge-run counts (scored/failed/clipped).

    n_scored + n_failed + n_not_asked = judge runs recorded; a run is "not asked" for a
    dimension that its call does not cover (e.g. no gold memory to check recall against).

    `rows[i][score_key]` holds `combine_runs` output (None when the item was never judged);
    `rows[i][runs_key]` the per-run records of `score_run`.
    """
    out: dict[str, dict[str, Any]] = {}
    for d in dims:
        item_vals = [r[score_key][d.name] for r in rows if r.get(score_key) and r[score_key][d.name] is not None]
        calls = [run for r in rows for run in (r.get(runs_key) or [])]
        scored = sum(run["scores"].get(d.name) is not None for run in calls)
        failed = sum(d.name in run["failures"] for run in calls)
        kinds: dict[str, int] = defaultdict(int)
        for run in calls:
            if d.name in run["failures"]:
                kinds[run["failures"][d.name]["kind"]] += 1
        out[d.name] = {
            "mean": _mean(item_vals),
            "std": _std(item_vals),
            "scale": [d.low, d.high],
            "n_items": len(rows),
            "n_items_scored": len(item_vals),
            "n_items_unscored": len(rows) - len(item_vals),
            "n_scored": scored,
            "n_failed": failed,
            "n_not_asked": len(calls) - scored - failed,
            "n_clipped": sum(d.name in run["clipped"] for run in calls),
            "failure_kinds": dict(sorted(kinds.items())),
        }
    return out


def per_run_means(rows: list[dict[str, Any]], dims: Sequence[Dimension], runs: int,
                  runs_key: str = "judge_runs") -> list[dict[str, float | None]]:
    """Each run's own mean over the items it scored (to see judge variance across seeds)."""
    out = []
    for i in range(runs):
        got = [r[runs_key][i] for r in rows if len(r.get(runs_key) or []) > i]
        out.append({d.name: _mean(g["scores"][d.name] for g in got if g["scores"].get(d.name) is not None)
                    for d in dims})
    return out


def group_means(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], str], dims: Sequence[Dimension],
                score_key: str = "scores") -> dict[str, dict[str, Any]]:
    """Per group (persona, category): item count and the mean of each dimension."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    out = {}
    for g, rs in sorted(groups.items()):
        vals = {d.name: _mean(r[score_key][d.name] for r in rs if r.get(score_key) and r[score_key][d.name] is not None)
                for d in dims}
        out[g] = {"n": len(rs), **vals}
    return out
