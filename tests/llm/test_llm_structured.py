"""Structured output: tolerant parsing, validation, retry with feedback, typed failures."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from fakes import ScriptedEngine
from mnemoray.llm.hf_engine import HFEngine
from mnemoray.llm.structured import ParseError, SchemaError, extract_json, generate_structured, validate
from mnemoray.llm.types import ChatMessage, ChatRequest, ChatResult, SamplingParams

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.mark.parametrize("text, expected", [
    ('{"name": "Ann", "age": 3}', {"name": "Ann", "age": 3}),
    ('Sure! Here it is:\n```json\n{"name": "Ann", "age": 3}\n```\nAnything else?', {"name": "Ann", "age": 3}),
    ('<think>The user wants {"name": "x"}... ok.</think>\n{"name": "Ann", "age": 3}', {"name": "Ann", "age": 3}),
    ('</think>{"a": 1}', {"a": 1}),
    ('The answer is {"a": [1, 2]} and that is all. {', {"a": [1, 2]}),
    ('[{"a": 1}, {"a": 2}] trailing', [{"a": 1}, {"a": 2}]),
    ('{"a": "tab\there"}', {"a": "tab\there"}),
    ("{'a': 1, 'b': True,}", {"a": 1, "b": True}),
    ('{"a": 1, "b": [1, 2', {"a": 1, "b": [1, 2]}),
])
def test_extract_json_recovers_the_value(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "no json at all", "<think>still thinking {\"a\": 1}"])
def test_extract_json_rejects_text_without_json(text):
    with pytest.raises(ParseError):
        extract_json(text)


class Person(BaseModel):
    name: str
    age: int = Field(ge=0)


def test_validate_against_schema_and_pydantic():
    assert validate({"name": "A", "age": 1}, SCHEMA) == {"name": "A", "age": 1}
    with pytest.raises(SchemaError, match="age"):
        validate({"name": "A", "age": "one"}, SCHEMA)
    assert validate({"name": "A", "age": 1}, Person) == Person(name="A", age=1)
    with pytest.raises(SchemaError, match="age"):
        validate({"name": "A", "age": -1}, Person)
    with pytest.raises(SchemaError, match="schema itself"):
        validate({}, {"type": 12})


def ask(topic: str, schema=SCHEMA, rid: str | None = None) -> ChatRequest:
    return ChatRequest(id=rid or topic, messages=[ChatMessage(role="user", content=topic)],
                       params=SamplingParams(max_tokens=32), json_schema=schema)


def test_wrapped_json_passes_first_time():
    engine = ScriptedEngine({
        "fenced": ['```json\n{"name": "A", "age": 1}\n```'],
        "think": ['<think>hmm</think>{"name": "B", "age": 2} hope this helps'],
    })
    results = generate_structured(engine, [ask("fenced"), ask("think")])
    assert [r.parsed for r in results] == [{"name": "A", "age": 1}, {"name": "B", "age": 2}]
    assert all(r.ok and r.attempts == 1 for r in results)
    assert len(engine.calls) == 1


def test_invalid_then_valid_is_retried_with_the_reason():
    engine = ScriptedEngine({
        "retry": ['{"name": "A", "age": "old"}', '{"name": "A", "age": 40}'],
        "fine": ['{"name": "C", "age": 3}'],
    })
    results = generate_structured(engine, [ask("retry"), ask("fine")], max_retries=2)
    assert [r.id for r in results] == ["retry", "fine"]
    assert results[0].ok and results[0].parsed == {"name": "A", "age": 40}
    assert results[0].attempts == 2
    assert results[0].usage.completion_tokens == 10 and results[0].latency_s == pytest.approx(1.0)
    assert [len(batch) for batch in engine.calls] == [2, 1]  # only the bad one went back
    retried = engine.calls[1][0]
    assert retried.id == "retry"
    assert retried.messages[1].role == "assistant" and retried.messages[1].content == '{"name": "A", "age": "old"}'
    assert "age" in retried.messages[2].content and "schema" in retried.messages[2].content


def test_invalid_forever_becomes_a_typed_failure_with_raw_text():
    engine = ScriptedEngine({
        "prose": ["I cannot answer in JSON, sorry."],
        "wrong": ['{"name": 5}'],
        "ok": ['{"name": "D", "age": 4}'],
    })
    results = generate_structured(engine, [ask("prose"), ask("wrong"), ask("ok")], max_retries=2)
    assert [r.id for r in results] == ["prose", "wrong", "ok"]
    prose, wrong, ok = results
    assert prose.error_kind == "parse" and prose.text == "I cannot answer in JSON, sorry." and prose.parsed is None
    assert wrong.error_kind == "schema" and "age" in wrong.error and wrong.text == '{"name": 5}'
    assert prose.attempts == wrong.attempts == 3
    assert ok.ok and ok.attempts == 1
    assert len(engine.calls) == 3


def test_requests_without_schema_pass_through_and_pydantic_models_parse():
    engine = ScriptedEngine({"free": ["just text"], "person": ['{"name": "E", "age": 5}']})
    free = ChatRequest(id="free", messages=[ChatMessage(role="user", content="free")])
    results = generate_structured(engine, [free, ask("person", schema=None)], model=Person)
    assert results[0].error_kind == "parse" and results[0].text == "just text"  # `model` applies its schema
    assert results[1].parsed == Person(name="E", age=5)
    plain = generate_structured(engine, [free])
    assert plain[0].ok and plain[0].text == "just text" and plain[0].parsed is None


def test_engine_errors_are_not_reparsed():
    class Failing(ScriptedEngine):
        def generate(self, requests):
            self.calls.append(requests)
            return [ChatResult(id=r.id, error="HTTP 503", error_kind="http") for r in requests]

    engine = Failing({})
    results = generate_structured(engine, [ask("x")], max_retries=3)
    assert results[0].error_kind == "http" and len(engine.calls) == 1


def test_short_engine_answer_does_not_drop_requests():
    class Lossy(ScriptedEngine):
        def generate(self, requests):
            return []

    results = generate_structured(Lossy({}), [ask("a"), ask("b")], max_retries=0)
    assert [r.id for r in results] == ["a", "b"] and all(r.error_kind == "engine" for r in results)


def test_real_engine_structured_pipeline(engine: HFEngine):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                               "visits": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["city", "visits"]}
    requests = [ask(f"where did person {i} go?", schema=schema, rid=f"q{i}") for i in range(4)]
    requests = [r.model_copy(update={"params": SamplingParams(max_tokens=60)}) for r in requests]
    results = generate_structured(engine, requests)
    assert [r.id for r in results] == ["q0", "q1", "q2", "q3"]
    for r in results:
        assert r.ok, (r.error, r.text)
        assert set(r.parsed) == {"city", "visits"} and 0 <= r.parsed["visits"] <= 99


def test_broken_schema_is_reported_without_retrying():
    engine = ScriptedEngine({"x": ['{"a": 1}']})
    (result,) = generate_structured(engine, [ask("x", schema={"type": 12})], max_retries=3)
    assert result.error_kind == "schema" and "schema itself" in result.error and result.text == '{"a": 1}'
    assert len(engine.calls) == 1
