"""RealMem's LLM-judged metrics: QA score 0–3, memory recall, memory helpfulness 0–2.

Protocol (RealMem's evaluation, in our harness): sessions are fed in time order and each
query turn is asked when its session starts (the memory saw only earlier sessions). An
answerer LLM replies to the user's message from the top-k retrieved memory. Gold for a
query is the `memory_used` list of the assistant turn that answers it (the memory points
the reference reply relied on) and that reply itself.

- QA score (judge call 1): 0 contradicts the gold memory, 1 generic / does not use it,
  2 uses part of it, 3 uses all of it (as the reference does).
- Memory recall (judge call 2): for each gold memory point, in order, is its meaning
  contained in some retrieved item; recall = covered points / gold points. The judge gives
  the per-point verdicts; the ratio is computed here (a verdict list of the wrong length is
  a failed call, not a guess).
- Memory helpfulness (same call 2): 0 no help or conflicting, 1 partial, 2 comprehensive.
- evidence_recall@k (no judge): the fraction of gold `memory_session_uuids` among the
  sessions the retrieved items come from.

Memory recall and helpfulness do not depend on the answer, so they are judged even when
the answer failed; the QA score is not asked then. All counts go through
`mnemoray.eval.judging`: failed or out-of-range judge output is counted, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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
from mnemoray.eval.qa import question_date, retrieve_at_visible_points
from mnemoray.eval.qa_prompts import format_memories
from mnemoray.llm.structured import generate_structured
from mnemoray.llm.types import ChatRequest, ChatResult, Engine, SamplingParams
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.prompts import clamp_schema, load_prompt
from mnemoray.records import EvalSample, EvidenceQuery, RetrievedItem

QA_SCORE = Dimension("qa_score", 0, 3)
MEMORY_RECALL = Dimension("memory_recall", 0, 1)
MEMORY_HELPFULNESS = Dimension("memory_helpfulness", 0, 2)
DIMENSIONS = (QA_SCORE, MEMORY_RECALL, MEMORY_HELPFULNESS)
GOLD_KEY = "gold_memory"  # query metadata: [{"session_uuid", "content"}] from `memory_used`


class QAVerdict(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reason: str
    score: int


class MemoryVerdict(BaseModel):
    model_config = ConfigDict(extra="ignore")
    covered: list[bool]
    reason: str
    helpfulness: int


@dataclass(frozen=True)
class RealMemJudgeSettings(JudgeSettings):
    answer_chars: int = 600
    gold_point_chars: int = 800
    answer_tokens: int = 256


# --- gold memory points from the raw RealMem files (the loader keeps only their sessions) ---

def _query_gold(name: str, dialogues: Any) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for session in dialogues if isinstance(dialogues, list) else []:
        if not isinstance(session, dict):
            continue
        turns = session.get("dialogue_turns") or []
        for ti, turn in enumerate(turns):
            if not isinstance(turn, dict) or not turn.get("is_query"):
                continue
            answer = turns[ti + 1] if ti + 1 < len(turns) and isinstance(turns[ti + 1], dict) else {}
            qid = turn.get("query_id") or f"{name}:{session.get('session_uuid')}:{ti}"  # the loader's id rule
            points = [{"session_uuid": str(m.get("session_uuid") or ""), "content": str(m.get("content") or "")}
                      for m in answer.get("memory_used") or [] if isinstance(m, dict)]
            out[f"{name}/{qid}"] = [p for p in points if p["content"].strip()]
    return out


def read_gold_memory(path: str | Path) -> dict[str, list[dict[str, str]]]:
    """`history_id/query_id` -> the gold memory points (`memory_used`) of every RealMem query."""
    from mnemoray.loaders import dataset_files
    from mnemoray.loaders.jsonstream import iter_object

    out: dict[str, list[dict[str, str]]] = {}
    for file in dataset_files("realmem", Path(path)):
        metadata: dict[str, Any] = {}
        dialogues: Any = None
        for key, value in iter_object(file):
            if key == "_metadata" and isinstance(value, dict):
                metadata = value
            elif key == "dialogues":
                dialogues = value
        name = str(metadata.get("person_name") or file.stem.replace("_dialogues_256k", ""))  # the loader's rule
        out.update(_query_gold(name, dialogues))
    return out


def attach_gold_memory(samples: list[EvalSample], gold: dict[str, list[dict[str, str]]]) -> int:
    """Put each query's gold memory points in its metadata; returns how many queries have none."""
    missing = 0
    for sample in samples:
        for q in sample.queries:
            points = gold.get(f"{sample.history.id}/{q.id}", [])
            q.metadata[GOLD_KEY] = points
            missing += not points
    return missing


# --- requests ---

def _gold_text(points: list[dict[str, str]], budget: int) -> str:
    return "\n".join(f"[{i}] {p['content'].strip()[:budget]}" for i, p in enumerate(points, 1)) or "(none)"


