"""Wire level of the `openai` engine: the request body, reading a reply, and two transports
that each make one logical `POST /chat/completions` call, retries included, and return a
typed `ChatResult` (never raise for a transport fault).

- `SdkTransport`: the official `openai` client (aiohttp under it), retrying with its own
  `max_retries`.
- `AiohttpTransport`: bare aiohttp posts on one pooled session, retried by tenacity with
  the client's semantics: 408/409/429/5xx, timeouts and dropped or refused connections;
  a `retry-after-ms` / `Retry-After` header when present, else exponential backoff with
  jitter; up to `max_retries` retries; `timeout_s` per attempt.

Both call `count_attempt(<value of CALL_HEADER>)` once per HTTP attempt they send, so the
engine's attempt counts match what the server saw.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp
import httpx2
import openai
import tenacity

from mnemoray.llm.types import ChatRequest, ChatResult, Usage

# Per-call token, so attempts are counted per call even when two requests share an id.
CALL_HEADER = "x-mnemoray-call"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Retry policy of the aiohttp transport, the same as the openai client's.
MAX_RETRY_AFTER_S = 120.0  # a server asking for a longer wait is not retried
_BACKOFF = tenacity.wait_exponential_jitter(multiplier=0.5, max=8.0, jitter=0.25)

CountAttempt = Callable[[str | None], None]


class Transport(Protocol):
    async def send(self, request_id: str, body: dict[str, Any], headers: dict[str, str]) -> ChatResult: ...

    async def close(self) -> None: ...


# -- request body and reply, shared by both transports (and Ray Data's HTTP path) ---------

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


def read_body(request_id: str, raw: bytes) -> ChatResult:
    """A 2xx body as a result; an undecodable one is a "protocol" failure keeping the raw text."""
    try:
        payload = json.loads(raw)
    except ValueError as err:
        text = raw[:2000].decode(errors="replace")
        return ChatResult(id=request_id, text=text, error=f"bad response body: {err}", error_kind="protocol")
    return read_completion(request_id, payload)


def transport_failure(request_id: str, err: BaseException) -> ChatResult:
    """A timeout or a dropped/refused connection, told apart by the root cause: the SDK's
    aiohttp transport reports every aiohttp connection error as a connect timeout, so the
    exception class alone would call a reset socket a "timeout". The walk stops above a
    CancelledError: that is how asyncio implements the timeout it lies under."""
    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, asyncio.CancelledError) and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    root = chain[-1]
    what = f"{type(root).__name__}: {root}" if str(root) else type(root).__name__
    timed_out = isinstance(root, TimeoutError) or "Timeout" in type(root).__name__
    if timed_out or (isinstance(err, openai.APITimeoutError) and root is err):
        return ChatResult(id=request_id, error=f"timed out: {what}", error_kind="timeout")
    return ChatResult(id=request_id, error=f"connection failed: {what}", error_kind="connection")


# -- the official client -----------------------------------------------------------------

class SdkTransport:
    """`openai.AsyncOpenAI` on aiohttp; the client retries transport failures itself."""

    def __init__(
        self, *, base_url: str | None, api_key: str, max_in_flight: int, timeout_s: float, max_retries: int,
        count_attempt: CountAttempt,
    ) -> None:
        self._count_attempt = count_attempt
        # httpx's own pool scans every connection on each request (milliseconds per call at
        # a few hundred connections), hence aiohttp under the client, with one keep-alive
        # connection per slot so none is re-opened per request.
        limits = httpx2.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
        http = openai.DefaultAioHttpClient(limits=limits, timeout=timeout_s, event_hooks={"request": [self._hook]})
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries, http_client=http
        )

    async def _hook(self, request: httpx2.Request) -> None:
        """Runs for every HTTP attempt the client sends, retries included."""
        self._count_attempt(request.headers.get(CALL_HEADER))

    async def send(self, request_id: str, body: dict[str, Any], headers: dict[str, str]) -> ChatResult:
        response: httpx2.Response | None = None
        try:
            # The generic `post` keeps the client's retries and timeouts but skips the
            # typed-params transform and model construction (most of its CPU per call).
            response = await self._client.post(
                "/chat/completions", cast_to=httpx2.Response, body=body, options={"headers": headers}
            )
            raw = response.content
        except openai.APIConnectionError as err:  # includes APITimeoutError
            return transport_failure(request_id, err)
        except openai.APIStatusError as err:
            return ChatResult(id=request_id, error=f"HTTP {err.status_code}: {err.message}", error_kind="http")
        except httpx2.HTTPError as err:  # broken stream
            raw_text = response.text[:2000] if response is not None else ""
            return ChatResult(id=request_id, text=raw_text, error=f"bad response body: {err}", error_kind="protocol")
        return read_body(request_id, raw)

    async def close(self) -> None:
        await self._client.close()


# -- bare aiohttp + tenacity ---------------------------------------------------------------

class _Retryable(Exception):
    """A failed attempt worth another try; carries its result for when tries run out."""

    def __init__(self, result: ChatResult, retry_after: float | None = None) -> None:
        super().__init__(result.error)
        self.result = result
        self.retry_after = retry_after


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds a server asks us to wait: `retry-after-ms`, then `Retry-After` in seconds
    or as an HTTP date; None when absent or unreadable."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) / scale
            except ValueError:
                pass
    value = headers.get("retry-after")
    when = email.utils.parsedate_tz(value) if value else None
    return None if when is None else email.utils.mktime_tz(when) - time.time()


def should_retry(status: int, headers: Mapping[str, str], retry_after: float | None) -> bool:
    if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
        return False
    hint = headers.get("x-should-retry")
    if hint in ("true", "false"):  # a server's explicit word wins
        return hint == "true"
    return status in (408, 409, 429) or status >= 500


def _wait(state: tenacity.RetryCallState) -> float:
    """The server's Retry-After when it gave a usable one, else backoff with jitter."""
    failure = state.outcome.exception() if state.outcome is not None else None
    if isinstance(failure, _Retryable) and failure.retry_after is not None:
        if 0 < failure.retry_after <= MAX_RETRY_AFTER_S:
            return failure.retry_after
    return _BACKOFF(state)


