"""RoleMemo-style synthesis stages as plain functions over records (no Ray).

A stage turns each input record into at most one LLM request (`build`) and reads the
answer back into kept records and rejects (`parse`). Ids are deterministic (hashes of the
input id and position, never of generated text), so a rerun addresses the same records.
The Ray layer (`mnemoray.distributed.data.synth_stages`) runs these over Parquet parts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from mnemoray.config.synth import INSIGHT_TYPES, RoleMemoConfig
from mnemoray.ids import stable_id
from mnemoray.llm.types import ChatRequest, ChatResult, SamplingParams
from mnemoray.memory.prompts import clamp_schema, edit_schema, load_prompt
from mnemoray.records import content_id
from mnemoray.synth import checks

PROMPTS = "rolememo"
MIN_FRAGMENT_WORDS = 2  # fewer content words cannot be told apart from small talk


@dataclass
class Outcome:
    kept: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)


Build = Callable[[dict[str, Any], RoleMemoConfig], ChatRequest | None]
Parse = Callable[[dict[str, Any], ChatResult | None, RoleMemoConfig], Outcome]


@dataclass(frozen=True)
class Stage:
    name: str
    source: str  # the stage whose kept records are this stage's input
    build: Build | None
    parse: Parse
    about: str


# -- helpers -----------------------------------------------------------------------------

def reject(record: dict[str, Any], reason: str, detail: str = "", raw: str = "") -> dict[str, Any]:
    return {"id": record["id"], "persona_id": record.get("persona_id", ""), "reason": reason,
            "detail": detail, "raw": raw}


def llm_failure(record: dict[str, Any], result: ChatResult | None) -> Outcome | None:
    """A reject for a failed call (kept with its raw text), or None when the call worked."""
    if result is None:
        return Outcome(rejects=[reject(record, "llm_missing", "no answer came back")])
    if result.ok and isinstance(result.parsed, dict):
        return None
    kind = result.error_kind or "parse"
    return Outcome(rejects=[reject(record, f"llm_{kind}", result.error or "no JSON object", result.text)])


def sized_arrays(schema: dict[str, Any], size: int, keys: tuple[str, ...]) -> dict[str, Any]:
    """A copy where the arrays under `keys` hold exactly `size` items."""

    def edit(node: dict[str, Any]) -> None:
        for key, sub in (node.get("properties") or {}).items():
            if key in keys and isinstance(sub, dict) and sub.get("type") == "array":
                sub["minItems"] = sub["maxItems"] = size

    return edit_schema(schema, edit)


def request(stage: str, record: dict[str, Any], cfg: RoleMemoConfig, prompt: str,
            schema: dict[str, Any] | None = None, **fields: Any) -> ChatRequest:
    spec = load_prompt(PROMPTS, prompt)
    schema = clamp_schema(schema or spec.schema, cfg.call.max_text_chars, 10_000)
    return ChatRequest(
        id=f"{stage}:{record['id']}",
        messages=spec.messages(**fields),
        params=SamplingParams(temperature=cfg.call.temperature, max_tokens=cfg.call.max_tokens),
        seed=int(stable_id(stage, record["id"], cfg.seed)[:8], 16),
        json_schema=schema,
        metadata={"stage": stage},
    )


def persona_text(persona: dict[str, Any]) -> str:
    facts = persona.get("facts") or []
    lines = [persona.get("description", "").strip()]
    if facts:
        lines += ["Known facts:"] + [f"- {f}" for f in facts]
    return "\n".join(line for line in lines if line)


@lru_cache(maxsize=1)
def topics() -> tuple[str, ...]:
    text = resources.files("mnemoray").joinpath("resources", "prompts", PROMPTS, "topics.txt").read_text("utf-8")
    return tuple(t.strip() for t in text.splitlines() if t.strip())


def render_rounds(rounds: list[dict[str, str]]) -> str:
    return "\n".join(f"user: {r['user']}\nassistant: {r['assistant']}" for r in rounds)


@lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def count_tokens(text: str, tokenizer: str | None) -> int:
    """Tokens of `text` with the configured model's tokenizer (whitespace words without one)."""
    if not tokenizer:
        return len(text.split())
    return len(_tokenizer(tokenizer)(text, add_special_tokens=False)["input_ids"])


