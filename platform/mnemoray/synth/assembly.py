"""History assembly: one persona's dialogues among distractor sessions, in time order, up to
a token budget; then one query session per surviving fact/query pair (plain Python).

The budget counts every session (dialogues, distractors, query sessions) with the token
counts computed when each session was written. Distractors come from a shared pool in an
order shuffled per persona; once the pool is used up they repeat (as new session ids) if
allowed. No session is added that would cross the budget, so a history never exceeds it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mnemoray.config.synth import AssemblyConfig
from mnemoray.ids import stable_id
from mnemoray.records import content_id, make_turn_id

SKIP_TRIES = 32  # pool sessions tried past one that does not fit, before stopping


@dataclass(frozen=True)
class PoolEntry:
    id: str
    tokens: int


def query_turns(question: str) -> list[dict[str, Any]]:
    return [{"speaker": "user", "text": question, "is_query": True}]


def _fill(
    pool: list[PoolEntry], budget: int, rng: random.Random, allow_repeats: bool
) -> tuple[list[tuple[PoolEntry, int]], int]:
    """Pool sessions (entry, copy number) whose tokens fit in `budget`, and the tokens used."""
    chosen: list[tuple[PoolEntry, int]] = []
    used = 0
    usable = [p for p in pool if 0 < p.tokens <= budget]
    if not usable:
        return chosen, used
    copy = 0
    while True:
        order = usable[:]
        rng.shuffle(order)
        misses = 0
        before = len(chosen)
        for entry in order:
            if used + entry.tokens <= budget:
                chosen.append((entry, copy))
                used += entry.tokens
                misses = 0
            else:
                misses += 1
                if misses >= SKIP_TRIES:
                    break
        copy += 1
        if not allow_repeats or len(chosen) == before or used + min(p.tokens for p in usable) > budget:
            return chosen, used


def assemble(persona: dict[str, Any], dialogues: list[dict[str, Any]], pool: list[PoolEntry],
             query_tokens: dict[str, int], target_tokens: int, cfg: AssemblyConfig, seed: int = 0) -> dict[str, Any]:
    """One history record: session references with timestamps, queries with evidence turn ids."""
    pid = persona["id"]
    rng = random.Random(stable_id(pid, seed))
    dialogues = sorted(dialogues, key=lambda d: d["id"])
    kept, dropped, used = [], [], 0
    for d in dialogues:  # dialogues and their query sessions first; drop what cannot fit
        cost = d["tokens"] + query_tokens.get(d["id"], 0)
        if used + cost <= target_tokens:
            kept.append(d)
            used += cost
        else:
            dropped.append(d["id"])
    fillers, filler_tokens = _fill(pool, target_tokens - used, rng, cfg.allow_repeats)
    slots: list[dict[str, Any]] = []
    for entry, copy in fillers:
        sid = entry.id if copy == 0 else f"{entry.id}~{copy}"
        slots.append({"session_id": sid, "source_id": entry.id, "kind": "distractor", "tokens": entry.tokens})
    rng.shuffle(slots)
    for d in kept:  # spread dialogues over the timeline
        slots.insert(rng.randint(0, len(slots)), {"session_id": d["id"], "source_id": d["id"], "kind": "dialogue",
                                                 "tokens": d["tokens"]})
    clock = datetime.fromisoformat(cfg.start_date)
    for slot in slots:
        clock += timedelta(hours=rng.randint(cfg.min_gap_hours, cfg.max_gap_hours))
        slot["timestamp"] = clock.isoformat(timespec="minutes")
    queries = []
    for d in kept:
        pair = d["fact_query"]
        qid = content_id("q", pair["id"])
        qsid = content_id("qs", qid)
        clock += timedelta(hours=rng.randint(cfg.min_gap_hours, cfg.max_gap_hours))
        slots.append({"session_id": qsid, "source_id": qsid, "kind": "query", "tokens": query_tokens.get(d["id"], 0),
                      "timestamp": clock.isoformat(timespec="minutes")})
        rounds = {p["fragment_id"]: int(p["round"]) for p in d["placements"]}
        queries.append({
            "id": qid, "question": pair["question"], "session_id": qsid, "dialogue_id": d["id"],
            "fact_query_id": pair["id"], "insight_type": pair["insight_type"], "core_insight": pair["core_insight"],
            "core_fragments": [f["text"] for f in pair["fragments"]], "connector": pair.get("connector", ""),
            "evidence_turn_ids": [make_turn_id(d["id"], 2 * rounds[f["id"]]) for f in pair["fragments"]],
        })
    total = sum(s["tokens"] for s in slots)
    return {
        "id": content_id("hist", pid), "persona_id": pid, "persona": persona, "sessions": slots, "queries": queries,
        "total_tokens": total, "target_tokens": target_tokens, "dropped_dialogues": dropped,
        "distractor_repeats": sum(1 for _, c in fillers if c > 0),
    }