def _last_result(state: tenacity.RetryCallState) -> ChatResult:
    assert state.outcome is not None
    failure = state.outcome.exception()
    assert isinstance(failure, _Retryable)
    return failure.result


def _error_message(raw: bytes) -> str:
    """The `error.message` of a JSON error body (as providers send), else the body text."""
    try:
        error = json.loads(raw).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    except (ValueError, AttributeError):
        pass
    return raw[:500].decode(errors="replace").strip() or "(empty body)"


class AiohttpTransport:
    """One aiohttp session (keep-alive pool of `max_in_flight` connections) for one event
    loop; build it inside that loop."""

    def __init__(
        self, *, base_url: str | None, api_key: str, max_in_flight: int, timeout_s: float, max_retries: int,
        count_attempt: CountAttempt,
    ) -> None:
        base = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self._url = f"{base.rstrip('/')}/chat/completions"
        self._count_attempt = count_attempt
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_in_flight),  # keep-alive by default
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),  # per attempt
        )
        self._retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(max_retries + 1),
            retry=tenacity.retry_if_exception_type(_Retryable),
            wait=_wait,
            retry_error_callback=_last_result,
        )

    async def send(self, request_id: str, body: dict[str, Any], headers: dict[str, str]) -> ChatResult:
        try:
            return await self._attempt(request_id, body, headers)
        except _Retryable as failure:
            first_failure = [failure]

        async def attempt() -> ChatResult:
            if first_failure:  # tenacity's attempt 1 is the failure above, replayed
                raise first_failure.pop()
            return await self._attempt(request_id, body, headers)

        # tenacity takes over at the first failure only: its per-call bookkeeping costs a
        # third of this transport's CPU, and most calls succeed at once. A copy per call,
        # as a tenacity object keeps per-call state.
        return await self._retrying.copy()(attempt)

    async def _attempt(self, request_id: str, body: dict[str, Any], headers: dict[str, str]) -> ChatResult:
        self._count_attempt(headers.get(CALL_HEADER))
        try:
            async with self._session.post(self._url, json=body, headers=headers) as response:
                raw = await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as err:  # refused, reset, dropped mid-body
            raise _Retryable(transport_failure(request_id, err)) from err
        if response.status >= 400:
            failure = ChatResult(
                id=request_id, error=f"HTTP {response.status}: {_error_message(raw)}", error_kind="http"
            )
            delay = retry_after_s(response.headers)
            if should_retry(response.status, response.headers, delay):
                raise _Retryable(failure, delay)
            return failure
        return read_body(request_id, raw)

    async def close(self) -> None:
        await self._session.close()
