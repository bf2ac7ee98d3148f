"""Role-play quality on RoleMemo-format data: respond in character from memory, judge 4 ways.

For each query (asked at its visible point) a responder LLM plays the history's persona
and answers from the persona profile plus the top-k retrieved memory. A judge LLM then
rates the reply 0–5 on information richness, logical quality, character consistency and
conversational attractiveness, seeing the gold fragments and insight the ideal reply
draws on. Each reply is judged `judge_runs` times with distinct seeds and the runs are
averaged (`mnemoray.eval.judging`); failed responses and failed judge runs are counted,
never scored as 0 and never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from mnemoray.eval.judging import (
    Dimension,
    JudgeSettings,
    combine_runs,
    failure_record,
    group_means,
    per_run_means,
    score_run,
    seeded_runs,
    summarize_dimensions,
)
from mnemoray.eval.qa import retrieve_at_visible_points
from mnemoray.eval.qa_prompts import format_memories
from mnemoray.llm.structured import generate_structured
from mnemoray.llm.types import ChatRequest, Engine, SamplingParams
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.prompts import clamp_schema, load_prompt
from mnemoray.records import EvalSample, EvidenceQuery, Persona, RetrievedItem

DIMENSIONS = (
    Dimension("information_richness", 0, 5),
    Dimension("logical_quality", 0, 5),
    Dimension("character_consistency", 0, 5),
    Dimension("conversational_attractiveness", 0, 5),
)
MEAN_METRIC = "roleplay_mean"


class RoleplayVerdict(BaseModel):
    """What a judge reply must parse into; the 0–5 range is enforced by clipping, not here."""

    model_config = ConfigDict(extra="ignore")
    reason: str
    information_richness: int
    logical_quality: int
    character_consistency: int
    conversational_attractiveness: int


@dataclass(frozen=True)
class RoleplaySettings(JudgeSettings):
    judge_runs: int = 3
    judge_temperature: float = 0.7
    judge_tokens: int = 256
    response_chars: int = 600
    persona_chars: int = 1500
    response_tokens: int = 256


def persona_text(persona: Persona | None, budget: int) -> str:
    if persona is None:
        return "(no profile)"
    lines = [f"Name: {persona.name}" if persona.name else "", persona.description.strip()]
    lines += [f"- {f}" for f in persona.facts]
    text = "\n".join(x for x in lines if x)
    return (text[:budget] if text else "(no profile)")


def respond_request(query: EvidenceQuery, persona: Persona | None, retrieved: list[RetrievedItem],
                    s: RoleplaySettings) -> ChatRequest:
    spec = load_prompt("roleplay", "respond")
    messages = spec.messages(persona=persona_text(persona, s.persona_chars),
                             memories=format_memories(retrieved, s.memory_chars), question=query.text)
    return ChatRequest(messages=messages, json_schema=clamp_schema(spec.schema, s.response_chars, 1),
                       params=SamplingParams(temperature=0.0, max_tokens=s.response_tokens),
                       metadata={"query_id": query.id, "call": "respond"})


def judge_request(query: EvidenceQuery, persona: Persona | None, response: str, s: RoleplaySettings) -> ChatRequest:
    spec = load_prompt("roleplay", "judge")
    fragments = "; ".join(str(f) for f in query.metadata.get("core_fragments") or []) or "(none)"
    messages = spec.messages(persona=persona_text(persona, s.persona_chars), question=query.text,
                             fragments=fragments, insight=query.answer or "(none)", response=response)
    return ChatRequest(messages=messages, json_schema=clamp_schema(spec.schema, s.reason_chars, 1),
                       params=SamplingParams(temperature=s.judge_temperature, max_tokens=s.judge_tokens),
                       metadata={"query_id": query.id, "call": "judge"})


def run_record(result, seed: int) -> dict[str, Any]:
    rec = score_run(result, DIMENSIONS)
    parsed = result.parsed.model_dump() if hasattr(result.parsed, "model_dump") else result.parsed
    rec.update({"seed": seed, "reason": parsed.get("reason") if isinstance(parsed, dict) and result.ok else None,
                "tokens": result.usage.total_tokens})
    return rec


def evaluate_roleplay_sample(sample: EvalSample, make_memory: Callable[[], MemoryFramework], responder: Engine,
                             judge: Engine, s: RoleplaySettings) -> list[dict[str, Any]]:
    asked = retrieve_at_visible_points(sample, make_memory, s.k, s.max_queries)
    if not asked:
        return []
    persona = sample.history.persona
    replies = generate_structured(responder, [respond_request(q, persona, r, s) for q, _, r in asked], s.max_retries)
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, int]] = []  # (row, run)
    requests: list[ChatRequest] = []
    for (q, v, retrieved), rep in zip(asked, replies):
        row: dict[str, Any] = {
            "query_id": q.id, "history_id": sample.history.id,
            "persona_id": persona.id if persona else sample.history.id,
            "persona_name": persona.name if persona else "",
            "category": q.category, "query": q.text, "visible_sessions": v,
            "retrieved": [r.item.id for r in retrieved], "response": None, "response_failure": None,
            "judge_runs": [], "scores": None, "tokens": rep.usage.total_tokens,
        }
        text = rep.parsed.get("response") if rep.ok and isinstance(rep.parsed, dict) else None
        if not isinstance(text, str):
            row["response_failure"] = failure_record(rep) if not rep.ok else failure_record(
                rep, "schema", "no response string")
        else:
            row["response"] = text
            runs = seeded_runs(judge_request(q, persona, text, s), s.judge_runs, s.judge_seed)
            pending.extend((len(rows), i) for i in range(len(runs)))
            requests.extend(runs)
        rows.append(row)
    verdicts = generate_structured(judge, requests, s.max_retries, model=RoleplayVerdict) if requests else []
    for (i, run), res in zip(pending, verdicts):
        rows[i]["judge_runs"].append(run_record(res, s.judge_seed + run))
        rows[i]["tokens"] += res.usage.total_tokens
    for row in rows:
        if row["judge_runs"]:
            row["scores"] = combine_runs(row["judge_runs"], DIMENSIONS)
    return rows


def _mean_of(values: dict[str, Any]) -> float | None:
    vals = [values.get(d.name) for d in DIMENSIONS]
    return None if any(v is None for v in vals) else sum(vals) / len(vals)


def summarize_roleplay(rows: list[dict[str, Any]], memory: str, s: RoleplaySettings,
                       extra: dict | None = None) -> dict[str, Any]:
    dims = summarize_dimensions(rows, DIMENSIONS)
    means = {d.name: dims[d.name]["mean"] for d in DIMENSIONS}
    calls = [run for r in rows for run in r["judge_runs"]]
    failed_calls = sum(bool(run["failures"]) for run in calls)
    return {
        "dataset": "rolememo",
        "memory": memory,
        "eval": "roleplay",
        "n_queries": len(rows),
        "n_histories": len({r["history_id"] for r in rows}),
        "judge_runs": s.judge_runs,
        "judge_seeds": [s.judge_seed + i for i in range(s.judge_runs)],
        "metrics": {**means, MEAN_METRIC: _mean_of(means)},
        "dimensions": dims,
        "by_run": per_run_means(rows, DIMENSIONS, s.judge_runs),
        "by_persona": group_means(rows, lambda r: r["persona_id"], DIMENSIONS),
        "by_category": group_means(rows, lambda r: str(r.get("category") or "all"), DIMENSIONS),
        "failures": {
            "response": sum(r["response_failure"] is not None for r in rows),
            "judge_calls": failed_calls,
            "judge_calls_total": len(calls),
            "items_unscored": sum(r["scores"] is None or _mean_of(r["scores"]) is None for r in rows),
        },
        **(extra or {}),
    }
