"""The fault endpoint itself: valid instances in zero-fault mode, each fault as configured."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import jsonschema
import pytest

from http_helpers import SMALL_SCHEMA, get_json, post_json
from mnemoray import records
from mnemoray.llm.fault_server import FaultConfig
from mnemoray.llm.schema_instance import UnsupportedSchema, instance_for
from mnemoray.ports import free_port

HAND_WRITTEN = [
    SMALL_SCHEMA,
    {"type": "array", "items": {"type": "integer", "minimum": 5, "maximum": 7}, "minItems": 3, "maxItems": 4},
    {"type": "string", "minLength": 12, "maxLength": 14},
    {"type": "string", "maxLength": 2},
    {"type": "number", "exclusiveMinimum": 10, "exclusiveMaximum": 11},
    {"type": "integer", "minimum": 7, "multipleOf": 5},
    {"type": ["null", "string"], "format": "date-time"},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
               {"properties": {"b": {"const": 3}}, "required": ["b"]}]},
    {"$defs": {"Node": {"type": "object", "properties": {"v": {"type": "integer"}}, "required": ["v"]}},
     "type": "object", "properties": {"nodes": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
     "required": ["nodes"]},
    {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"]}]},
    {"type": "object", "minProperties": 2, "additionalProperties": {"type": "integer"}},
]


def _record_models() -> dict[str, type]:
    """Every pydantic model the records module defines (not the ones it imports)."""
    from pydantic import BaseModel

    found = {n: getattr(records, n) for n in dir(records)}
    return {n: c for n, c in found.items()
            if isinstance(c, type) and issubclass(c, BaseModel) and c.__module__ == records.__name__}


def _record_schemas() -> list[dict]:
    return [c.model_json_schema() for c in _record_models().values()]


@pytest.mark.parametrize("schema", HAND_WRITTEN + _record_schemas())
def test_instance_is_valid_for_schema(schema):
    value = instance_for(schema)
    jsonschema.validate(value, schema)
    assert instance_for(schema) == value  # deterministic


@pytest.mark.parametrize("name", sorted(_record_models()))
def test_every_record_model_gets_an_instance_the_model_itself_accepts(name):
    model = _record_models()[name]
    value = instance_for(model.model_json_schema())
    assert model.model_validate(value).model_dump(mode="json", exclude_unset=True).keys() <= value.keys()


def test_the_core_records_are_among_those_covered():
    assert {"Turn", "Session", "History", "Persona", "EvalSample", "MemoryItem"} <= set(_record_models())


def test_unsupported_keywords_are_refused_not_faked():
    with pytest.raises(UnsupportedSchema):
        instance_for({"type": "string", "pattern": "^[a-z]+$"})


def test_zero_fault_answers_schema_valid_json_and_plain_text(fault_server):
    server = fault_server(FaultConfig())
    base = server.url
    assert get_json(f"{base}/models")["data"][0]["id"] == "fault-model"
    for schema in HAND_WRITTEN[:4] + _record_schemas()[:3]:
        body = {"model": "fault-model", "messages": [{"role": "user", "content": "go"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}
        status, answer = post_json(f"{base}/chat/completions", body)
        assert status == 200
        jsonschema.validate(json.loads(answer["choices"][0]["message"]["content"]), schema)
    status, answer = post_json(
        f"{base}/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "ping 42"}]}
    )
    assert status == 200 and answer["choices"][0]["message"]["content"] == "echo: ping 42"
    assert answer["usage"]["prompt_tokens"] == 2
    assert server.counters.snapshot()["outcomes"] == {"ok": 8}


def test_unsatisfiable_schema_is_a_client_error(fault_server):
    server = fault_server(FaultConfig())
    schema = {"type": "string", "pattern": "^x$"}
    body = {"model": "m", "messages": [{"role": "user", "content": "go"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}
    status, answer = post_json(f"{server.url}/chat/completions", body)
    assert status == 400 and "instance" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("config", "status"),
    [
        (FaultConfig(rate_429=1.0, retry_after_ms=7), 429),
        (FaultConfig(rate_500=1.0), 500),
        (FaultConfig(rate_503=1.0), 503),
    ],
)
def test_injected_status_codes_have_openai_error_bodies(fault_server, config, status):
    server = fault_server(config)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    got, answer = post_json(f"{server.url}/chat/completions", body)
    assert got == status and answer["error"]["code"] == status


def test_fault_rate_is_spread_over_five_kinds():
    rates = FaultConfig(fault_rate=0.2).rates()
    assert {k: round(v, 6) for k, v in rates.items() if v} == {
        "429": 0.04, "500": 0.04, "503": 0.04, "drop": 0.04, "malformed": 0.04,
    }
    with pytest.raises(ValueError):
        FaultConfig(fault_rate=0.9, rate_500=0.5).rates()



def test_module_cli_serves_until_terminated():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnemoray.llm.fault_server", "--port", str(port), "--rate-500", "1.0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        models = None
        for _ in range(100):  # bounded: about 20 s
            try:
                models = get_json(f"http://127.0.0.1:{port}/v1/models")
                break
            except OSError:
                time.sleep(0.2)
        assert models is not None, "fault server did not come up"
        status, _ = post_json(f"http://127.0.0.1:{port}/v1/chat/completions",
                              {"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert status == 500
        assert get_json(f"http://127.0.0.1:{port}/_stats")["outcomes"] == {"500": 1}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