def _key(*parts: Any) -> int:
    return int(stable_id(*parts)[:8], 16)


# -- 1. insights --------------------------------------------------------------------------

def build_insights(persona: dict[str, Any], cfg: RoleMemoConfig) -> ChatRequest:
    schema = sized_arrays(load_prompt(PROMPTS, "insights").schema, cfg.insights.per_type, INSIGHT_TYPES)
    return request("insights", persona, cfg, "insights", schema,
                   persona=persona_text(persona), per_type=cfg.insights.per_type)


def parse_insights(persona: dict[str, Any], result: ChatResult | None, cfg: RoleMemoConfig) -> Outcome:
    if (failed := llm_failure(persona, result)) is not None:
        return failed
    out = Outcome()
    for kind in INSIGHT_TYPES:
        for i, text in enumerate(result.parsed.get(kind, [])[: cfg.insights.per_type]):
            rid = content_id("ins", persona["id"], kind, i)
            record = {"id": rid, "persona_id": persona["id"], "persona": persona_text(persona),
                      "insight_type": kind, "index": i, "text": str(text).strip()}
            if not record["text"]:
                out.rejects.append(reject(record, "empty_insight"))
            else:
                out.kept.append(record)
    return out


# -- 2. insight check ------------------------------------------------------------------------

def build_insight_check(insight: dict[str, Any], cfg: RoleMemoConfig) -> ChatRequest:
    return request("insight_check", insight, cfg, "insight_check", persona=insight["persona"],
                   insight_type=insight["insight_type"], insight=insight["text"])


def parse_insight_check(insight: dict[str, Any], result: ChatResult | None, cfg: RoleMemoConfig) -> Outcome:
    if (failed := llm_failure(insight, result)) is not None:
        return failed
    missing = checks.failed_criteria(result.parsed)
    if missing:
        return Outcome(rejects=[reject(insight, "criteria", "failed: " + ",".join(missing), result.text)])
    return Outcome(kept=[{**insight, "criteria": dict(result.parsed)}])


# -- 3. fact/query pairs -----------------------------------------------------------------------

def build_fact_query(insight: dict[str, Any], cfg: RoleMemoConfig) -> ChatRequest:
    return request("fact_queries", insight, cfg, "fact_query", persona=insight["persona"],
                   insight_type=insight["insight_type"], insight=insight["text"])


def parse_fact_query(insight: dict[str, Any], result: ChatResult | None, cfg: RoleMemoConfig) -> Outcome:
    if (failed := llm_failure(insight, result)) is not None:
        return failed
    parsed = result.parsed
    fq_id = content_id("fq", insight["id"])
    fragments = [str(f).strip() for f in parsed.get("fragments", [])]
    record = {"id": fq_id, "persona_id": insight["persona_id"], "persona": insight["persona"],
              "insight_id": insight["id"], "insight_type": insight["insight_type"],
              "core_insight": insight["text"],
              "fragments": [{"id": f"{fq_id}-f{i}", "text": t} for i, t in enumerate(fragments)],
              "question": str(parsed.get("question", "")).strip(),
              "connector": str(parsed.get("connector", "")).strip()}
    if len(fragments) != 2 or not all(fragments) or not record["question"]:
        return Outcome(rejects=[reject(record, "incomplete_pair", "need 2 fragments and a question", result.text)])
    if any(len(checks.content_words(f)) < MIN_FRAGMENT_WORDS for f in fragments):
        return Outcome(rejects=[reject(record, "trivial_fragment",
                                       f"a fragment has fewer than {MIN_FRAGMENT_WORDS} content words", result.text)])
    if checks.content_words(fragments[0]) == checks.content_words(fragments[1]):
        return Outcome(rejects=[reject(record, "duplicate_fragments", "", result.text)])
    return Outcome(kept=[record])


# -- 4. memory necessity: closed-book answer, then a judge ----------------------------------------

