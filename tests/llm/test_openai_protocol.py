"""OpenAI wire format <-> engine contract, without Ray or HTTP."""

from __future__ import annotations

import pytest

from http_helpers import SMALL_SCHEMA
from mnemoray.llm.openai_protocol import ProtocolError, to_chat_request, to_completion
from mnemoray.llm.types import ChatResult, Usage


def test_request_fields_map_onto_the_engine_request():
    model, request = to_chat_request({
        "model": "tiny",
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}],
        "temperature": 0.7, "top_p": 0.5, "max_completion_tokens": 9, "stop": "END", "seed": 4,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SMALL_SCHEMA}},
    }, request_id="r1")
    assert model == "tiny" and request.id == "r1"
    assert [m.content for m in request.messages] == ["be brief", "hi there"]
    assert (request.params.temperature, request.params.top_p, request.params.max_tokens) == (0.7, 0.5, 9)
    assert request.params.stop == ["END"] and request.seed == 4 and request.json_schema == SMALL_SCHEMA


@pytest.mark.parametrize(("fmt", "schema"), [
    (None, None), ({"type": "text"}, None), ({"type": "json_object"}, {"type": "object"}),
])
def test_response_format_variants(fmt, schema):
    _, request = to_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": fmt})
    assert request.json_schema == schema


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": []},
    {"messages": [{"role": "user", "content": "x"}]},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": -1},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "grammar"}},
])
def test_unsupported_or_invalid_requests_are_refused(body):
    with pytest.raises(ProtocolError) as err:
        to_chat_request(body)
    assert err.value.status == 400


def test_completion_reports_usage_and_length_finish():
    result = ChatResult(id="a", text="hello", usage=Usage(prompt_tokens=3, completion_tokens=8))
    body = to_completion("tiny", result, max_tokens=8)
    assert body["choices"][0]["message"]["content"] == "hello"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
