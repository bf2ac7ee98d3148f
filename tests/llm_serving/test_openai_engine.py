"""OpenAIEngine against the fault endpoint: nothing lost, nothing duplicated, every failure typed."""

from __future__ import annotations

import asyncio
import collections
import threading

import pytest
from serving_helpers import SMALL_SCHEMA

from mnemoray.llm.fault_server import MALFORMED_CONTENT as MALFORMED
from mnemoray.llm.fault_server import FaultConfig
from mnemoray.llm.openai_engine import OpenAIEngine
from mnemoray.llm.structured import generate_structured
from mnemoray.llm.types import ChatMessage, ChatRequest, Engine

TYPED_KINDS = {"http", "timeout", "connection", "protocol"}
MIXED_20 = dict(fault_rate=0.2, retry_after_ms=5, seed=7)


def _requests(n: int, schema: dict | None = None, tag: str = "") -> list[ChatRequest]:
    return [
        ChatRequest(
            id=f"{tag}q{i}", messages=[ChatMessage(role="user", content=f"question {tag}{i}")], json_schema=schema
        )
        for i in range(n)
    ]


def test_engine_satisfies_the_engine_protocol():
    assert isinstance(OpenAIEngine("m", base_url="http://127.0.0.1:9/v1"), Engine)


def test_twenty_percent_faults_with_retries_lose_and_duplicate_nothing(fault_server):
    server = fault_server(FaultConfig(**MIXED_20))
    requests = _requests(300)
    with OpenAIEngine("fault-model", base_url=server.url, max_in_flight=32, max_retries=6, timeout_s=10) as engine:
        results = engine.generate(requests)
    assert [r.id for r in results] == [q.id for q in requests]
    malformed = 0
    for request, result in zip(requests, results, strict=True):
        if not result.ok:
            assert result.error_kind in TYPED_KINDS and result.error
        elif result.text == MALFORMED:  # a 200 with broken content: not a transport fault
            malformed += 1
        else:  # an answer belongs to its own request, not a neighbour's
            assert result.text == f"echo: {request.messages[0].content}"
            assert result.usage.prompt_tokens == 2
    outcomes = server.counters.snapshot()["outcomes"]
    assert malformed == outcomes["malformed"] > 0
    # Transport faults were retried, and every retry was of a request we sent.
    assert outcomes["429"] + outcomes["500"] + outcomes["503"] + outcomes["drop"] > 0
    assert set(server.counters.attempts_by_id) == {q.id for q in requests}
    # The engine's attempt count matches what the server saw, request by request.
    assert {r.id: r.attempts for r in results} == dict(server.counters.attempts_by_id)
    assert max(r.attempts for r in results) > 1


def test_without_retries_each_fault_is_a_typed_failure_of_its_kind(fault_server):
    server = fault_server(FaultConfig(**MIXED_20, rate_bad_body=0.05))
    requests = _requests(400, tag="n")
    with OpenAIEngine("fault-model", base_url=server.url, max_in_flight=32, max_retries=0, timeout_s=10) as engine:
        results = engine.generate(requests)
    assert len(results) == len(requests) and len({r.id for r in results}) == len(requests)
    kinds = collections.Counter(r.error_kind for r in results)
    outcomes = server.counters.snapshot()["outcomes"]
    assert kinds["http"] == outcomes.get("429", 0) + outcomes.get("500", 0) + outcomes.get("503", 0) > 0
    assert kinds["connection"] == outcomes.get("drop", 0) > 0
    assert kinds["protocol"] == outcomes.get("bad_body", 0) > 0
    assert all(r.attempts == 1 for r in results)
    bad_bodies = [r for r in results if r.error_kind == "protocol"]
    assert all(r.text for r in bad_bodies)  # the raw body is kept for inspection


def test_malformed_structured_output_is_kept_with_its_reason(fault_server):
    server = fault_server(FaultConfig(**MIXED_20, rate_schema_violation=0.05))
    requests = _requests(300, schema=SMALL_SCHEMA, tag="s")
    with OpenAIEngine("fault-model", base_url=server.url, max_in_flight=32, max_retries=6, timeout_s=10) as engine:
        results = generate_structured(engine, requests, max_retries=0)
    assert [r.id for r in results] == [q.id for q in requests]
    kinds = collections.Counter(r.error_kind for r in results)
    outcomes = server.counters.snapshot()["outcomes"]
    # Truncated JSON may be repaired into a schema-violating object, so the two kinds
    # are counted together; every bad answer is accounted for, none is dropped.
    assert outcomes["malformed"] > 0 and outcomes["schema_violation"] > 0
    assert kinds["parse"] + kinds["schema"] == outcomes["malformed"] + outcomes["schema_violation"]
    for result in results:
        if result.error_kind in ("parse", "schema"):
            assert result.text and result.error and result.parsed is None
        elif result.ok:
            assert set(result.parsed) == {"ok", "mood"}


