"""MemBuilder's dense QA reward inside the GRPO loop (docs/ARCHITECTURE.md, "GRPO on Ray" and "Metrics").

A rollout is one agent's answer (core, episodic, semantic or procedural) for one session.
Its score, per item:

1. parse the completion (tolerant JSON) into that agent's ops; no JSON object with an
   "operations" list is a format failure: score 0 (a real 0, `format_ok` False);
2. take a COPY of the memory before the session (`state_before`), apply the expert's ops
   of the session's other three agents and the rollout's ops for its own store (so the
   memory differs from the expert's only where this rollout decided);
3. answer each of the session's cached synthetic questions from that memory: the core
   block is always shown, plus the top-k store items by embedding similarity (real
   sentence embeddings); then decide each answer (`match`):
   - "judge": an engine answers (citing the notes it used) and an engine judges
     CORRECT / WRONG (the lenient QA judge; temporal questions get its temporal rule);
   - "f1": an engine answers; correct when token F1 with the reference ≥ f1_threshold;
   - "contains": no engine; correct when some shown item holds ≥ contains_threshold of the
     reference answer's tokens (judge-free, for laptops and tests);
   - "auto" (default): "judge" with an engine, "contains" without;
4. task_r = correct / decided questions (`mnemoray.rewards.qa.qa_task_reward`); a question
   whose answer or verdict stayed invalid is left out and counted (`qa_failed`); with no
   decided question the item is a counted failure, never a silent 0;
5. score = task_r · (1 − λ·P_len) (`mnemoray.rewards.length_penalty`): core by the tokens of
   the resulting core block, other stores by ρ = rollout ops / expert ops, both as compact
   sorted JSON (the same unit).

`format_failed` (0 / 1) is logged by GRPO as `reward/format_failed` (the failure rate).
`attribution_counts` (by memory type) counts, over the correct answers, the items that
served them: the notes the answerer cited ("judge", "f1") or the items holding the answer
("contains"). The GRPO controller turns them into ADRPO weights (`rl/step_batch.py`).

Inputs come in `extra_info` (written by `mnemoray train grpo-data --environment membuilder
--qa-engine ...`): memory_type, session_id, session_date, state_before, expert_ops,
handles, qa, expert_length, and optionally qa_settings (fields of `DenseQASettings`); the
nested ones may be JSON text (how grpo-data stores them in parquet, whose columns need
one type per key).
Registered as "membuilder-qa" (`needs_judge`, engine optional); the reward actors call
`score_items(engine, items, max_retries)` on a batch, two engine calls per batch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from mnemoray.eval.qa_metrics import token_f1, tokens
from mnemoray.eval.qa_prompts import format_memories, judge_request
from mnemoray.llm.structured import extract_json, generate_structured
from mnemoray.llm.types import ChatRequest, SamplingParams
from mnemoray.memory.membuilder import STORES
from mnemoray.memory.ops import CoreBlock, ItemStore, Provenance
from mnemoray.memory.prompts import clamp_schema, load_prompt
from mnemoray.memory.ranking import EmbeddingCache, rank_items
from mnemoray.records import MemoryItem, RetrievedItem
from mnemoray.rewards.length_penalty import (
    LENGTH_LAMBDA,
    approx_tokens,
    core_penalty,
    penalized_reward,
    relative_penalty,
)
from mnemoray.rewards.qa import qa_task_reward
from mnemoray.rewards.scoring import RewardResult, as_score, failure
from mnemoray.rl.environments.membuilder_sessions import AGENTS, apply_agent, expert_text

NAME = "membuilder-qa"
Match = Literal["auto", "judge", "f1", "contains"]


@dataclass(frozen=True)
class DenseQASettings:
    k: int = 10  # store items retrieved per question (the core block is always shown too)
    match: Match = "auto"
    f1_threshold: float = 0.5
    contains_threshold: float = 1.0  # share of the reference answer's tokens one item must hold
    length_lambda: float = LENGTH_LAMBDA
    memory_chars: int = 6000
    answer_chars: int = 200
    answer_tokens: int = 128
    reasoning_chars: int = 400
    judge_tokens: int = 256
    embedding_model: str | None = None  # None: the default sentence encoder

    @classmethod
    def from_info(cls, raw: Any) -> DenseQASettings:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ValueError(f"extra_info['qa_settings'] must be an object, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"extra_info['qa_settings'] has unknown keys {unknown} (known: {sorted(known)})")
        settings = replace(cls(), **dict(raw))
        if settings.match not in ("auto", "judge", "f1", "contains"):
            raise ValueError(f"qa_settings.match must be auto, judge, f1 or contains, got {settings.match!r}")
        return settings


@dataclass(frozen=True)
class Question:
    id: str
    type: str
    question: str
    answer: str


@dataclass
class DenseQAItem:
    """One rollout with what its reward needs (checked by `from_reward_item`)."""

    id: str
    memory_type: str
    completion: str
    session_id: str
    session_date: str | None
    state_before: Mapping[str, Any]
    expert_ops: Mapping[str, Any]
    handles: Mapping[str, Mapping[str, str]]
    questions: list[Question]
    expert_length: float
    settings: DenseQASettings = field(default_factory=DenseQASettings)


JSON_KEYS = ("state_before", "expert_ops", "handles", "qa", "qa_settings")  # JSON text in parquet files


def decoded(info: Mapping[str, Any], where: str) -> dict[str, Any]:
    """extra_info with the nested inputs read back from JSON text where a file stored them so."""
    out = dict(info)
    for key in JSON_KEYS:
        if isinstance(out.get(key), str):
            try:
                out[key] = json.loads(out[key])
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: extra_info[{key!r}] is text but not JSON ({err.msg})") from None
    return out


def from_reward_item(item: Any) -> DenseQAItem:
    """A GRPO reward item as a dense-QA item; ValueError naming the missing or bad key."""
    info = decoded(item.extra_info or {}, f"reward item {item.id}")
    where = f"reward item {item.id}"
    memory_type = info.get("memory_type")
    if memory_type not in AGENTS:
        raise ValueError(f"{where}: extra_info['memory_type'] must be one of {list(AGENTS)}, got {memory_type!r}")
    for key in ("state_before", "qa", "session_id"):
        if info.get(key) is None:
            raise ValueError(f"{where}: extra_info[{key!r}] is required (prepare prompts with `mnemoray train "
                             "grpo-data --environment membuilder --qa-engine ...`)")
    state = info["state_before"]
    if not isinstance(state, Mapping) or not isinstance(state.get("core", ""), str) \
            or not isinstance(state.get("stores", {}), Mapping):
        raise ValueError(f"{where}: extra_info['state_before'] must be {{'core': text, 'stores': {{kind: items}}}}")
    raw_qa = info["qa"]
    if not isinstance(raw_qa, Sequence) or isinstance(raw_qa, str) or not raw_qa:
        raise ValueError(f"{where}: extra_info['qa'] must be a non-empty list of questions")
    questions = []
    for i, q in enumerate(raw_qa):
        if not isinstance(q, Mapping) or not all(isinstance(q.get(k), str) and q.get(k) for k in
                                                 ("question", "answer")):
            raise ValueError(f"{where}: extra_info['qa'][{i}] needs a 'question' and an 'answer' string")
        questions.append(Question(str(q.get("id", f"q{i}")), str(q.get("type", "single-session")), q["question"],
                                  q["answer"]))
    expert_length = as_score(info.get("expert_length", 0))
    if memory_type != "core" and expert_length <= 0:
        raise ValueError(f"{where}: extra_info['expert_length'] must be > 0 for the {memory_type} store")
    return DenseQAItem(item.id, memory_type, item.solution_str, str(info["session_id"]), info.get("session_date"),
                       state, dict(info.get("expert_ops") or {}), dict(info.get("handles") or {}), questions,
                       expert_length, DenseQASettings.from_info(info.get("qa_settings")))


@dataclass
class BuiltMemory:
    """The memory a rollout is scored on, or why it could not be built."""

    format_ok: bool
    core: str = ""
    items: list[MemoryItem] = field(default_factory=list)  # store items (not the core block)
    rollout_length: float = 0.0  # the rollout's ops as compact sorted JSON, chars
    op_errors: int = 0


def build_memory(item: DenseQAItem) -> BuiltMemory:
    """A copy of the memory before the session with the session's ops applied (expert for the
    other agents, the rollout for its own store)."""
    try:
        parsed = extract_json(item.completion)
    except Exception:  # noqa: BLE001 - unreadable output is a format failure, scored 0
        return BuiltMemory(False)
    if not isinstance(parsed, Mapping) or not isinstance(parsed.get("operations"), list):
        return BuiltMemory(False)
    state = item.state_before
    core = CoreBlock(text=str(state.get("core") or ""))
    stores = {kind: ItemStore(kind, [MemoryItem.model_validate(x) for x in (state.get("stores") or {}).get(kind, [])])
              for kind in STORES}
    prov = Provenance(item.session_id, (), item.session_date)
    errors = 0
    for agent in AGENTS:
        answer = parsed if agent == item.memory_type else item.expert_ops.get(agent)
        if answer is None:
            continue
        problems = apply_agent(core, stores, agent, answer, item.handles.get(agent, {}), prov)
        if agent == item.memory_type:
            errors = len(problems)
    return BuiltMemory(True, core.text, [it for kind in STORES for it in stores[kind].values()],
                       float(len(expert_text(parsed))), errors)


@functools.cache
def embedder_for(model: str | None) -> Any:
    from mnemoray.index.embedder import Embedder

    return Embedder(model)


def core_item(text: str) -> MemoryItem:
    return MemoryItem(id="core", text=text, kind="core")


def shown_items(memory: BuiltMemory, ranked: list[tuple[int, float]]) -> list[RetrievedItem]:
    """The notes one question is answered from: the core block first (when not empty), then the top-k."""
    chosen = ([core_item(memory.core)] if memory.core.strip() else []) + [memory.items[i] for i, _ in ranked]
    return [RetrievedItem(item=it, score=1.0, rank=r) for r, it in enumerate(chosen, start=1)]


def holds_answer(text: str, answer: str, threshold: float) -> bool:
    gold = tokens(answer)
    if not gold:
        return False
    have = set(tokens(text))
    return sum(t in have for t in gold) / len(gold) >= threshold


def answer_request(question: Question, shown: list[RetrievedItem], today: str | None, s: DenseQASettings,
                   index: int) -> ChatRequest:
    spec = load_prompt("rewards", "qa_answer")
    schema = clamp_schema(spec.schema, s.answer_chars, max(1, len(shown)))
    schema["properties"]["used"]["items"]["maximum"] = max(1, len(shown))
    messages = spec.messages(memories=format_memories(shown, s.memory_chars), today=today or "unknown",
                             question=question.question)
    return ChatRequest(messages=messages, json_schema=schema,
                       params=SamplingParams(temperature=0.0, max_tokens=s.answer_tokens),
                       metadata={"call": "qa_answer", "question": question.id, "index": index})


@dataclass
class Asked:
    """One question of one item, through answering and judging."""

    item: int
    question: Question
    shown: list[RetrievedItem]
    correct: bool | None = None  # None: not decided (failed answer or verdict)
    served: list[MemoryItem] = field(default_factory=list)
    problem: str | None = None


def cited(parsed: Any, shown: list[RetrievedItem]) -> list[MemoryItem]:
    used = parsed.get("used") if isinstance(parsed, Mapping) else None
    numbers = [n for n in used or [] if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= len(shown)]
    return [shown[n - 1].item for n in dict.fromkeys(numbers)]


def decide_contains(asked: list[Asked], settings: Sequence[DenseQASettings]) -> None:
    for a in asked:
        s = settings[a.item]
        a.served = [r.item for r in a.shown if holds_answer(r.item.text, a.question.answer, s.contains_threshold)]
        a.correct = bool(a.served)


def decide_with_engine(engine: Any, asked: list[Asked], items: Sequence[DenseQAItem], modes: Sequence[str],
                       max_retries: int) -> None:
    """Answer every engine-decided question in one batch, then judge the "judge" ones in one batch."""
    requests = [answer_request(a.question, a.shown, items[a.item].session_date, items[a.item].settings, i)
                for i, a in enumerate(asked)]
    answers = generate_structured(engine, requests, max_retries=max_retries) if requests else []
    to_judge: list[tuple[Asked, ChatRequest]] = []
    for a, result in zip(asked, answers, strict=True):
        answer = result.parsed.get("answer") if result.ok and isinstance(result.parsed, Mapping) else None
        if not isinstance(answer, str):
            a.problem = f"answer: {result.error_kind or 'schema'}: {result.error or 'no answer string'}"
            continue
        a.served = cited(result.parsed, a.shown)
        s = items[a.item].settings
        if modes[a.item] == "f1":
            a.correct = token_f1(answer, a.question.answer) >= s.f1_threshold
            continue
        variant = "temporal" if a.question.type == "temporal" else "default"
        to_judge.append((a, judge_request("lenient", variant, a.question.question, a.question.answer, answer,
                                          s.reasoning_chars, s.judge_tokens)))
    verdicts = generate_structured(engine, [r for _, r in to_judge], max_retries=max_retries) if to_judge else []
    for (a, _), result in zip(to_judge, verdicts, strict=True):
        label = result.parsed.get("label") if result.ok and isinstance(result.parsed, Mapping) else None
        if label not in ("CORRECT", "WRONG"):
            a.problem = f"judge: {result.error_kind or 'schema'}: {result.error or 'no CORRECT/WRONG label'}"
            continue
        a.correct = label == "CORRECT"
    for a in asked:
        if a.correct is not True:
            a.served = []


def length_penalty_of(item: DenseQAItem, memory: BuiltMemory) -> tuple[float, dict[str, Any]]:
    if item.memory_type == "core":
        core_tokens = approx_tokens(memory.core)
        return core_penalty(core_tokens), {"core_tokens": core_tokens}
    rho = memory.rollout_length / item.expert_length
    return relative_penalty(memory.rollout_length, item.expert_length), {"rho": rho}


def score_items(engine: Any, items: Sequence[DenseQAItem], max_retries: int = 2) -> list[RewardResult]:
    """One RewardResult per item, in order (see the module docstring); never raises for bad output."""
    results: list[RewardResult | None] = [None] * len(items)
    memories: dict[int, BuiltMemory] = {}
    modes: list[str] = []
    for i, item in enumerate(items):
        mode = item.settings.match if item.settings.match != "auto" else ("judge" if engine is not None
                                                                           else "contains")
        modes.append(mode)
        if mode != "contains" and engine is None:
            results[i] = failure(NAME, f"item {item.id}: match {mode!r} needs an engine (set reward.engine)")
            continue
        memory = build_memory(item)
        if not memory.format_ok:
            results[i] = RewardResult(0.0, {"format_ok": False, "format_failed": 1, "memory_type": item.memory_type,
                                            "attribution_counts": {}})
            continue
        memories[i] = memory
    asked: list[Asked] = []
    by_model: dict[str | None, list[int]] = {}
    for i in memories:
        by_model.setdefault(items[i].settings.embedding_model, []).append(i)
    for model, indices in by_model.items():
        cache = EmbeddingCache(embedder_for(model))  # per batch: a group's n rollouts share most items
        for i in indices:
            memory, item = memories[i], items[i]
            ranked = rank_items(cache, [q.question for q in item.questions], memory.items, item.settings.k)
            asked += [Asked(i, q, shown_items(memory, r)) for q, r in zip(item.questions, ranked, strict=True)]
    contains = [a for a in asked if modes[a.item] == "contains"]
    decide_contains(contains, [it.settings for it in items])
    with_engine = [a for a in asked if modes[a.item] != "contains"]
    if with_engine:
        try:
            decide_with_engine(engine, with_engine, items, modes, max_retries)
        except Exception as err:  # noqa: BLE001 - an engine crash fails the batch's questions, counted
            for a in with_engine:
                a.correct, a.served, a.problem = None, [], f"engine raised {type(err).__name__}: {err}"
    per_item: dict[int, list[Asked]] = {}
    for a in asked:
        per_item.setdefault(a.item, []).append(a)
    for i, memory in memories.items():
        item, mine = items[i], per_item.get(i, [])
        decided = [a for a in mine if a.correct is not None]
        problems = [f"{a.question.id}: {a.problem}" for a in mine if a.problem]
        counts: dict[str, int] = {}
        for a in decided:
            for served in {it.id: it for it in a.served}.values():
                counts[served.kind] = counts.get(served.kind, 0) + 1
        extras: dict[str, Any] = {"format_ok": True, "format_failed": 0, "memory_type": item.memory_type,
                                  "attribution_counts": counts,
                                  "qa_total": len(mine), "qa_failed": len(mine) - len(decided),
                                  "op_errors": memory.op_errors, "match": modes[i]}
        if not decided:
            results[i] = failure(NAME, f"item {item.id}: no question could be decided ({'; '.join(problems)[:500]})",
                                 extras)
            continue
        task = qa_task_reward([bool(a.correct) for a in decided])
        penalty, length_info = length_penalty_of(item, memory)
        extras.update(task_reward=task, qa_correct=sum(bool(a.correct) for a in decided), length_penalty=penalty,
                      **length_info)
        if problems:
            extras["qa_problems"] = problems[:10]
        results[i] = RewardResult(penalized_reward(task, penalty, item.settings.length_lambda), extras)
    return [r for r in results if r is not None]


__all__ = ["JSON_KEYS", "NAME", "DenseQAItem", "DenseQASettings", "Question", "build_memory", "decoded",
           "from_reward_item", "holds_answer", "score_items"]