def answer_request(query: EvidenceQuery, retrieved: list[RetrievedItem], today: str,
                   s: RealMemJudgeSettings) -> ChatRequest:
    spec = load_prompt("realmem_judge", "answer")
    messages = spec.messages(memories=format_memories(retrieved, s.memory_chars), today=today or "unknown",
                             question=query.text)
    return ChatRequest(messages=messages, json_schema=clamp_schema(spec.schema, s.answer_chars, 1),
                       params=SamplingParams(temperature=0.0, max_tokens=s.answer_tokens),
                       metadata={"query_id": query.id, "call": "answer"})


def qa_request(query: EvidenceQuery, candidate: str, s: RealMemJudgeSettings) -> ChatRequest:
    spec = load_prompt("realmem_judge", "qa")
    messages = spec.messages(question=query.text, gold_memory=_gold_text(query.metadata[GOLD_KEY], s.gold_point_chars),
                             reference=(query.answer or "")[: 4 * s.gold_point_chars], candidate=candidate)
    return ChatRequest(messages=messages, json_schema=clamp_schema(spec.schema, s.reason_chars, 1),
                       params=SamplingParams(temperature=s.judge_temperature, max_tokens=s.judge_tokens),
                       metadata={"query_id": query.id, "call": "judge_qa"})


def memory_request(query: EvidenceQuery, retrieved: list[RetrievedItem], s: RealMemJudgeSettings) -> ChatRequest:
    spec = load_prompt("realmem_judge", "memory")
    points = query.metadata[GOLD_KEY]
    n = len(points)
    messages = spec.messages(
        question=query.text,
        n_gold=n,
        gold_memory=_gold_text(points, s.gold_point_chars),
        retrieved=format_memories(retrieved, s.memory_chars) if retrieved else "(nothing retrieved)",
    )
    schema = clamp_schema(spec.schema, s.reason_chars, n)
    schema["properties"]["covered"].update({"minItems": n, "maxItems": n})  # one verdict per gold point
    return ChatRequest(messages=messages, json_schema=schema,
                       params=SamplingParams(temperature=s.judge_temperature, max_tokens=s.judge_tokens),
                       metadata={"query_id": query.id, "call": "judge_memory", "n_gold": n})


def qa_values(parsed: dict[str, Any]) -> dict[str, Any]:
    return {QA_SCORE.name: parsed["score"]}