def build_closed_book(pair: dict[str, Any], cfg: RoleMemoConfig) -> ChatRequest:
    return request("closed_book", pair, cfg, "closed_book", question=pair["question"])


def parse_closed_book(pair: dict[str, Any], result: ChatResult | None, cfg: RoleMemoConfig) -> Outcome:
    if (failed := llm_failure(pair, result)) is not None:
        return failed
    return Outcome(kept=[{**pair, "closed_book_answer": str(result.parsed.get("answer", ""))}])


def build_necessity(pair: dict[str, Any], cfg: RoleMemoConfig) -> ChatRequest:
    return request("necessity_check", pair, cfg, "necessity_judge", question=pair["question"],
                   insight=pair["core_insight"], answer=pair["closed_book_answer"])


def parse_necessity(pair: dict[str, Any], result: ChatResult | None, cfg: RoleMemoConfig) -> Outcome:
    if (failed := llm_failure(pair, result)) is not None:
        return failed
    if not checks.needs_memory(result.parsed):
        return Outcome(rejects=[reject(pair, "answerable_without_memory", str(result.parsed.get("reason", "")),
                                       result.text)])
    return Outcome(kept=[pair])


# -- 5. dialogues, difficulty, safety -----------------------------------------------------------

def placements(pair: dict[str, Any], cfg: RoleMemoConfig) -> list[checks.Placement]:
    frags = pair["fragments"]
    rounds = checks.plan_rounds(len(frags), cfg.dialogue.rounds, _key(pair["id"], cfg.seed))
    return [checks.Placement(f["id"], f["text"], r) for f, r in zip(frags, rounds)]


def build_dialogue(pair: dict[str, Any], cfg: RoleMemoConfig) -> ChatRequest:
    spec = load_prompt(PROMPTS, "dialogue")
    topic = topics()[_key(pair["id"], "topic") % len(topics())]
    lines = "\n".join(f"- round {p.round + 1}: {p.text}" for p in placements(pair, cfg))
    return request("dialogues", pair, cfg, "dialogue", sized_arrays(spec.schema, cfg.dialogue.rounds, ("rounds",)),
                   persona=pair["persona"], topic=topic, rounds=cfg.dialogue.rounds, placements=lines)


def _rounds(parsed: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"user": str(r.get("user", "")), "assistant": str(r.get("assistant", ""))} for r in parsed.get("rounds", [])
    ]


def parse_dialogue(pair: dict[str, Any], result: ChatResult | None, cfg: RoleMemoConfig) -> Outcome:
    record = {"id": content_id("dlg", pair["id"]), "persona_id": pair["persona_id"]}
    if (failed := llm_failure(record, result)) is not None:
        return failed
    rounds = _rounds(result.parsed)
    if len(rounds) != cfg.dialogue.rounds:
        return Outcome(rejects=[reject(record, "wrong_round_count", f"{len(rounds)} rounds", result.text)])
    plan = placements(pair, cfg)
    inserted = (
        checks.insert_missing(rounds, plan, cfg.dialogue.fragment_min_overlap) if cfg.dialogue.insert_missing else 0
    )
    topic = topics()[_key(pair["id"], "topic") % len(topics())]
    record.update({"topic": topic, "fact_query": pair, "rounds": rounds, "inserted": inserted,
                   "placements": [{"fragment_id": p.fragment_id, "round": p.round, "text": p.text} for p in plan],
                   "tokens": count_tokens(render_rounds(rounds), cfg.tokenizer)})
    return Outcome(kept=[record])


def _plan_of(dialogue: dict[str, Any]) -> list[checks.Placement]:
    return [checks.Placement(p["fragment_id"], p["text"], int(p["round"])) for p in dialogue["placements"]]


def parse_difficulty(dialogue: dict[str, Any], _: ChatResult | None, cfg: RoleMemoConfig) -> Outcome:
    problems = checks.difficulty_problems(dialogue["rounds"], _plan_of(dialogue), cfg.dialogue.fragment_min_overlap,
                                          cfg.dialogue.echo_max_overlap)
    if problems:
        kind = problems[0].split(":", 1)[0]
        return Outcome(rejects=[reject(dialogue, kind, "; ".join(problems))])
    return Outcome(kept=[dialogue])


