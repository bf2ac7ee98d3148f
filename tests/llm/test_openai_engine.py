"""OpenAIEngine against the fault endpoint: nothing lost, nothing duplicated, every failure typed."""

from __future__ import annotations

import asyncio
import collections
import threading
import time

import pytest
from aiohttp import web

from http_helpers import SMALL_SCHEMA
from mnemoray.config.llm import EngineConfig
from mnemoray.llm.fault_server import MALFORMED_CONTENT as MALFORMED
from mnemoray.llm.fault_server import FaultConfig
from mnemoray.llm.openai_engine import REQUEST_ID_HEADER, OpenAIEngine
from mnemoray.llm.openai_transport import retry_after_s
from mnemoray.llm.registry import build_engine
from mnemoray.llm.structured import generate_structured
from mnemoray.llm.types import ChatMessage, ChatRequest

TYPED_KINDS = {"http", "timeout", "connection", "protocol"}
MIXED_20 = dict(fault_rate=0.2, retry_after_ms=5, seed=7)


@pytest.fixture(params=["sdk", "aiohttp"])
def transport(request) -> str:
    """Every engine test runs on both transports: they must behave the same."""
    return request.param


def _requests(n: int, schema: dict | None = None, tag: str = "") -> list[ChatRequest]:
    return [
        ChatRequest(
            id=f"{tag}q{i}", messages=[ChatMessage(role="user", content=f"question {tag}{i}")], json_schema=schema
        )
        for i in range(n)
    ]


