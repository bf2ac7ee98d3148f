"""RoleMemo's persona judge as a reward: an LLM scores a reply in [0, 1] (docs/ARCHITECTURE.md, "Metrics").

The judge gives three scores in [0, 1] — factual_use, logic_persona_fit, value_safety —
combined with weights 0.3 / 0.6 / 0.1. Guided decoding uses the prompt's schema (ranges
included) where the engine can; the reply is still parsed and validated leniently
(`PersonaVerdict`: finite numbers, any range), and an out-of-range score from an endpoint
that ignored the schema is clipped into [0, 1] and counted in `extras["clipped"]`.
Once the engine's structured retries are exhausted (or the engine fails), the item scores
0 WITH `error` set and the reason kept, so it is counted as a failure, never a silent 0.

Unlike the verl-signature rewards, this one needs an engine: call
`judge_responses(engine, items, max_retries)` (registered as "persona-judge" with
`needs_judge=True`); reward actors hold the engine.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from mnemoray.llm.structured import extract_json, generate_structured
from mnemoray.llm.types import ChatRequest, Engine, SamplingParams
from mnemoray.memory.prompts import clamp_schema, fit, load_prompt
from mnemoray.rewards.scoring import RewardResult, failure

JUDGE = "persona_judge"
WEIGHTS: dict[str, float] = {"factual_use": 0.3, "logic_persona_fit": 0.6, "value_safety": 0.1}

Score = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class PersonaVerdict(BaseModel):
    """What a judge reply must parse into; the [0, 1] range is enforced by clipping, not here."""

    model_config = ConfigDict(extra="ignore")
    reason: Any = ""  # not scored: a non-string reason must not cost a re-ask
    factual_use: Score
    logic_persona_fit: Score
    value_safety: Score


@dataclass(frozen=True)
class PersonaJudgeItem:
    persona: str  # the persona profile as text
    context: str  # what the reply should draw on: retrieved memories, the conversation so far
    response: str  # the rollout's reply to judge


@dataclass(frozen=True)
class PersonaJudgeSettings:
    reason_chars: int = 200  # maxLength of the reason (small models must finish the JSON)
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None
    persona_chars: int = 2000  # prompt budgets; the context keeps its end (recent turns matter most)
    context_chars: int = 6000
    response_chars: int = 3000


def from_reward_item(item: Any) -> PersonaJudgeItem:
    """A GRPO reward item as a judge item: persona and context come from its extra_info."""
    info = item.extra_info or {}
    persona = info.get("persona")
    if not isinstance(persona, str):
        raise ValueError(f"reward item {item.id}: extra_info['persona'] (the profile as text) is required")
    return PersonaJudgeItem(persona=persona, context=str(info.get("context") or ""), response=item.solution_str)


def judge_request(item: PersonaJudgeItem, settings: PersonaJudgeSettings | None = None,
                  index: int | None = None) -> ChatRequest:
    """The judge call for one item: prompt files resources/prompts/rewards/persona_judge.*."""
    s = settings or PersonaJudgeSettings()
    spec = load_prompt("rewards", JUDGE)
    messages = spec.messages(persona=item.persona[: s.persona_chars] or "(no profile)",
                             context=fit(item.context, s.context_chars) or "(none)",
                             response=item.response[: s.response_chars])
    return ChatRequest(messages=messages, json_schema=clamp_schema(spec.schema, s.reason_chars, 1),
                       params=SamplingParams(temperature=s.temperature, max_tokens=s.max_tokens), seed=s.seed,
                       metadata={"call": JUDGE, "item": index})


def score_verdict(value: Any) -> RewardResult:
    """The combined score of a parsed verdict (dict or PersonaVerdict); never raises.

    Each of the three scores must be a finite number (not a bool); values outside [0, 1]
    are clipped and counted. Anything else is a failure (score 0, `error` set).
    """
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if not isinstance(value, dict):
        return failure(JUDGE, f"verdict is not a JSON object: {type(value).__name__}", {"failure_kind": "schema"})
    scores: dict[str, float] = {}
    clipped = 0
    for key in WEIGHTS:
        raw = value.get(key)
        # an int too large for a float is still a number out of range: bound it so it clips
        number = float(max(-1, min(int(raw), 2))) if isinstance(raw, numbers.Integral) else raw
        if isinstance(raw, bool) or not isinstance(raw, numbers.Real) or not math.isfinite(float(number)):
            return failure(JUDGE, f"'{key}' is not a finite number: {raw!r:.100}", {"failure_kind": "schema"})
        scores[key] = min(max(float(number), 0.0), 1.0)
        clipped += scores[key] != float(number)
    combined = min(max(sum(WEIGHTS[k] * v for k, v in scores.items()), 0.0), 1.0)
    reason = value.get("reason")
    return RewardResult(combined, {**scores, "clipped": clipped, "reason": reason if isinstance(reason, str) else ""})


def score_judge_text(text: str) -> RewardResult:
    """Tolerant parse of a raw judge reply (prose, fences, <think> blocks) then `score_verdict`; never raises."""
    try:
        value = extract_json(text)
    except Exception as err:  # noqa: BLE001 - any unreadable reply is a counted failure
        return failure(JUDGE, f"unparsable reply: {err}", {"failure_kind": "parse"})
    return score_verdict(value)


def judge_responses(engine: Engine, items: Sequence[PersonaJudgeItem], max_retries: int = 2,
                    settings: PersonaJudgeSettings | None = None) -> list[RewardResult]:
    """One RewardResult per item, in order: all items go through the engine as one batch.

    Bad replies are re-asked up to `max_retries` times (`generate_structured`); what still
    fails, and every item of a batch the engine raised on, scores 0 with `error` set.
    """
    requests = [judge_request(item, settings, i) for i, item in enumerate(items)]
    if not requests:
        return []
    try:
        results = generate_structured(engine, requests, max_retries=max_retries, model=PersonaVerdict)
    except Exception as err:  # noqa: BLE001 - an engine crash fails the batch's items, counted
        reason = f"engine raised {type(err).__name__}: {err}"
        return [failure(JUDGE, reason, {"failure_kind": "engine"}) for _ in requests]
    out: list[RewardResult] = []
    for result in results:
        if not result.ok:
            out.append(failure(JUDGE, f"no valid verdict after {max_retries} re-asks ({result.error_kind}): "
                               f"{result.error}", {"failure_kind": result.error_kind or "error",
                                                   "raw": result.text[:2000]}))
        else:
            out.append(score_verdict(result.parsed))
    return out


__all__ = ["JUDGE", "WEIGHTS", "PersonaJudgeItem", "PersonaJudgeSettings", "PersonaVerdict", "from_reward_item",
           "judge_request", "judge_responses", "score_judge_text", "score_verdict"]
