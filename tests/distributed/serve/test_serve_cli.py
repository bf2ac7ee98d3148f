"""`mnemoray serve llm` as a user runs it: its own process and local Ray, the hf engine on
the tiny model, answered over HTTP, stopped by SIGTERM (how `ray job stop` and container
runtimes stop it) with a clean exit rather than Ray's fatal-signal abort."""

from __future__ import annotations

import json

import jsonschema
import pytest

from mnemoray.llm.openai_engine import OpenAIEngine
from mnemoray.llm.types import ChatMessage, ChatRequest, SamplingParams

pytestmark = pytest.mark.integration

POINT = {
    "type": "object",
    "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 99}, "label": {"type": "string", "maxLength": 8}},
    "required": ["x", "label"],
    "additionalProperties": False,
}


def test_serve_llm_cli_answers_and_stops_on_sigterm(tiny_model, tmp_path, serve_llm_cli):
    ask = [
        ChatRequest(id="plain", messages=[ChatMessage(role="user", content="hi")], params=SamplingParams(max_tokens=6)),
        ChatRequest(id="json", messages=[ChatMessage(role="user", content="a point")],
                    params=SamplingParams(max_tokens=96), json_schema=POINT),
    ]
    with serve_llm_cli(["--model", str(tiny_model), "--model-id", "tiny"], tmp_path / "serve.log") as base:
        with OpenAIEngine("tiny", base_url=base, max_in_flight=2, max_retries=0, timeout_s=120) as client:
            plain, structured = client.generate(ask)
    assert plain.ok and 0 < plain.usage.completion_tokens <= 6, plain.error
    assert structured.ok, structured.error
    jsonschema.validate(json.loads(structured.text), POINT)


def test_serve_llm_cli_sigterm_while_starting_exits_cleanly(tiny_model, tmp_path, serve_llm_cli):
    """A stop request that lands while the app is still deploying (Serve is up, serve.run
    has not returned) finishes the start-up, then shuts down with exit 0."""
    log = tmp_path / "serve.log"
    with serve_llm_cli(["--model", str(tiny_model)], log, until_log="Started Serve"):
        pass  # SIGTERM now; the helper asserts exit 0
    assert "SIGTERM received" not in log.read_text()  # Ray's fatal-signal handler did not take it
