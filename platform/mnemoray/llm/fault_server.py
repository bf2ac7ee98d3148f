"""An OpenAI-compatible endpoint on 127.0.0.1 that injects faults, for tests and benchmarks.

Answers `/v1/chat/completions` and `/v1/models`. Each request draws one outcome: a 429,
500 or 503 (JSON error body, like real providers), a dropped connection (socket closed
with no response), malformed JSON content, schema-violating JSON content, or a normal
answer: a valid instance of the request's `response_format` schema, or plain text
echoing the last user message (so a caller can check each answer belongs to its
request). All outcomes wait the configured latency first. Counters per outcome, per
request id (retries), and a time-weighted in-flight meter are exposed for assertions
(in-process as `FaultServer.counters`, across processes as `GET /_stats`).

    with FaultServer(FaultConfig(fault_rate=0.2)) as url: ...
    python -m mnemoray.llm.fault_server --port 8011 --latency-ms 200
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import jsonschema
from aiohttp import web

from mnemoray.llm.event_loop import new_event_loop
from mnemoray.llm.inflight import InFlightMeter, InFlightStats
from mnemoray.llm.schema_instance import UnsupportedSchema, instance_for

# The header OpenAIEngine puts our request id in (kept in sync with openai_engine.py;
# not imported, so the server starts without loading the openai client).
REQUEST_ID_HEADER = "x-mnemoray-request-id"
MALFORMED_CONTENT = '{"truncated": "json'


@dataclass
class FaultConfig:
    """Outcome probabilities per request (the rest are normal answers) and timing.

    `fault_rate` spreads that much probability evenly over 429/500/503/drop/malformed
    on top of any explicit rate.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fault_rate: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_drop: float = 0.0
    rate_malformed: float = 0.0
    rate_schema_violation: float = 0.0
    rate_bad_body: float = 0.0
    retry_after_ms: int | None = None  # sent with 429/503 so clients back off briefly
    vary_strings: bool = False  # strings of schema answers: words drawn per request, not one fixed word
    seed: int = 0
    models: list[str] = field(default_factory=lambda: ["fault-model"])

    def rates(self) -> dict[str, float]:
        share = self.fault_rate / 5
        rates = {
            "429": self.rate_429 + share,
            "500": self.rate_500 + share,
            "503": self.rate_503 + share,
            "drop": self.rate_drop + share,
            "malformed": self.rate_malformed + share,
            "schema_violation": self.rate_schema_violation,
            "bad_body": self.rate_bad_body,
        }
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to more than 1: {rates}")
        return rates


class FaultCounters:
    """What the server did, for assertions: outcomes, attempts per request id, in-flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.attempts_by_id: collections.Counter[str] = collections.Counter()
        self.inflight = InFlightMeter()

    def record(self, outcome: str, request_id: str | None) -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if request_id:
                self.attempts_by_id[request_id] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"outcomes": dict(self.outcomes), "requests": sum(self.outcomes.values())}

    def reset(self) -> None:
        with self._lock:
            self.outcomes.clear()
            self.attempts_by_id.clear()
        self.inflight.reset()


@functools.lru_cache(maxsize=128)
def _validator(schema_json: str) -> Any:
    """The schema's validator, checked against its meta-schema once (that check dominates)."""
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@functools.lru_cache(maxsize=128)
def _instance_json(schema_json: str, salt: str | None = None) -> str:
    """A valid instance as JSON text (cached per schema and salt); raises UnsupportedSchema."""
    value = instance_for(json.loads(schema_json), salt)
    error = jsonschema.exceptions.best_match(_validator(schema_json).iter_errors(value))
    if error is not None:
        raise UnsupportedSchema(f"generated instance is invalid: {error.message}")
    return json.dumps(value)


def _violation(schema: dict[str, Any]) -> str:
    """Valid JSON of the wrong shape: an array where an object is expected, else an object."""
    kind = schema.get("type")
    wants_object = kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in schema
    return json.dumps(["not", "what", "you", "asked"] if wants_object else {"not": "what you asked"})


def _schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema") or {}
    if fmt.get("type") == "json_object":
        return {"type": "object"}
    return None


def _words(text: str) -> int:
    return len(text.split())


def _completion(model: str, content: str, prompt_tokens: int) -> dict[str, Any]:
    completion_tokens = max(1, _words(content))
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error(status: int, message: str, retry_after_ms: int | None = None) -> web.Response:
    headers = {"retry-after-ms": str(retry_after_ms)} if retry_after_ms is not None and status in (429, 503) else None
    body = {"error": {"message": message, "type": "injected_fault", "code": status}}
    return web.json_response(body, status=status, headers=headers)


