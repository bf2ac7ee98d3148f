"""Answer and judge calls of `mnemoray eval qa`, built from template files in resources/prompts/qa.

The judge exists in a lenient and a strict wording; a per-question rule block (LongMemEval
types, abstention) is inserted into both, so every question gets two labels whatever its
type. Schemas cap string lengths so small models always finish a valid JSON answer.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from mnemoray.llm.types import ChatRequest, SamplingParams
from mnemoray.memory.prompts import clamp_schema, load_prompt
from mnemoray.records import EvidenceQuery, RetrievedItem

JUDGES = ("lenient", "strict")
VARIANTS = ("default", "temporal", "knowledge-update", "preference", "abstention")
NOT_ANSWERABLE = "Not mentioned in the conversation."
_LME_TYPES = {"temporal-reasoning": "temporal", "knowledge-update": "knowledge-update",
              "single-session-preference": "preference"}


def judge_variant(dataset: str, query: EvidenceQuery) -> str:
    """Which rule block judges this question.

    Abstention: LongMemEval `_abs` questions and LoCoMo adversarial (category 5) questions,
    whose gold text is the tempting unsupported answer, not the right one.
    """
    if query.id.endswith("_abs") or (dataset == "locomo" and query.category == "adversarial"):
        return "abstention"
    if dataset == "longmemeval":
        return _LME_TYPES.get(query.category or "", "default")
    return "default"


@cache
def judge_rule(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown judge variant '{variant}'; choose one of {VARIANTS}")
    path = resources.files("mnemoray").joinpath("resources", "prompts", "qa", f"judge_rule.{variant}.txt")
    return path.read_text(encoding="utf-8").strip()


def format_memories(retrieved: list[RetrievedItem], budget_chars: int) -> str:
    """Numbered notes with their dates, cut to a character budget (most relevant kept)."""
    lines, used = [], 0
    for i, r in enumerate(retrieved, 1):
        date = r.item.timestamp or "unknown date"
        line = f"[{i}] ({date}) {r.item.text.strip()}"
        if used + len(line) > budget_chars:
            line = line[: max(0, budget_chars - used)]
        if not line:
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines) if lines else "(no memory notes)"


def answer_request(query: EvidenceQuery, retrieved: list[RetrievedItem], today: str, max_chars: int,
                   memory_chars: int, max_tokens: int) -> ChatRequest:
    spec = load_prompt("qa", "answer")
    messages = spec.messages(memories=format_memories(retrieved, memory_chars), today=today or "unknown",
                             question=query.text)
    return ChatRequest(messages=messages, json_schema=clamp_schema(spec.schema, max_chars, 1),
                       params=SamplingParams(temperature=0.0, max_tokens=max_tokens),
                       metadata={"query_id": query.id, "call": "answer"})


def judge_request(which: str, variant: str, question: str, gold: str, prediction: str, max_chars: int,
                  max_tokens: int) -> ChatRequest:
    if which not in JUDGES:
        raise ValueError(f"unknown judge '{which}'; choose one of {JUDGES}")
    spec = load_prompt("qa", f"judge_{which}")
    rules = judge_rule(variant)
    messages = spec.messages(question=question, gold=gold, prediction=prediction,
                             rules=f"\n{rules}\n" if rules else "")
    return ChatRequest(messages=messages, json_schema=clamp_schema(spec.schema, max_chars, 1),
                       params=SamplingParams(temperature=0.0, max_tokens=max_tokens),
                       metadata={"call": f"judge_{which}", "variant": variant})
