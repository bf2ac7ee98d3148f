"""QA evaluation of one history: answer each question from memory, judge it twice, score it.

Same protocol as the retrieval harness (`mnemoray.eval.retrieval`): sessions are ingested in
order and a question with `visible_sessions = v` retrieves its top-k after exactly v
sessions, so an answer never uses the future. All answers of a history go to the answerer
in one batch, then all judge calls (lenient + strict) in one batch. Outputs that stay
invalid after retries are kept as counted failures with their raw text, never dropped;
accuracy denominators leave them out, `summarize_qa` reports how many there were.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mnemoray.eval.qa_metrics import bleu1, locomo_f1, stemmer_name, token_f1
from mnemoray.eval.qa_prompts import JUDGES, NOT_ANSWERABLE, answer_request, judge_request, judge_variant
from mnemoray.llm.structured import generate_structured
from mnemoray.llm.types import ChatResult, Engine
from mnemoray.memory.base import MemoryFramework
from mnemoray.records import EvalSample, EvidenceQuery


@dataclass(frozen=True)
class QASettings:
    dataset: str
    k: int = 10
    max_queries: int | None = None  # per history, to keep smoke runs short
    answer_chars: int = 200
    reasoning_chars: int = 400
    memory_chars: int = 6000
    answer_tokens: int = 128
    judge_tokens: int = 256
    max_retries: int = 2
    stem: bool = True  # Porter stemming in F1 when nltk is installed


def gold_for(dataset: str, query: EvidenceQuery) -> tuple[str, str | None]:
    """(reference the answer is scored against, distractor or None).

    LoCoMo adversarial questions are unanswerable; the loader's answer is their
    `adversarial_answer` (a tempting wrong answer), kept only as the distractor.
    """
    if dataset == "locomo" and query.category == "adversarial":
        return NOT_ANSWERABLE, query.answer
    return query.answer or "", None


def _judge_gold(gold: str, distractor: str | None) -> str:
    return f"{gold} (tempting but unsupported answer: {distractor})" if distractor else gold


def _failure(result: ChatResult) -> dict[str, Any]:
    return {"kind": result.error_kind or "error", "error": result.error, "raw": result.text[:2000]}


def _label(result: ChatResult) -> tuple[str | None, str | None]:
    parsed = result.parsed if result.ok else None
    if not isinstance(parsed, dict) or parsed.get("label") not in ("CORRECT", "WRONG"):
        return None, None
    return parsed["label"], str(parsed.get("reasoning", ""))


def question_date(sample: EvalSample, query: EvidenceQuery, visible: int) -> str:
    """The date the question is asked: its own, else that of the last visible session."""
    asked = query.metadata.get("question_date")
    if asked:
        return str(asked)
    sessions = sample.history.sessions[:visible]
    return next((s.timestamp for s in reversed(sessions) if s.timestamp), "")


def retrieve_at_visible_points(sample: EvalSample, make_memory: Callable[[], MemoryFramework], k: int,
                               max_queries: int | None = None) -> list[tuple[EvidenceQuery, int, list]]:
    """(query, visible sessions, top-k retrieved) for each scorable query, in asking order."""
    history = sample.history
    n = len(history.sessions)
    queries = [q for q in sample.queries if q.answer is not None][: max_queries]
    due: dict[int, list[EvidenceQuery]] = defaultdict(list)
    for q in queries:
        due[n if q.visible_sessions is None else max(0, min(q.visible_sessions, n))].append(q)
    memory = make_memory()
    ingested = 0
    out = []
    for v in sorted(due):
        if v > ingested:
            memory.ingest_many(history.sessions[ingested:v], history.persona)
            ingested = v
        results = memory.retrieve_many([q.text for q in due[v]], k)
        out.extend((q, v, retrieved) for q, retrieved in zip(due[v], results))
    return out


def evaluate_qa_sample(sample: EvalSample, make_memory: Callable[[], MemoryFramework], answerer: Engine,
                       judge: Engine, s: QASettings) -> list[dict[str, Any]]:
    asked = retrieve_at_visible_points(sample, make_memory, s.k, s.max_queries)
    if not asked:
        return []
    answers = generate_structured(
        answerer,
        [
            answer_request(q, r, question_date(sample, q, v), s.answer_chars, s.memory_chars, s.answer_tokens)
            for q, v, r in asked
        ],
        s.max_retries,
    )
    stem = s.stem and stemmer_name() == "porter"
    rows: list[dict[str, Any]] = []
    judge_calls: list[tuple[int, str]] = []
    requests = []
    for (q, v, retrieved), ans in zip(asked, answers):
        gold, distractor = gold_for(s.dataset, q)
        variant = judge_variant(s.dataset, q)
        row: dict[str, Any] = {
            "query_id": q.id, "history_id": sample.history.id, "query": q.text, "category": q.category,
            "judge_variant": variant, "gold": gold, "distractor": distractor, "visible_sessions": v,
            "retrieved": [r.item.id for r in retrieved], "prediction": None, "answer_failure": None,
            "f1": None, "bleu1": None, "tokens": ans.usage.total_tokens,
        }
        for which in JUDGES:
            row.update({f"label_{which}": None, f"reasoning_{which}": None, f"judge_failure_{which}": None})
        answer = ans.parsed.get("answer") if ans.ok and isinstance(ans.parsed, dict) else None
        if not isinstance(answer, str):
            row["answer_failure"] = _failure(ans) if not ans.ok else {"kind": "schema", "error": "no answer string",
                                                                      "raw": ans.text[:2000]}
        else:
            row["prediction"] = answer
            row["f1"] = (
                locomo_f1(answer, gold, q.category, stem) if s.dataset == "locomo" else token_f1(answer, gold, stem)
            )
            row["bleu1"] = bleu1(answer, gold)
            for which in JUDGES:
                judge_calls.append((len(rows), which))
                requests.append(judge_request(which, variant, q.text, _judge_gold(gold, distractor), answer,
                                              s.reasoning_chars, s.judge_tokens))
        rows.append(row)
    verdicts = generate_structured(judge, requests, s.max_retries) if requests else []
    for (i, which), res in zip(judge_calls, verdicts):
        label, reasoning = _label(res)
        rows[i]["tokens"] += res.usage.total_tokens
        if label is None:
            rows[i][f"judge_failure_{which}"] = _failure(res) if not res.ok else {
                "kind": "schema", "error": "no CORRECT/WRONG label", "raw": res.text[:2000]}
        else:
            rows[i][f"label_{which}"], rows[i][f"reasoning_{which}"] = label, reasoning
    return rows


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for which in JUDGES:
        labels = [r[f"label_{which}"] for r in rows if r[f"label_{which}"] is not None]
        out[f"accuracy_{which}"] = sum(lab == "CORRECT" for lab in labels) / len(labels) if labels else None
        out[f"n_judged_{which}"] = len(labels)
    for m in ("f1", "bleu1"):
        vals = [r[m] for r in rows if r[m] is not None]
        out[m] = sum(vals) / len(vals) if vals else None
    return out


def summarize_qa(rows: list[dict[str, Any]], dataset: str, memory: str, extra: dict | None = None) -> dict[str, Any]:
    """metrics.json content: overall and per-category figures plus failure counts."""
    overall = _aggregate(rows)
    by_cat: dict[str, list] = defaultdict(list)
    for r in rows:
        by_cat[str(r.get("category") or "all")].append(r)
    failures = {"answer": sum(r["answer_failure"] is not None for r in rows)}
    for which in JUDGES:
        failures[f"judge_{which}"] = sum(r[f"judge_failure_{which}"] is not None for r in rows)
    failures["judge_failures"] = failures["judge_lenient"] + failures["judge_strict"]
    return {
        "dataset": dataset,
        "memory": memory,
        "n_queries": len(rows),
        "n_histories": len({r["history_id"] for r in rows}),
        "metrics": {m: overall[m] for m in ("accuracy_lenient", "accuracy_strict", "f1", "bleu1")},
        "judged": {w: overall[f"n_judged_{w}"] for w in JUDGES},
        "by_category": {c: _aggregate(rs) for c, rs in sorted(by_cat.items())},
        "failures": failures,
        "f1_stemmer": stemmer_name(),
        **(extra or {}),
    }