def memory_values(n_gold: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def extract(parsed: dict[str, Any]) -> dict[str, Any]:
        covered = parsed["covered"]
        if len(covered) != n_gold:
            raise ValueError(f"{len(covered)} recall verdicts for {n_gold} gold memory points")
        return {MEMORY_RECALL.name: sum(bool(c) for c in covered) / n_gold,
                MEMORY_HELPFULNESS.name: parsed["helpfulness"]}
    return extract


def _parsed(result: ChatResult) -> dict[str, Any] | None:
    p = result.parsed if result.ok else None
    return p.model_dump() if hasattr(p, "model_dump") else p if isinstance(p, dict) else None


def merge_run(seed: int, qa: ChatResult | None, memory: ChatResult | None, n_gold: int) -> dict[str, Any]:
    """One judge run of an item: its QA call and memory call (either may not have been asked)."""
    rec: dict[str, Any] = {"seed": seed, "scores": {d.name: None for d in DIMENSIONS}, "failures": {},
                           "clipped": [], "qa_reason": None, "memory_reason": None, "covered": None, "tokens": 0}
    for res, dims, extract, reason_key in ((qa, (QA_SCORE,), qa_values, "qa_reason"),
                                           (memory, (MEMORY_RECALL, MEMORY_HELPFULNESS), memory_values(n_gold),
                                            "memory_reason")):
        if res is None:
            continue
        got = score_run(res, dims, extract)
        rec["scores"].update({k: v for k, v in got["scores"].items()})
        rec["failures"].update(got["failures"])
        rec["clipped"] += got["clipped"]
        rec["tokens"] += res.usage.total_tokens
        parsed = _parsed(res)
        if parsed:
            rec[reason_key] = parsed.get("reason")
            if reason_key == "memory_reason":
                rec["covered"] = parsed.get("covered")
    return rec


def evidence_recall(query: EvidenceQuery, retrieved: list[RetrievedItem]) -> float | None:
    gold = set(query.gold_ids)
    if not gold:
        return None
    seen = {e for r in retrieved for e in r.item.evidence_ids("session")}
    return len(gold & seen) / len(gold)


def evaluate_realmem_sample(sample: EvalSample, make_memory: Callable[[], MemoryFramework], answerer: Engine,
                            judge: Engine, s: RealMemJudgeSettings) -> list[dict[str, Any]]:
    asked = retrieve_at_visible_points(sample, make_memory, s.k, s.max_queries)
    if not asked:
        return []
    answers = generate_structured(answerer, [answer_request(q, r, question_date(sample, q, v), s) for q, v, r in asked],
                                  s.max_retries)
    rows: list[dict[str, Any]] = []
    qa_calls: list[tuple[int, int]] = []
    qa_reqs: list[ChatRequest] = []
    mem_calls: list[tuple[int, int]] = []
    mem_reqs: list[ChatRequest] = []
    for (q, v, retrieved), ans in zip(asked, answers):
        gold = q.metadata.get(GOLD_KEY) or []
        row: dict[str, Any] = {
            "query_id": q.id, "history_id": sample.history.id, "category": q.category, "query": q.text,
            "visible_sessions": v, "retrieved": [r.item.id for r in retrieved], "gold_sessions": list(q.gold_ids),
            "gold_memory": [p["content"][: s.gold_point_chars] for p in gold], "reference": q.answer,
            "evidence_recall": evidence_recall(q, retrieved), "prediction": None, "answer_failure": None,
            "no_gold_memory": not gold, "judge_runs": [], "scores": None, "tokens": ans.usage.total_tokens,
        }
        text = ans.parsed.get("answer") if ans.ok and isinstance(ans.parsed, dict) else None
        if not isinstance(text, str):
            row["answer_failure"] = (
                failure_record(ans) if not ans.ok else failure_record(ans, "schema", "no answer string")
            )
        if gold and isinstance(text, str):
            row["prediction"] = text
            runs = seeded_runs(qa_request(q, text, s), s.judge_runs, s.judge_seed)
            qa_calls.extend((len(rows), i) for i in range(len(runs)))
            qa_reqs.extend(runs)
        elif isinstance(text, str):
            row["prediction"] = text
        if gold:
            runs = seeded_runs(memory_request(q, retrieved, s), s.judge_runs, s.judge_seed)
            mem_calls.extend((len(rows), i) for i in range(len(runs)))
            mem_reqs.extend(runs)
        rows.append(row)
    qa_res = generate_structured(judge, qa_reqs, s.max_retries, model=QAVerdict) if qa_reqs else []
    mem_res = generate_structured(judge, mem_reqs, s.max_retries, model=MemoryVerdict) if mem_reqs else []
    got_qa = dict(zip(qa_calls, qa_res))
    got_mem = dict(zip(mem_calls, mem_res))
    for i, row in enumerate(rows):
        n_gold = len(row["gold_memory"])
        for run in range(s.judge_runs):
            qa, mem = got_qa.get((i, run)), got_mem.get((i, run))
            if qa is None and mem is None:
                continue
            rec = merge_run(s.judge_seed + run, qa, mem, n_gold)
            row["judge_runs"].append(rec)
            row["tokens"] += rec["tokens"]
        if row["judge_runs"]:
            row["scores"] = combine_runs(row["judge_runs"], DIMENSIONS)
    return rows


def summarize_realmem(rows: list[dict[str, Any]], memory: str, s: RealMemJudgeSettings,
                      extra: dict | None = None) -> dict[str, Any]:
    dims = summarize_dimensions(rows, DIMENSIONS)
    ev = [r["evidence_recall"] for r in rows if r["evidence_recall"] is not None]
    calls = [run for r in rows for run in r["judge_runs"]]
    return {
        "dataset": "realmem",
        "memory": memory,
        "eval": "realmem-judge",
        "n_queries": len(rows),
        "n_histories": len({r["history_id"] for r in rows}),
        "k": s.k,
        "judge_runs": s.judge_runs,
        "judge_seeds": [s.judge_seed + i for i in range(s.judge_runs)],
        "metrics": {**{d.name: dims[d.name]["mean"] for d in DIMENSIONS},
                    f"evidence_recall@{s.k}": sum(ev) / len(ev) if ev else None},
        "dimensions": dims,
        "qa_score_distribution": _distribution(rows),
        "by_run": per_run_means(rows, DIMENSIONS, s.judge_runs),
        "by_history": group_means(rows, lambda r: r["history_id"], DIMENSIONS),
        "by_category": group_means(rows, lambda r: str(r.get("category") or "all"), DIMENSIONS),
        "failures": {
            "answer": sum(r["answer_failure"] is not None for r in rows),
            "no_gold_memory": sum(r["no_gold_memory"] for r in rows),
            "judge_runs_with_failure": sum(bool(run["failures"]) for run in calls),
            "judge_runs_total": len(calls),
        },
        **(extra or {}),
    }


def _distribution(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How often each QA score (rounded item mean) occurs, like RealMem's own summary."""
    counts = {str(v): 0 for v in range(int(QA_SCORE.low), int(QA_SCORE.high) + 1)}
    for r in rows:
        v = (r["scores"] or {}).get(QA_SCORE.name)
        if v is not None:
            counts[str(int(v + 0.5))] += 1
    return counts