class _App:
    def __init__(self, config: FaultConfig, counters: FaultCounters) -> None:
        self.config = config
        self.counters = counters
        self.rates = config.rates()
        self.rng = random.Random(config.seed)

    def draw(self) -> str:
        roll = self.rng.random()
        for kind, rate in self.rates.items():
            if roll < rate:
                return kind
            roll -= rate
        return "ok"

    async def models(self, _: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "mnemoray"} for m in self.config.models]
        return web.json_response({"object": "list", "data": data})

    async def stats(self, _: web.Request) -> web.Response:
        """Counters for a client in another process (the benchmark)."""
        return web.json_response({**self.counters.snapshot(), "inflight": asdict(self.counters.inflight.stats())})

    async def reset(self, _: web.Request) -> web.Response:
        self.counters.reset()
        return web.json_response({"reset": True})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.counters.inflight.start()
        try:
            return await self._chat(request)
        finally:
            self.counters.inflight.end()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        request_id = request.headers.get(REQUEST_ID_HEADER)
        try:
            body = await request.json()
            messages = body["messages"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            self.counters.record("bad_request", request_id)
            return _error(400, f"bad request: {err}")
        outcome = self.draw()
        cfg = self.config
        delay = (cfg.latency_ms + (self.rng.random() * cfg.jitter_ms if cfg.jitter_ms else 0.0)) / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        schema = _schema_of(body)
        if outcome == "ok" and schema is not None:
            try:
                salt = json.dumps(messages, sort_keys=True) if cfg.vary_strings else None
                content = _instance_json(json.dumps(schema, sort_keys=True), salt)
            except UnsupportedSchema as err:
                self.counters.record("unsupported_schema", request_id)
                return _error(400, f"fault server cannot build an instance: {err}")
        self.counters.record(outcome, request_id)
        if outcome in ("429", "500", "503"):
            return _error(int(outcome), f"injected {outcome}", cfg.retry_after_ms)
        if outcome == "drop":
            # Close the socket with no response at all: the client sees a reset.
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if outcome == "bad_body":
            return web.Response(status=200, text='{"choices": [', content_type="application/json")
        if outcome == "malformed":
            content = MALFORMED_CONTENT
        elif outcome == "schema_violation":
            content = _violation(schema or {"type": "object"})
        elif schema is None:
            last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
            content = f"echo: {last_user}"
        prompt_tokens = sum(_words(str(m.get("content", ""))) for m in messages)
        return web.json_response(_completion(body.get("model", cfg.models[0]), content, prompt_tokens))


def build_app(config: FaultConfig, counters: FaultCounters) -> web.Application:
    handlers = _App(config, counters)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_post("/v1/chat/completions", handlers.chat)
    app.router.add_get("/_stats", handlers.stats)
    app.router.add_post("/_stats/reset", handlers.reset)
    return app


class FaultServer:
    """The fault endpoint on a background thread; `start()` returns its `/v1` base URL."""

    def __init__(self, config: FaultConfig | None = None, port: int = 0) -> None:
        self.config = config or FaultConfig()
        self.port = port
        self.counters = FaultCounters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> str:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as err:  # noqa: BLE001 - surfaced to the caller below
                failure.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fault-server", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if failure:
            raise failure[0]
        return self.url

    async def _open(self) -> None:
        self._runner = web.AppRunner(build_app(self.config, self.counters), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the real port when port=0
        self.url = f"http://127.0.0.1:{self.port}/v1"

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def inflight_stats(self) -> InFlightStats:
        return self.counters.inflight.stats()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible fault-injection endpoint on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="spread over 429/500/503/drop/malformed")
    for kind in ("429", "500", "503", "drop", "malformed", "schema-violation", "bad-body"):
        parser.add_argument(f"--rate-{kind}", type=float, default=0.0)
    parser.add_argument("--retry-after-ms", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--vary-strings", action="store_true", help="answer schema strings with words drawn per request"
    )
    parser.add_argument("--model", action="append", default=None, help="model id listed by /v1/models (repeatable)")
    args = parser.parse_args(argv)
    config = FaultConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        fault_rate=args.fault_rate,
        rate_429=args.rate_429,
        rate_500=args.rate_500,
        rate_503=args.rate_503,
        rate_drop=args.rate_drop,
        rate_malformed=args.rate_malformed,
        rate_schema_violation=args.rate_schema_violation,
        rate_bad_body=args.rate_bad_body,
        retry_after_ms=args.retry_after_ms,
        seed=args.seed,
        vary_strings=args.vary_strings,
        models=args.model or ["fault-model"],
    )
    config.rates()  # fail fast on rates over 1
    counters = FaultCounters()
    print(f"fault server on http://127.0.0.1:{args.port}/v1 config={asdict(config)}", flush=True)
    web.run_app(build_app(config, counters), host="127.0.0.1", port=args.port, access_log=None, print=None,
                backlog=1024, loop=new_event_loop())


if __name__ == "__main__":
    main()
