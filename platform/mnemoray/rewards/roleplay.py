"""Role-play reward of a built memory: a responder plays the persona from the memory's top-k,
the persona judge scores the reply (docs/ARCHITECTURE.md, "GRPO on Ray").

One item is one role-play query over one memory (what was retrieved for it travels with
the item, so scoring needs no shared state and a resent batch scores the same). Two engine
calls per batch: every reply, then every verdict. A reply that failed scores 0 with
`error` set (`extras["failure_kind"] = "response"`), like a verdict that failed, so it is
counted, never a silent 0. Registered as the judge reward "dualmem-roleplay": in a reward
actor the one engine (`reward.engine`) both replies and judges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mnemoray.eval.qa_prompts import format_memories
from mnemoray.eval.roleplay import RoleplaySettings, persona_text, respond_request
from mnemoray.llm.structured import generate_structured
from mnemoray.llm.types import Engine
from mnemoray.records import EvidenceQuery, Persona, RetrievedItem
from mnemoray.rewards.items import RewardItem
from mnemoray.rewards.persona_judge import PersonaJudgeItem, judge_responses
from mnemoray.rewards.scoring import RewardResult, failure

NAME = "roleplay"


@dataclass(frozen=True)
class RoleplayItem:
    query_id: str
    history_id: str
    query: str
    persona: Persona | None
    retrieved: tuple[RetrievedItem, ...]


def to_reward_item(item_id: str, item: RoleplayItem, data_source: str = "dualmem") -> RewardItem:
    """The item as a reward-pool item (plain JSON in extra_info; solution_str = the notes shown)."""
    info = {"query_id": item.query_id, "history_id": item.history_id, "query": item.query,
            "persona": item.persona.model_dump(mode="json") if item.persona else None,
            "retrieved": [r.model_dump(mode="json") for r in item.retrieved]}
    return RewardItem(id=item_id, data_source=data_source, solution_str=format_memories(list(item.retrieved), 4000),
                      extra_info=info)


def from_reward_item(item: RewardItem) -> RoleplayItem:
    """A reward-pool item back as a RoleplayItem; ValueError naming the item and field when malformed."""
    info = item.extra_info or {}
    query = info.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"reward item {item.id}: extra_info['query'] (the role-play query) is required")
    retrieved = info.get("retrieved")
    if not isinstance(retrieved, list):
        raise ValueError(f"reward item {item.id}: extra_info['retrieved'] must be a list of retrieved items")
    persona = info.get("persona")
    return RoleplayItem(str(info.get("query_id") or item.id), str(info.get("history_id") or ""), query,
                        Persona.model_validate(persona) if isinstance(persona, Mapping) else None,
                        tuple(RetrievedItem.model_validate(r) for r in retrieved))


def score_roleplay(responder: Engine, judge: Engine, items: Sequence[RoleplayItem], max_retries: int = 2,
                   settings: RoleplaySettings | None = None) -> list[RewardResult]:
    """One result per item, in order: the persona-judge score of the in-character reply."""
    s = settings or RoleplaySettings()
    if not items:
        return []
    requests = [respond_request(EvidenceQuery(id=it.query_id, history_id=it.history_id, text=it.query, gold_ids=[],
                                              gold_level="session"), it.persona, list(it.retrieved), s)
                for it in items]
    try:
        replies = generate_structured(responder, requests, max_retries=max_retries)
    except Exception as err:  # noqa: BLE001 - an engine crash fails the batch's items, counted
        return [failure(NAME, f"query {it.query_id}: responder raised {type(err).__name__}: {err}",
                        {"failure_kind": "response"}) for it in items]
    results: list[RewardResult | None] = [None] * len(items)
    judged, where = [], []
    for i, (it, reply) in enumerate(zip(items, replies, strict=True)):
        text = reply.parsed.get("response") if reply.ok and isinstance(reply.parsed, dict) else None
        if not isinstance(text, str):
            results[i] = failure(NAME, f"query {it.query_id}: no reply ({reply.error_kind or 'schema'}: "
                                 f"{reply.error})", {"failure_kind": "response"})
            continue
        judged.append(PersonaJudgeItem(persona=persona_text(it.persona, s.persona_chars),
                                       context=format_memories(list(it.retrieved), s.memory_chars), response=text))
        where.append(i)
    for i, result in zip(where, judge_responses(judge, judged, max_retries), strict=True):
        results[i] = result
    return [r for r in results if r is not None]


def score_items(engine: Engine, items: Sequence[RoleplayItem], max_retries: int = 2) -> list[RewardResult]:
    """The registry's judge-reward signature: the one engine replies and judges."""
    return score_roleplay(engine, engine, items, max_retries)


def mean_reward(results: Sequence[RewardResult], extras: dict[str, Any] | None = None) -> RewardResult:
    """A memory's reward over its queries: the mean score, failures counted in extras."""
    if not results:
        raise ValueError("no role-play results to average")
    return RewardResult(sum(r.score for r in results) / len(results),
                        {"queries": len(results), "failed": sum(r.failed for r in results), **(extras or {})})


__all__ = ["RoleplayItem", "from_reward_item", "mean_reward", "score_items", "score_roleplay", "to_reward_item"]