def test_structured_reasks_recover_malformed_output(fault_server):
    server = fault_server(FaultConfig(rate_malformed=0.3, seed=3))
    requests = _requests(60, schema=SMALL_SCHEMA, tag="r")
    with OpenAIEngine("fault-model", base_url=server.url, max_in_flight=16, max_retries=2, timeout_s=10) as engine:
        results = generate_structured(engine, requests, max_retries=10)
    assert server.counters.snapshot()["outcomes"]["malformed"] > 0
    assert all(r.ok and r.parsed == {"ok": True, "mood": "calm"} for r in results)


def test_timeouts_are_typed_and_retried_the_configured_number_of_times(fault_server):
    server = fault_server(FaultConfig(latency_ms=2000))
    with OpenAIEngine("fault-model", base_url=server.url, max_in_flight=4, max_retries=1, timeout_s=0.2) as engine:
        results = engine.generate(_requests(3, tag="t"))
    assert [r.error_kind for r in results] == ["timeout"] * 3
    assert [r.attempts for r in results] == [2, 2, 2]


def test_connection_refused_is_a_typed_failure():
    with OpenAIEngine("m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2) as engine:
        (result,) = engine.generate(_requests(1))
    assert result.error_kind == "connection"


def test_in_flight_never_exceeds_the_bound(fault_server):
    server = fault_server(FaultConfig(latency_ms=30))
    with OpenAIEngine("fault-model", base_url=server.url, max_in_flight=5, max_retries=0) as engine:
        results = engine.generate(_requests(40, tag="b"))
        client_side = engine.inflight_stats()
    assert all(r.ok for r in results)
    server_side = server.inflight_stats()
    assert server_side.peak <= 5 and client_side.peak <= 5
    assert server_side.peak >= 2  # requests did overlap
    assert client_side.completed == server_side.completed == 40


def test_generate_works_inside_a_running_loop_and_from_threads(fault_server):
    server = fault_server(FaultConfig())
    engine = OpenAIEngine("fault-model", base_url=server.url, max_in_flight=8)

    async def called_from_async_code():
        return engine.generate(_requests(5, tag="a"))  # blocking call while a loop runs

    from_loop = asyncio.run(called_from_async_code())
    from_threads: dict[int, list] = {}

    def worker(k: int) -> None:
        from_threads[k] = engine.generate(_requests(5, tag=f"w{k}"))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    engine.close()
    assert all(r.ok for r in from_loop) and len(from_loop) == 5
    for k in range(3):
        assert [r.text for r in from_threads[k]] == [f"echo: question w{k}{i}" for i in range(5)]


def test_agenerate_runs_on_the_callers_loop(fault_server):
    server = fault_server(FaultConfig())
    engine = OpenAIEngine("fault-model", base_url=server.url, max_in_flight=8)

    async def main():
        try:
            return await engine.agenerate(_requests(6, tag="c"))
        finally:
            await engine.aclose()

    results = asyncio.run(main())
    assert [r.text for r in results] == [f"echo: question c{i}" for i in range(6)]


def test_completion_body_carries_sampling_fields():
    from mnemoray.llm.openai_engine import completion_body
    from mnemoray.llm.types import SamplingParams

    request = ChatRequest(
        messages=[ChatMessage(role="user", content="x")],
        params=SamplingParams(temperature=0.5, top_p=0.9, max_tokens=7, stop=["\n"]),
        seed=11,
        json_schema=SMALL_SCHEMA,
    )
    body = completion_body("m", request)
    assert body["seed"] == 11 and body["stop"] == ["\n"] and body["max_tokens"] == 7
    assert body["response_format"]["json_schema"]["schema"] == SMALL_SCHEMA


@pytest.mark.parametrize("bad", [0, -3])
def test_max_in_flight_must_be_positive(bad):
    with pytest.raises(ValueError):
        OpenAIEngine("m", max_in_flight=bad)


def test_engine_pickles_as_settings_and_works_after(fault_server):
    import pickle

    server = fault_server(FaultConfig())
    engine = OpenAIEngine("fault-model", base_url=server.url, max_in_flight=3, max_retries=1)
    engine.generate(_requests(2, tag="p"))  # live loop, clients and locks inside
    copy = pickle.loads(pickle.dumps(engine))
    engine.close()
    assert (copy.max_in_flight, copy.max_retries, copy.base_url) == (3, 1, server.url)
    with copy:
        assert [r.text for r in copy.generate(_requests(2, tag="p"))] == ["echo: question p0", "echo: question p1"]
