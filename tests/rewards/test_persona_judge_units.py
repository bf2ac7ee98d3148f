"""The persona judge reward: weighted scores, clipping, tolerant parsing (fuzzed), control flow
through a scripted engine (re-asks, exhausted retries, engine errors), and a real run on the
tiny hf model under constrained decoding."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemoray.llm.types import ChatRequest, ChatResult, Usage
from mnemoray.rewards.persona_judge import (
    PersonaJudgeItem,
    PersonaJudgeSettings,
    judge_request,
    judge_responses,
    score_judge_text,
    score_verdict,
)
from mnemoray.rewards.registry import REWARDS
from mnemoray.rewards.scoring import summarize

KEYS = ("factual_use", "logic_persona_fit", "value_safety")


def verdict(f, lp, v, reason="ok") -> dict:
    return {"reason": reason, "factual_use": f, "logic_persona_fit": lp, "value_safety": v}


@pytest.mark.parametrize("scores,expected", [
    ((1, 1, 1), 1.0),
    ((0, 0, 0), 0.0),
    ((1, 0.5, 0), 0.6),  # 0.3 + 0.3 + 0
    ((0.5, 0.25, 1), 0.4),  # 0.15 + 0.15 + 0.1
    ((0, 1, 0), 0.6),
])
def test_scores_are_combined_with_weights_03_06_01(scores, expected):
    out = score_verdict(verdict(*scores))
    assert not out.failed and out.score == pytest.approx(expected)
    assert out.extras["clipped"] == 0 and out.extras["reason"] == "ok"


def test_out_of_range_scores_are_clipped_and_counted():
    out = score_verdict(verdict(1.5, -0.2, 1))  # -> 1, 0, 1
    assert not out.failed and out.score == pytest.approx(0.4) and out.extras["clipped"] == 2
    assert (out.extras["factual_use"], out.extras["logic_persona_fit"]) == (1.0, 0.0)
    huge = score_verdict(verdict(10**400, 0.5, 0.5))  # an int beyond float range still clips
    assert huge.score == pytest.approx(0.3 + 0.3 + 0.05) and huge.extras["clipped"] == 1


@pytest.mark.parametrize("value,needle", [
    ([0.5, 0.5, 0.5], "not a JSON object"),
    ({"factual_use": 1, "logic_persona_fit": 1}, "'value_safety'"),
    (verdict(True, 1, 1), "'factual_use'"),
    (verdict(1, "high", 1), "'logic_persona_fit'"),
    (verdict(1, 1, float("nan")), "'value_safety'"),
    (verdict(float("inf"), 1, 1), "'factual_use'"),
])
def test_invalid_verdicts_are_flagged_failures(value, needle):
    out = score_verdict(value)
    assert out.failed and out.score == 0.0 and needle in out.error and "persona_judge" in out.error


def test_tolerant_parsing_of_wrapped_replies():
    text = 'Sure!\n```json\n{"reason": "fits", "factual_use": 0.5, "logic_persona_fit": 1, "value_safety": 1}\n```'
    assert score_judge_text(text).score == pytest.approx(0.85)
    thinking = '<think>hmm {"factual_use": 0}</think> {"factual_use": 1, "logic_persona_fit": 0, "value_safety": 0}'
    assert score_judge_text(thinking).score == pytest.approx(0.3)
    out = score_judge_text("I cannot judge this.")
    assert out.failed and out.extras["failure_kind"] == "parse"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
NUMBERS = st.integers(-10**30, 10**30) | st.floats(allow_nan=True, allow_infinity=True)


def check(out) -> None:
    assert 0.0 <= out.score <= 1.0
    assert out.failed == (out.error is not None)
    if out.failed:
        assert out.score == 0.0 and "persona_judge" in out.error


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fuzz_arbitrary_text_never_raises(text):
    check(score_judge_text(text))


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_fuzz_arbitrary_json_values_never_raise(value):
    check(score_verdict(value))
    check(score_judge_text(json.dumps(value)))


@settings(max_examples=300, deadline=None)
@given(NUMBERS, NUMBERS, NUMBERS)
def test_fuzz_numeric_verdicts_clip_exactly_the_out_of_range_values(f, lp, v):
    out = score_verdict(verdict(f, lp, v))
    check(out)
    finite = [x for x in (f, lp, v) if not (isinstance(x, float) and not math.isfinite(x))]
    if len(finite) < 3:
        assert out.failed
    else:
        assert not out.failed
        assert out.extras["clipped"] == sum(not 0 <= x <= 1 for x in (f, lp, v))


# ---------------------------------------------------------------- control flow with a scripted engine

class ScriptedJudge:
    """Replies per item from a script: `replies[item][attempt]`, a text or a request -> ChatResult callable."""

    name = "scripted-judge"
    model = "scripted"

    def __init__(self, replies: dict[int, list[str | Callable[[ChatRequest], ChatResult]]]):
        self.replies = replies
        self.batches: list[list[ChatRequest]] = []
        self.asked: dict[int, int] = {}

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        self.batches.append(list(requests))
        out = []
        for request in requests:
            key = request.metadata["item"]
            attempt = self.asked[key] = self.asked.get(key, -1) + 1
            script = self.replies[key]
            reply = script[min(attempt, len(script) - 1)]
            out.append(reply(request) if callable(reply) else ChatResult(id=request.id, text=reply,
                                                                         usage=Usage(prompt_tokens=5)))
        return out


def item(n: int) -> PersonaJudgeItem:
    return PersonaJudgeItem(persona=f"Persona {n}: a retired sailor who loves tea",
                            context=f"Earlier: the user said their dog is called Max ({n}).",
                            response=f"Ahoy! How is Max today? ({n})")


def http_error(request: ChatRequest) -> ChatResult:
    return ChatResult(id=request.id, error="HTTP 500 from the judge", error_kind="http")


def test_judge_responses_control_flow():
    valid = json.dumps(verdict(1, 0.5, 1))  # 0.3 + 0.3 + 0.1 = 0.7
    engine = ScriptedJudge({
        0: [valid],
        1: ["not json at all", valid],  # fixed on the first re-ask
        2: ["nope", "still nope", "{broken"],  # never valid: 1 ask + 2 re-asks, then a failure
        3: [json.dumps(verdict(1.7, 0.5, -3))],  # endpoint ignored the schema: clipped, counted
        4: [http_error],  # engine errors are not re-asked
    })
    results = judge_responses(engine, [item(i) for i in range(5)], max_retries=2)
    assert [len(b) for b in engine.batches] == [5, 2, 1]  # one batch for all, then only the bad ones
    assert [r.metadata["item"] for r in engine.batches[1]] == [1, 2]
    assert engine.batches[1][0].messages[-2].content == "not json at all"  # the re-ask shows the bad answer
    assert [r.failed for r in results] == [False, False, True, False, True]
    assert results[0].score == pytest.approx(0.7) and results[1].score == pytest.approx(0.7)
    assert results[2].score == 0.0 and "after 2 re-asks" in results[2].error and "persona_judge" in results[2].error
    assert results[2].extras["failure_kind"] in ("parse", "schema") and results[2].extras["raw"] == "{broken"
    assert results[3].score == pytest.approx(0.3 + 0.3 + 0.0) and results[3].extras["clipped"] == 2
    assert results[4].score == 0.0 and "HTTP 500" in results[4].error and results[4].extras["failure_kind"] == "http"
    assert summarize(results)["n_failed"] == 2 and summarize(results)["n_clipped"] == 2


def test_judge_requests_carry_the_inputs_and_a_schema_with_three_scores():
    request = judge_request(item(7), PersonaJudgeSettings(reason_chars=40, max_tokens=99, seed=3), index=7)
    user = request.messages[-1].content
    assert "retired sailor" in user and "dog is called Max" in user and "Ahoy!" in user
    assert set(KEYS) <= set(request.json_schema["required"])
    assert all(request.json_schema["properties"][k] == {"type": "number", "minimum": 0, "maximum": 1} for k in KEYS)
    assert request.json_schema["properties"]["reason"]["maxLength"] == 40
    assert (request.params.max_tokens, request.seed, request.metadata["item"]) == (99, 3, 7)


def test_an_engine_that_raises_fails_every_item_and_no_items_make_no_calls():
    class Crashing:
        name, model = "crashing", "x"

        def generate(self, requests):
            raise RuntimeError("engine process died")

    results = judge_responses(Crashing(), [item(0), item(1)])
    assert [r.failed for r in results] == [True, True] and "engine process died" in results[0].error
    silent = ScriptedJudge({})
    assert judge_responses(silent, []) == [] and silent.batches == []


def test_the_registry_exposes_the_judge_as_an_engine_reward():
    assert REWARDS.spec("persona-judge").needs_judge
    assert REWARDS.load("persona-judge") is judge_responses


# ---------------------------------------------------------------- the real tiny model

@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    from mnemoray.llm.hf_engine import HFEngine
    from mnemoray.llm.tiny import ensure_tiny

    torch.set_num_threads(1)
    path = ensure_tiny(tmp_path_factory.mktemp("tiny"))
    return HFEngine(str(path), batch_size=4)


def test_persona_judge_on_the_tiny_model_scores_every_item(tiny_engine):
    torch.set_num_threads(1)
    items = [item(i) for i in range(5)]
    results = judge_responses(tiny_engine, items, max_retries=1,
                              settings=PersonaJudgeSettings(reason_chars=16, max_tokens=128))
    assert len(results) == len(items)
    for out in results:
        # constrained decoding keeps the random model's JSON schema-valid, so every item is scored
        assert not out.failed, out.error
        assert 0.0 <= out.score <= 1.0
        assert all(0.0 <= out.extras[k] <= 1.0 for k in KEYS) and out.extras["clipped"] == 0
        expected = 0.3 * out.extras["factual_use"] + 0.6 * out.extras["logic_persona_fit"] \
            + 0.1 * out.extras["value_safety"]
        assert out.score == pytest.approx(expected)


def test_a_non_string_reason_costs_no_re_ask():
    engine = ScriptedJudge({0: [json.dumps(verdict(1, 1, 1, reason=5))]})
    (out,) = judge_responses(engine, [item(0)])
    assert not out.failed and out.score == pytest.approx(1.0) and out.extras["reason"] == ""
    assert len(engine.batches) == 1
