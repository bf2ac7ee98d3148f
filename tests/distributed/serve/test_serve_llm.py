"""The Serve endpoint on a real local Ray (`serve.run`, not local testing mode: @serve.batch
does not work there), called through the official client and OpenAIEngine."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from typer.testing import CliRunner

from http_helpers import SMALL_SCHEMA, post_json
from mnemoray.llm.openai_engine import OpenAIEngine
from mnemoray.llm.types import ChatMessage, ChatRequest, SamplingParams
from mnemoray.ports import free_port

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def llm_url(ray_local, tiny_model):
    from ray import serve

    from mnemoray.distributed.serve.llm_app import LLMAppConfig, run_llm_app

    cfg = LLMAppConfig(model=str(tiny_model), model_id="tiny", max_batch_size=8, batch_wait_timeout_s=0.05)
    url = run_llm_app(cfg, port=free_port())
    yield url
    serve.shutdown()


def _ask(n: int, tag: str, max_tokens: int = 12, schema: dict | None = None) -> list[ChatRequest]:
    return [
        ChatRequest(id=f"{tag}{i}", messages=[ChatMessage(role="user", content=f"tell me about {tag} {i}")],
                    params=SamplingParams(max_tokens=max_tokens), json_schema=schema)
        for i in range(n)
    ]


def test_models_lists_the_served_model(llm_url):
    client = openai.OpenAI(base_url=llm_url, api_key="unused", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_chat_completions_through_openai_engine_are_batched(llm_url):
    from ray import serve

    requests = _ask(16, "batch")
    with OpenAIEngine("tiny", base_url=llm_url, max_in_flight=16, max_retries=0, timeout_s=120) as engine:
        results = engine.generate(requests)
    assert [r.id for r in results] == [q.id for q in requests]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert all(0 < r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0 for r in results)
    stats = serve.get_deployment_handle("HFChatModel", app_name="llm").batch_stats.remote().result()
    assert stats["requests"] >= 16
    assert stats["max_batch"] > 1  # @serve.batch grouped concurrent requests


def test_response_format_comes_back_schema_valid(llm_url):
    requests = _ask(4, "json", max_tokens=64, schema=SMALL_SCHEMA)
    with OpenAIEngine("tiny", base_url=llm_url, max_in_flight=4, max_retries=0, timeout_s=120) as engine:
        results = engine.generate(requests)
    for result in results:
        assert result.ok, result.error
        jsonschema.validate(json.loads(result.text), SMALL_SCHEMA)


def test_unknown_model_and_unsupported_features_are_refused(llm_url):
    with OpenAIEngine("not-served", base_url=llm_url, max_retries=0, timeout_s=60) as engine:
        (result,) = engine.generate(_ask(1, "x"))
    assert result.error_kind == "http" and "404" in result.error
    status, body = post_json(f"{llm_url}/chat/completions",
                             {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert status == 400 and "stream" in body["error"]["message"]
    status, body = post_json(f"{llm_url}/chat/completions", {"model": "tiny", "messages": []})
    assert status == 400


def test_serve_cli_refuses_bad_input_before_starting_ray(tmp_path):
    from mnemoray.cli.main import app  # also checks that `serve` is registered

    runner = CliRunner()
    missing = runner.invoke(app, ["serve", "llm", "--model", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such model folder" in missing.output
    vllm = runner.invoke(app, ["serve", "llm", "--model", str(tmp_path), "--engine", "vllm"])
    assert vllm.exit_code == 2 and "needs the 'vllm' package" in vllm.output
    for kwargs, says in (('{"max_model_len": ', "invalid JSON"), ("[2048]", "expected a JSON object, got list")):
        bad = runner.invoke(app, ["serve", "llm", "--model", "m", "--engine", "vllm", "--engine-kwargs", kwargs])
        assert bad.exit_code == 2 and f"--engine-kwargs: {says}" in bad.output
    hf = runner.invoke(app, ["serve", "llm", "--model", str(tmp_path), "--engine-kwargs", "{}"])
    assert hf.exit_code == 2 and "--engine-kwargs does not apply to --engine hf" in hf.output
