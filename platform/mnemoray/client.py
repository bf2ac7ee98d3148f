"""Clients of the memory service (`mnemoray serve memory`): `MemoryClient` (blocking, stdlib
HTTP) and `AsyncMemoryClient` (aiohttp). The tenant is the API key's; nothing else names it.

    from mnemoray.client import MemoryClient
    mem = MemoryClient("http://127.0.0.1:8000", api_key="mr-...")
    mem.add([{"speaker": "user", "text": "I adopted a dog named Max."}], session_id="s1")
    mem.search("what is my dog called?", k=3)

The OpenAI client works unchanged against the same base URL + "/v1" (`chat` here is a
shortcut for it). Failures raise `MemoryServiceError` with the HTTP status and message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any


class MemoryServiceError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _session_body(messages: list[dict[str, str]] | str, session_id: str | None, date: str | None,
                  persona: dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(messages, str):
        messages = [{"speaker": "user", "text": messages}]
    turns = [{"speaker": m.get("speaker") or m.get("role") or "user", "text": m.get("text", m.get("content", ""))}
             for m in messages]
    body: dict[str, Any] = {"session_id": session_id or f"s-{uuid.uuid4().hex}", "turns": turns}
    if date is not None:
        body["date"] = date
    if persona is not None:
        body["persona"] = persona
    return body


def _chat_body(messages: list[dict[str, str]], model: str, **params: Any) -> dict[str, Any]:
    return {"model": model, "messages": messages, **params}


def _raise(status: int, text: str) -> None:
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text[:500]
    raise MemoryServiceError(status, message)


class MemoryClient:
    """Blocking client (one HTTP request per call)."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        url = self.base_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            _raise(err.code, err.read().decode("utf-8", "replace"))

    def add(self, messages: list[dict[str, str]] | str, session_id: str | None = None, date: str | None = None,
            persona: dict[str, Any] | None = None) -> dict[str, Any]:
        """One session (turns as {speaker, text} or OpenAI-style {role, content}); its status and writes."""
        return self._call("POST", "/v1/sessions", _session_body(messages, session_id, date, persona))

    def session(self, session_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/sessions/{urllib.parse.quote(session_id, safe='')}")

    def search(self, query: str, k: int = 5) -> list[dict[str, Any]]:
        return self._call("POST", "/v1/memories/search", {"query": query, "k": k})["results"]

    def get_all(self, limit: int = 1000) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", "/v1/memories", query={"offset": len(out), "limit": limit})
            out.extend(page["results"])
            if not page["results"] or len(out) >= page["total"]:
                return out

    def get(self, memory_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/memories/{urllib.parse.quote(memory_id, safe='')}")

    def history(self, memory_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/memories/{urllib.parse.quote(memory_id, safe='')}/history")

    def delete(self, memory_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/memories/{urllib.parse.quote(memory_id, safe='')}")

    def export(self) -> dict[str, Any]:
        return self._call("GET", "/v1/export")

    def import_(self, exported: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/import", exported)

    def chat(self, messages: list[dict[str, str]], model: str = "memory", **params: Any) -> dict[str, Any]:
        """An OpenAI chat completion answered with the tenant's memories (the raw response)."""
        return self._call("POST", "/v1/chat/completions", _chat_body(messages, model, **params))


class AsyncMemoryClient:
    """The same calls on aiohttp (one session, reused); `async with` closes it."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 60.0, max_connections: int = 100):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._session = None

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.max_connections))
        async with self._session.request(method, self.base_url + path, json=body, params=query) as response:
            text = await response.text()
            if response.status >= 400:
                _raise(response.status, text)
            return json.loads(text or "null")

    async def add(self, messages: list[dict[str, str]] | str, session_id: str | None = None, date: str | None = None,
                  persona: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._call("POST", "/v1/sessions", _session_body(messages, session_id, date, persona))

    async def search(self, query: str, k: int = 5) -> list[dict[str, Any]]:
        return (await self._call("POST", "/v1/memories/search", {"query": query, "k": k}))["results"]

    async def get_all(self, limit: int = 1000) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = await self._call("GET", "/v1/memories", query={"offset": len(out), "limit": limit})
            out.extend(page["results"])
            if not page["results"] or len(out) >= page["total"]:
                return out

    async def get(self, memory_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/memories/{urllib.parse.quote(memory_id, safe='')}")

    async def delete(self, memory_id: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/v1/memories/{urllib.parse.quote(memory_id, safe='')}")

    async def chat(self, messages: list[dict[str, str]], model: str = "memory", **params: Any) -> dict[str, Any]:
        return await self._call("POST", "/v1/chat/completions", _chat_body(messages, model, **params))