def _dialogue_texts(dialogue: dict[str, Any]) -> list[str]:
    return [t for r in dialogue["rounds"] for t in (r["user"], r["assistant"])]


def build_safety(dialogue: dict[str, Any], cfg: RoleMemoConfig) -> ChatRequest | None:
    flags = checks.safety_flags(_dialogue_texts(dialogue))
    if not flags or not cfg.safety.review_flagged:
        return None
    return request("safety_check", dialogue, cfg, "safety_review", flags=", ".join(flags),
                   transcript=render_rounds(dialogue["rounds"]))


def parse_safety(dialogue: dict[str, Any], result: ChatResult | None, cfg: RoleMemoConfig) -> Outcome:
    flags = checks.safety_flags(_dialogue_texts(dialogue))
    if not flags:
        return Outcome(kept=[{**dialogue, "safety": {"flags": [], "review": None}}])
    if result is None:  # flagged and reviews are off
        return Outcome(rejects=[reject(dialogue, "unsafe_patterns", ",".join(flags))])
    if (failed := llm_failure(dialogue, result)) is not None:
        return failed
    if result.parsed.get("safe") is not True:
        return Outcome(rejects=[reject(dialogue, "unsafe", str(result.parsed.get("reason", "")), result.text)])
    return Outcome(kept=[{**dialogue, "safety": {"flags": flags, "review": str(result.parsed.get("reason", ""))}}])


# -- distractor pool --------------------------------------------------------------------------

def distractor_seeds(cfg: RoleMemoConfig) -> list[dict[str, Any]]:
    names = topics()
    return [{"id": content_id("dseed", names[i % len(names)], i // len(names)), "persona_id": "",
             "topic": names[i % len(names)], "variant": i // len(names) + 1}
            for i in range(cfg.distractors.pool_size)]


def build_distractor(seed: dict[str, Any], cfg: RoleMemoConfig) -> ChatRequest:
    spec = load_prompt(PROMPTS, "distractor")
    return request(
        "distractors",
        seed,
        cfg,
        "distractor",
        sized_arrays(spec.schema, cfg.distractors.rounds, ("rounds",)),
        topic=seed["topic"],
        variant=seed["variant"],
        rounds=cfg.distractors.rounds,
    )


def parse_distractor(seed: dict[str, Any], result: ChatResult | None, cfg: RoleMemoConfig) -> Outcome:
    record = {"id": content_id("dis", seed["id"]), "persona_id": ""}
    if (failed := llm_failure(record, result)) is not None:
        return failed
    rounds = _rounds(result.parsed)
    if not rounds:
        return Outcome(rejects=[reject(record, "empty_dialogue", "", result.text)])
    record.update({"topic": seed["topic"], "rounds": rounds,
                   "tokens": count_tokens(render_rounds(rounds), cfg.tokenizer)})
    return Outcome(kept=[record])


STAGES: tuple[Stage, ...] = (
    Stage("insights", "personas", build_insights, parse_insights, "insights per persona, 4 types"),
    Stage("insight_check", "insights", build_insight_check, parse_insight_check, "4-criteria check, keep 4/4"),
    Stage("fact_queries", "insight_check", build_fact_query, parse_fact_query, "2 fragments + question + connector"),
    Stage("closed_book", "fact_queries", build_closed_book, parse_closed_book, "answer with no history"),
    Stage("necessity_check", "closed_book", build_necessity, parse_necessity, "keep pairs that need memory"),
    Stage("dialogues", "necessity_check", build_dialogue, parse_dialogue, "weave fragments into a dialogue"),
    Stage("difficulty_check", "dialogues", None, parse_difficulty, "each fragment in one user turn, no echo"),
    Stage("safety_check", "difficulty_check", build_safety, parse_safety, "patterns, LLM review of flagged"),
    Stage("distractors", "distractor_seeds", build_distractor, parse_distractor, "persona-free sessions"),
)
STAGE_BY_NAME = {s.name: s for s in STAGES}


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True)
