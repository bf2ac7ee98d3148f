"""`openai` engine: any OpenAI-compatible endpoint (OpenAI, a vLLM server, our Serve app).

Retries of transport faults (408/409/429/5xx, timeouts, dropped or refused connections,
with backoff and jitter, or the server's Retry-After) happen inside the transport
(`mnemoray.llm.openai_transport`): the official client's own `max_retries`
(`transport="sdk"`) or bare aiohttp with tenacity (`transport="aiohttp"`, same rules).
This module adds what a client lacks for batch jobs: a bound on requests in flight, one
typed result per request whatever happens (`error_kind` "http", "timeout",
"connection", "protocol" or "engine"), HTTP attempts counted per request, and an
in-flight meter so a benchmark can tell whether the bound is actually reached. Like
every engine it returns raw text; `mnemoray.llm.structured.generate_structured` parses,
validates and re-asks for requests with a JSON schema.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar, get_args

from mnemoray.llm.event_loop import new_event_loop
from mnemoray.llm.inflight import InFlightMeter, InFlightStats
from mnemoray.llm.openai_transport import (
    CALL_HEADER,
    AiohttpTransport,
    SdkTransport,
    Transport,
    completion_body,
    read_completion,
)
from mnemoray.llm.types import ChatRequest, ChatResult

__all__ = ["REQUEST_ID_HEADER", "OpenAIEngine", "TransportName", "completion_body", "read_completion"]

T = TypeVar("T")
TransportName = Literal["sdk", "aiohttp"]

# Header carrying our request id, so a server (or the fault server's counters) can tell
# retries of one request apart from distinct requests.
REQUEST_ID_HEADER = "x-mnemoray-request-id"

_PerLoop = tuple[Transport, asyncio.Semaphore]
_SETTINGS = (
    "model", "base_url", "api_key", "max_in_flight", "timeout_s", "max_retries", "strict_schema", "transport"
)


class _LoopThread:
    """A private event loop on a daemon thread: lets sync `generate` work from any thread
    (with or without a running loop there) and keeps pooled connections between calls."""

    def __init__(self) -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-engine-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


class OpenAIEngine:
    """Chat completions against an OpenAI-compatible server, at most `max_in_flight` at once.

    `transport` picks how each call goes out; both retry the same faults the same way,
    count attempts the same way and return the same typed results:
    - "aiohttp" (default): bare aiohttp posts on one pooled session per loop, retried with
      tenacity. The default because client CPU per call decides whether a few hundred
      requests stay in flight on a small machine: benchmarks/llm_throughput.py (2 CPUs,
      200 ms latency, endpoint on its own CPU) measured 0.15-0.2 ms per call against the
      SDK's 0.6-0.8 ms, and a server-side in-flight / max of 0.975 at 256 (bare aiohttp:
      0.98) against the SDK's 0.88.
    - "sdk": the official `openai` client, for an endpoint that needs more of the client
      than a bearer key and `POST /chat/completions`.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        max_in_flight: int = 64,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        strict_schema: bool = False,
        transport: TransportName = "aiohttp",
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if transport not in get_args(TransportName):
            raise ValueError(f"transport must be one of {get_args(TransportName)}, not {transport!r}")
        self.model = model
        self.base_url = base_url
        # Local servers need no key, but the client refuses to start without one.
        self.api_key = api_key or "EMPTY"
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.strict_schema = strict_schema
        self.transport = transport
        self.meter = InFlightMeter()
        # One transport + semaphore per event loop: connection pools cannot cross loops.
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PerLoop] = weakref.WeakKeyDictionary()
        self._loop_thread: _LoopThread | None = None
        self._calls = itertools.count()
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Any, model: str) -> OpenAIEngine:
        """The engine an EngineConfig describes (`mnemoray.llm.registry.build_engine`); the key
        is read from the environment variable the config names."""
        return cls(model=model, base_url=cfg.base_url, api_key=os.environ.get(cfg.api_key_env),
                   max_in_flight=cfg.max_in_flight, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                   transport=cfg.transport)

    # -- public API -------------------------------------------------------------------

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        """Blocking batch call; safe from any thread, including one running an event loop."""
        with self._lock:
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()
            runner = self._loop_thread
        return runner.run(self.agenerate(requests))

    async def agenerate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        """All requests concurrently (bounded); results in request order, one per request.

        `max_in_flight` workers pull requests in order, rather than one task per request
        queued on the semaphore: a batch of 10,000 then starts sending at once instead of
        after creating 10,000 tasks (tens of ms), and holds no more tasks than slots."""
        results: list[ChatResult | None] = [None] * len(requests)
        pending = iter(enumerate(requests))

        async def worker() -> None:
            for index, request in pending:  # one shared iterator: each request taken once
                results[index] = await self.agenerate_one(request)

        await asyncio.gather(*(worker() for _ in range(min(self.max_in_flight, len(requests)))))
        return results  # type: ignore[return-value]  # every slot filled by a worker

    async def agenerate_one(self, request: ChatRequest) -> ChatResult:
        transport, slots = self._transport_for_loop()
        async with slots:
            self.meter.start()
            try:
                return await self._complete(transport, request)
            except Exception as err:  # noqa: BLE001 - every request must end as a result
                return ChatResult(id=request.id, error=f"{type(err).__name__}: {err}", error_kind="engine")
            finally:
                self.meter.end()

    def inflight_stats(self) -> InFlightStats:
        return self.meter.stats()

    async def aclose(self) -> None:
        """Close the transport bound to the running loop (its pooled connections)."""
        pair = self._per_loop.pop(asyncio.get_running_loop(), None)
        if pair is not None:
            await pair[0].close()

    def close(self) -> None:
        """Close the private loop used by `generate` and its connections."""
        with self._lock:
            runner, self._loop_thread = self._loop_thread, None
        if runner is not None:
            runner.run(self.aclose())
            runner.stop()

    def __getstate__(self) -> dict[str, Any]:
        # Ship the settings, not the loop/transports/locks: a copy in another process
        # (e.g. a Ray actor) opens its own connections.
        return {k: getattr(self, k) for k in _SETTINGS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __enter__(self) -> OpenAIEngine:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _transport_for_loop(self) -> _PerLoop:
        loop = asyncio.get_running_loop()
        pair = self._per_loop.get(loop)
        if pair is None:
            kind = AiohttpTransport if self.transport == "aiohttp" else SdkTransport
            transport = kind(
                base_url=self.base_url,
                api_key=self.api_key,
                max_in_flight=self.max_in_flight,
                timeout_s=self.timeout_s,
                max_retries=self.max_retries,
                count_attempt=self._count_attempt,
            )
            pair = (transport, asyncio.Semaphore(self.max_in_flight))
            self._per_loop[loop] = pair
        return pair

    def _count_attempt(self, call: str | None) -> None:
        """Called by the transport for every HTTP attempt it sends, retries included."""
        if call is not None and call in self._attempts:
            self._attempts[call] += 1

    async def _complete(self, transport: Transport, request: ChatRequest) -> ChatResult:
        started = time.perf_counter()
        call = f"{request.id}-{next(self._calls)}"
        self._attempts[call] = 0
        headers = {REQUEST_ID_HEADER: request.id, CALL_HEADER: call}
        try:
            body = completion_body(self.model, request, self.strict_schema)
            result = await transport.send(request.id, body, headers)
        finally:
            attempts = self._attempts.pop(call)
        return result.model_copy(update={"attempts": max(attempts, 1), "latency_s": time.perf_counter() - started})
