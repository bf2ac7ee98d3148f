"""`openai` engine: any OpenAI-compatible endpoint (OpenAI, a vLLM server, our Serve app).

Transport retries (429, 5xx, timeouts, dropped connections, with backoff and jitter) are
left to the official client's own `max_retries`; this module adds what the client lacks
for batch jobs: a bound on requests in flight, one typed result per request whatever
happens (`error_kind` "http", "timeout", "connection", "protocol" or "engine"), and an
in-flight meter so a benchmark can tell whether the bound is actually reached. Like every
engine it returns raw text; `mnemoray.llm.structured.generate_structured` parses,
validates and re-asks for requests with a JSON schema.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx2
import openai

from mnemoray.llm.inflight import InFlightMeter, InFlightStats
from mnemoray.llm.types import ChatRequest, ChatResult, Usage

T = TypeVar("T")

# Header carrying our request id, so a server (or the fault server's counters) can tell
# retries of one request apart from distinct requests.
REQUEST_ID_HEADER = "x-mnemoray-request-id"
# Per-call token, so attempts are counted per call even when two requests share an id.
_CALL_HEADER = "x-mnemoray-call"


_ClientSlots = tuple[openai.AsyncOpenAI, asyncio.Semaphore]
_SETTINGS = ("model", "base_url", "api_key", "max_in_flight", "timeout_s", "max_retries", "strict_schema")


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it comes with ray[serve]): less CPU per request."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _LoopThread:
    """A private event loop on a daemon thread: lets sync `generate` work from any thread
    (with or without a running loop there) and keeps pooled connections between calls."""

    def __init__(self) -> None:
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-engine-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


class OpenAIEngine:
    """Chat completions against an OpenAI-compatible server, at most `max_in_flight` at once."""

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
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.model = model
        self.base_url = base_url
        # Local servers need no key, but the client refuses to start without one.
        self.api_key = api_key or "EMPTY"
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.strict_schema = strict_schema
        self.meter = InFlightMeter()
        # One client + semaphore per event loop: connection pools cannot cross loops.
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ClientSlots]
        self._per_loop = weakref.WeakKeyDictionary()
        self._loop_thread: _LoopThread | None = None
        self._calls = itertools.count()
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- public API -------------------------------------------------------------------

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        """Blocking batch call; safe from any thread, including one running an event loop."""
        with self._lock:
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()
            runner = self._loop_thread
        return runner.run(self.agenerate(requests))

    async def agenerate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        """All requests concurrently (bounded); results in request order, one per request."""
        return list(await asyncio.gather(*(self.agenerate_one(r) for r in requests)))

    async def agenerate_one(self, request: ChatRequest) -> ChatResult:
        client, slots = self._client_for_loop()
        async with slots:
            self.meter.start()
            try:
                return await self._complete(client, request)
            except Exception as err:  # noqa: BLE001 - every request must end as a result
                return ChatResult(id=request.id, error=f"{type(err).__name__}: {err}", error_kind="engine")
            finally:
                self.meter.end()

    def inflight_stats(self) -> InFlightStats:
        return self.meter.stats()

    async def aclose(self) -> None:
        """Close the client bound to the running loop (its pooled connections)."""
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
        # Ship the settings, not the loop/clients/locks: a copy in another process
        # (e.g. a Ray actor) opens its own connections.
        return {k: getattr(self, k) for k in _SETTINGS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __enter__(self) -> OpenAIEngine:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _client_for_loop(self) -> _ClientSlots:
        loop = asyncio.get_running_loop()
        pair = self._per_loop.get(loop)
        if pair is None:
            # aiohttp transport: httpx's pool scans every connection on each request,
            # which costs milliseconds per call at a few hundred connections. One
            # keep-alive connection per slot so none is re-opened per request.
            limits = httpx2.Limits(max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight)
            http = openai.DefaultAioHttpClient(
                limits=limits, timeout=self.timeout_s, event_hooks={"request": [self._count_attempt]}
            )
            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key,
                timeout=self.timeout_s,
                max_retries=self.max_retries,
                http_client=http,
            )
            pair = (client, asyncio.Semaphore(self.max_in_flight))
            self._per_loop[loop] = pair
        return pair

    async def _count_attempt(self, request: httpx2.Request) -> None:
        """Runs for every HTTP attempt the client sends, retries included."""
        call = request.headers.get(_CALL_HEADER)
        if call is not None and call in self._attempts:
            self._attempts[call] += 1

    async def _complete(self, client: openai.AsyncOpenAI, request: ChatRequest) -> ChatResult:
        started = time.perf_counter()
        call = f"{request.id}-{next(self._calls)}"
        self._attempts[call] = 0
        headers = {REQUEST_ID_HEADER: request.id, _CALL_HEADER: call}
        try:
            body = completion_body(self.model, request, self.strict_schema)
            result = await self._call_once(client, request, body, headers)
        finally:
            attempts = self._attempts.pop(call)
        return result.model_copy(update={"attempts": max(attempts, 1), "latency_s": time.perf_counter() - started})

    async def _call_once(
        self, client: openai.AsyncOpenAI, request: ChatRequest, body: dict[str, Any], headers: dict[str, str]
    ) -> ChatResult:
        """One logical call; the client retries transport failures inside it."""
        rid = request.id
        response: httpx2.Response | None = None
        try:
            # The generic `post` keeps the client's retries and timeouts but skips the
            # typed-params transform and model construction (most of its CPU per call).
            response = await client.post(
                "/chat/completions", cast_to=httpx2.Response, body=body, options={"headers": headers}
            )
            payload = json.loads(response.content)
        except openai.APIConnectionError as err:  # includes APITimeoutError
            kind, detail = _transport_failure(err)
            return ChatResult(id=rid, error=detail, error_kind=kind)
        except openai.APIStatusError as err:
            return ChatResult(id=rid, error=f"HTTP {err.status_code}: {err.message}", error_kind="http")
        except (ValueError, httpx2.HTTPError) as err:  # undecodable body, broken stream
            raw = response.text[:2000] if response is not None else ""
            return ChatResult(id=rid, text=raw, error=f"bad response body: {err}", error_kind="protocol")
        return read_completion(rid, payload)


def completion_body(model: str, request: ChatRequest, strict_schema: bool = False) -> dict[str, Any]:
    """The JSON body of `POST /chat/completions` for one request (shared with Ray Data's
    HTTP processor path, so both paths send the same thing)."""
    p = request.params
    body: dict[str, Any] = {
        "model": model,
        "messages": [m.model_dump() for m in request.messages],
        "temperature": p.temperature,
        "top_p": p.top_p,
        "max_tokens": p.max_tokens,
    }
    if p.stop:
        body["stop"] = p.stop
    if request.seed is not None:
        body["seed"] = request.seed
    if request.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": request.json_schema, "strict": strict_schema},
        }
    return body


def read_completion(request_id: str, payload: Any) -> ChatResult:
    """A chat.completion (or an error) body as a result; odd shapes become typed failures."""
    if isinstance(payload, dict) and "error" in payload and "choices" not in payload:
        err = payload["error"]
        message = err.get("message", err) if isinstance(err, dict) else err
        return ChatResult(id=request_id, error=f"server error: {message}", error_kind="http")
    try:
        text = payload["choices"][0]["message"]["content"] or ""
        raw_usage = payload.get("usage") or {}
        usage = Usage(
            prompt_tokens=raw_usage.get("prompt_tokens") or 0,
            completion_tokens=raw_usage.get("completion_tokens") or 0,
        )
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        return ChatResult(
            id=request_id, text=str(payload)[:2000], error=f"unexpected response shape: {err!r}", error_kind="protocol"
        )
    return ChatResult(id=request_id, text=text, usage=usage)


def _transport_failure(err: openai.APIConnectionError) -> tuple[str, str]:
    """Tell a timeout from a dropped or refused connection by the root cause.

    The aiohttp transport reports every aiohttp connection error as a connect timeout,
    so the exception class alone would call a reset socket a "timeout".
    """
    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    root = chain[-1]
    detail = f"{err} ({type(root).__name__}: {root})" if root is not err else str(err)
    if isinstance(root, (TimeoutError, asyncio.TimeoutError)) or "Timeout" in type(root).__name__:
        return "timeout", detail
    if isinstance(err, openai.APITimeoutError) and root is err:
        return "timeout", detail
    return "connection", f"connection failed: {type(root).__name__}: {root}"