def test_engine_keeps_the_protocol_contract_on_an_empty_and_a_failing_batch(transport):
    engine = OpenAIEngine("m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2, transport=transport)
    with engine:
        assert (engine.name, engine.model) == ("openai", "m")
        assert engine.generate([]) == []
        requests = _requests(3, tag="p")
        results = engine.generate(requests)
    assert [r.id for r in results] == [r.id for r in requests]  # one result per request, in order
    assert all(not r.ok and r.error_kind == "connection" and r.attempts == 1 for r in results)


def test_twenty_percent_faults_with_retries_lose_and_duplicate_nothing(fault_server, transport):
    server = fault_server(FaultConfig(**MIXED_20))
    requests = _requests(300)
    with OpenAIEngine(
        "fault-model", base_url=server.url, max_in_flight=32, max_retries=6, timeout_s=10, transport=transport
    ) as engine:
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


def test_without_retries_each_fault_is_a_typed_failure_of_its_kind(fault_server, transport):
    server = fault_server(FaultConfig(**MIXED_20, rate_bad_body=0.05))
    requests = _requests(400, tag="n")
    with OpenAIEngine(
        "fault-model", base_url=server.url, max_in_flight=32, max_retries=0, timeout_s=10, transport=transport
    ) as engine:
        results = engine.generate(requests)
    assert len(results) == len(requests) and len({r.id for r in results}) == len(requests)
    kinds = collections.Counter(r.error_kind for r in results)
    outcomes = server.counters.snapshot()["outcomes"]
    assert kinds["http"] == outcomes.get("429", 0) + outcomes.get("500", 0) + outcomes.get("503", 0) > 0
    assert kinds["connection"] == outcomes.get("drop", 0) > 0
    assert kinds["protocol"] == outcomes.get("bad_body", 0) > 0
    assert all(r.attempts == 1 for r in results)
    assert all(r.error.startswith("HTTP ") for r in results if r.error_kind == "http")
    bad_bodies = [r for r in results if r.error_kind == "protocol"]
    assert all(r.text for r in bad_bodies)  # the raw body is kept for inspection


def test_malformed_structured_output_is_kept_with_its_reason(fault_server, transport):
    server = fault_server(FaultConfig(**MIXED_20, rate_schema_violation=0.05))
    requests = _requests(300, schema=SMALL_SCHEMA, tag="s")
    with OpenAIEngine(
        "fault-model", base_url=server.url, max_in_flight=32, max_retries=6, timeout_s=10, transport=transport
    ) as engine:
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


def test_structured_reasks_recover_malformed_output(fault_server, transport):
    server = fault_server(FaultConfig(rate_malformed=0.3, seed=3))
    requests = _requests(60, schema=SMALL_SCHEMA, tag="r")
    with OpenAIEngine(
        "fault-model", base_url=server.url, max_in_flight=16, max_retries=2, timeout_s=10, transport=transport
    ) as engine:
        results = generate_structured(engine, requests, max_retries=10)
    assert server.counters.snapshot()["outcomes"]["malformed"] > 0
    assert all(r.ok and r.parsed == {"ok": True, "mood": "calm"} for r in results)


def test_timeouts_are_typed_and_retried_the_configured_number_of_times(fault_server, transport):
    server = fault_server(FaultConfig(latency_ms=2000))
    with OpenAIEngine(
        "fault-model", base_url=server.url, max_in_flight=4, max_retries=1, timeout_s=0.2, transport=transport
    ) as engine:
        results = engine.generate(_requests(3, tag="t"))
    assert [r.error_kind for r in results] == ["timeout"] * 3
    assert [r.attempts for r in results] == [2, 2, 2]


def test_connection_refused_is_a_typed_failure(transport):
    with OpenAIEngine("m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2, transport=transport) as engine:
        (result,) = engine.generate(_requests(1))
    assert result.error_kind == "connection"


def test_in_flight_reaches_but_never_exceeds_the_bound(fault_server, transport):
    # Jittered latency: requests finish out of order, results must still come back in order.
    server = fault_server(FaultConfig(latency_ms=30, jitter_ms=30))
    with OpenAIEngine(
        "fault-model", base_url=server.url, max_in_flight=5, max_retries=0, transport=transport
    ) as engine:
        results = engine.generate(_requests(40, tag="b"))
        client_side = engine.inflight_stats()
    assert [r.text for r in results] == [f"echo: question b{i}" for i in range(40)]
    server_side = server.inflight_stats()
    assert client_side.peak == 5 and server_side.peak <= 5
    assert server_side.peak >= 2  # requests did overlap
    assert client_side.completed == server_side.completed == 40


def test_generate_works_inside_a_running_loop_and_from_threads(fault_server, transport):
    server = fault_server(FaultConfig())
    engine = OpenAIEngine("fault-model", base_url=server.url, max_in_flight=8, transport=transport)

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


def test_agenerate_runs_on_the_callers_loop(fault_server, transport):
    server = fault_server(FaultConfig())
    engine = OpenAIEngine("fault-model", base_url=server.url, max_in_flight=8, transport=transport)

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


def test_engine_pickles_as_settings_and_works_after(fault_server, transport):
    import pickle

    server = fault_server(FaultConfig())
    engine = OpenAIEngine("fault-model", base_url=server.url, max_in_flight=3, max_retries=1, transport=transport)
    engine.generate(_requests(2, tag="p"))  # live loop, clients and locks inside
    copy = pickle.loads(pickle.dumps(engine))
    engine.close()
    assert (copy.max_in_flight, copy.max_retries, copy.base_url, copy.transport) == (3, 1, server.url, transport)
    with copy:
        assert [r.text for r in copy.generate(_requests(2, tag="p"))] == ["echo: question p0", "echo: question p1"]


# -- retry policy, checked against a scripted endpoint --------------------------------------

class ScriptedEndpoint:
    """`/v1/chat/completions` answering each request id from a script of (status, headers),
    one entry per attempt (the last repeats); records every attempt with its arrival time."""

    def __init__(self, script: dict[str, list[tuple[int, dict[str, str]]]]) -> None:
        self.script = script
        self.seen: list[tuple[float, str, dict[str, str]]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    def attempts(self, rid: str) -> list[float]:
        return [t for t, seen_id, _ in self.seen if seen_id == rid]

    async def _chat(self, request: web.Request) -> web.Response:
        rid = request.headers[REQUEST_ID_HEADER]
        self.seen.append((time.perf_counter(), rid, dict(request.headers)))
        steps = self.script[rid]
        status, headers = steps[min(len(self.attempts(rid)), len(steps)) - 1]
        if status != 200:
            return web.json_response({"error": {"message": f"scripted {status}"}}, status=status, headers=headers)
        answer = {"choices": [{"message": {"role": "assistant", "content": f"ok {rid}"}}], "usage": {}}
        return web.json_response(answer)

    async def __aenter__(self) -> ScriptedEndpoint:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *_) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def _against_script(script: dict, transport: str, **engine_kwargs) -> tuple[dict, ScriptedEndpoint]:
    async def main():
        async with ScriptedEndpoint(script) as endpoint:
            engine = OpenAIEngine("m", base_url=endpoint.url, transport=transport, **engine_kwargs)
            try:
                results = await engine.agenerate(_requests_with_ids(list(script)))
            finally:
                await engine.aclose()
        return {r.id: r for r in results}, endpoint

    return asyncio.run(main())


def _requests_with_ids(ids: list[str]) -> list[ChatRequest]:
    return [ChatRequest(id=rid, messages=[ChatMessage(role="user", content=rid)]) for rid in ids]


@pytest.mark.parametrize("header", [("retry-after-ms", "1200"), ("retry-after", "1")])
def test_retry_after_is_honoured(transport, header):
    # Backoff alone would wait at most 0.75 s before the first retry; the server asks for more.
    wait_s = float(header[1]) / (1000 if header[0] == "retry-after-ms" else 1)
    results, endpoint = _against_script({"r": [(429, dict([header])), (200, {})]}, transport, max_retries=3)
    assert results["r"].ok and results["r"].text == "ok r" and results["r"].attempts == 2
    first, second = endpoint.attempts("r")
    assert second - first >= wait_s - 0.02  # event-loop clock granularity


def test_retry_policy_by_status_is_the_same_on_both_transports(transport):
    quick = {"retry-after-ms": "10"}
    script = {
        "s400": [(400, {})],  # client errors are final
        "s404": [(404, {})],
        "s408": [(408, quick), (200, {})],
        "s409": [(409, quick), (200, {})],
        "s429": [(429, quick), (429, quick), (200, {})],
        "s502": [(502, quick), (200, {})],
        "s503": [(503, quick)],  # retried until the budget runs out
        "no": [(503, {**quick, "x-should-retry": "false"})],  # the server's explicit word wins
        "far": [(429, {"retry-after": "3600"})],  # a wait beyond two minutes is not taken
    }
    results, endpoint = _against_script(script, transport, max_retries=2, api_key="sk-test")
    for rid, result in results.items():
        assert result.attempts == len(endpoint.attempts(rid)), rid
    assert {rid: r.attempts for rid, r in results.items()} == {
        "s400": 1, "s404": 1, "s408": 2, "s409": 2, "s429": 3, "s502": 2, "s503": 3, "no": 1, "far": 1}
    assert all(results[rid].ok for rid in ("s408", "s409", "s429", "s502"))
    for rid in ("s400", "s404", "s503", "no", "far"):
        status = {"no": 503, "far": 429}.get(rid) or int(rid[1:])
        assert results[rid].error_kind == "http" and results[rid].error.startswith(f"HTTP {status}:"), results[rid]
        assert f"scripted {status}" in results[rid].error
    assert {headers["Authorization"] for _, _, headers in endpoint.seen} == {"Bearer sk-test"}


def test_retry_after_header_forms():
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25  # milliseconds first
    assert retry_after_s({"retry-after": "2.5"}) == 2.5
    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_s({"retry-after": soon}) <= 31
    assert retry_after_s({"retry-after": "whenever"}) is None
    assert retry_after_s({}) is None


def test_transport_is_a_setting_of_engine_and_config():
    assert OpenAIEngine("m").transport == EngineConfig(engine="openai", model="m").transport == "aiohttp"
    engine = build_engine(EngineConfig(engine="openai", model="m", base_url="http://127.0.0.1:9/v1", transport="sdk"))
    assert engine.transport == "sdk"
    with pytest.raises(ValueError, match="transport"):
        OpenAIEngine("m", transport="curl")
    with pytest.raises(ValueError, match="transport"):
        EngineConfig(engine="openai", model="m", transport="curl")
