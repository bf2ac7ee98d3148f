"""A running memory service as a `MemoryFramework` (one tenant), so the evaluation harness
runs through the service exactly as it runs in process: sessions added in order, queries
asked at their visible point, results mapped back to the dataset's turn ids.

The service numbers turns itself (`<session>#t<i>`); this adapter remembers which dataset
turn each one was, so evidence metrics compare like with like.

A session the service could not apply at once (a memory-model call failed) comes back
`pending`: the service retries it in the background, so the adapter polls its status
until it is `done`, and fails naming the tenant and session only when the service gives up
(`failed`) or `pending_timeout_s` passes (default $MNEMORAY_SERVICE_PENDING_TIMEOUT_S or 600).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from mnemoray.client import MemoryClient
from mnemoray.memory.base import MemoryFramework
from mnemoray.records import MemoryItem, MemoryOp, Persona, RetrievedItem, Session, make_turn_id


def create_tenant(url: str, admin_key: str, tenant: str, framework: str | None = None) -> str:
    """A new tenant on the service; returns its API key."""
    body = {"tenant": tenant} | ({"framework": framework} if framework else {})
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/admin/tenants", data=json.dumps(body).encode(),
                                     method="POST", headers={"Authorization": f"Bearer {admin_key}",
                                                             "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["api_key"]


def delete_tenant(url: str, admin_key: str, tenant: str) -> None:
    """Remove a tenant and its memory (a missing one is fine: the goal is that it is gone)."""
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/admin/tenants/{tenant}", method="DELETE",
                                     headers={"Authorization": f"Bearer {admin_key}"})
    try:
        urllib.request.urlopen(request, timeout=60).read()
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise


def check_service(url: str, admin_key: str) -> None:
    """Refuse an unreachable service or a wrong admin key before any evaluation work starts.

    The key is checked with a tenant request whose name is invalid: the service checks the
    key first (401), then answers 422 for the name, so nothing is created.
    """
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/admin/tenants", data=b'{"tenant": ""}', method="POST",
                                     headers={"Authorization": f"Bearer {admin_key}",
                                              "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=30).read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise ValueError(f"{url} refused the admin key (HTTP {err.code}): set $MNEMORAY_ADMIN_KEY to the "
                             "service's admin key") from None
        if err.code != 422:
            raise ValueError(f"{url} is not a memory service: POST /v1/admin/tenants answered "
                             f"HTTP {err.code}") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{url} is not reachable: {getattr(err, 'reason', err)}") from None
    else:
        raise ValueError(f"{url} accepted an invalid tenant name: is it a memory service?")


PENDING_TIMEOUT_ENV = "MNEMORAY_SERVICE_PENDING_TIMEOUT_S"


def default_pending_timeout() -> float:
    raw = os.environ.get(PENDING_TIMEOUT_ENV, "600")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${PENDING_TIMEOUT_ENV}: not a number of seconds: {raw!r}") from None
    if value < 0:
        raise ValueError(f"${PENDING_TIMEOUT_ENV}: must be >= 0, got {raw!r}")
    return value


class ServiceMemory(MemoryFramework):
    name = "service"

    def __init__(self, client: MemoryClient, tenant: str | None = None, pending_timeout_s: float | None = None,
                 poll_interval_s: float = 0.2):
        """`pending_timeout_s`: how long a session the service left pending may take to finish
        (None: $MNEMORAY_SERVICE_PENDING_TIMEOUT_S, else 600)."""
        self.client = client
        self.tenant = tenant
        self.pending_timeout_s = default_pending_timeout() if pending_timeout_s is None else pending_timeout_s
        self.poll_interval_s = poll_interval_s
        self._turns: dict[str, str] = {}  # service turn id -> the dataset's turn id
        self.history_id: str | None = None  # the evaluated history this tenant holds, for errors

    @classmethod
    def fresh(cls, url: str, admin_key: str, framework: str | None = None, prefix: str = "eval",
              **options: float) -> ServiceMemory:
        """A memory on a new tenant of its own (one per history); `options`: pending_timeout_s,
        poll_interval_s."""
        tenant = f"{prefix}-{uuid.uuid4().hex[:16]}"
        return cls(MemoryClient(url, create_tenant(url, admin_key, tenant, framework)), tenant, **options)

    def ingest(self, session: Session, persona: Persona | None = None) -> list[MemoryOp]:
        turns = []
        for i, turn in enumerate(session.turns):
            self._turns[make_turn_id(session.id, i)] = turn.id
            turns.append({"speaker": turn.speaker or "?", "text": turn.text})
        out = self.client.add(turns, session_id=session.id, date=session.timestamp,
                              persona=persona.model_dump(include={"id", "name", "description", "facts"})
                              if persona else None)
        if out["status"] != "done":
            out = self._wait(session.id, out)
        return [MemoryOp(op=w["event"], target_id=w["id"], session_id=session.id) for w in out["written"]]

    def _wait(self, session_id: str, out: dict[str, Any]) -> dict[str, Any]:
        """Poll a pending session until the service applies it (its retry loop) or gives up."""
        deadline = time.monotonic() + self.pending_timeout_s
        while out["status"] == "pending" and time.monotonic() < deadline:
            time.sleep(min(self.poll_interval_s, max(0.0, deadline - time.monotonic())))
            out = self.client.session(session_id)
        if out["status"] == "done":
            return out
        why = ("the service gave up on it" if out["status"] == "failed"
               else f"still pending after {self.pending_timeout_s:g} s (${PENDING_TIMEOUT_ENV})")
        history = f"history {self.history_id!r}, " if self.history_id else ""
        raise RuntimeError(f"{history}memory service tenant {self.tenant!r}, session {session_id!r}: {why} "
                           f"after {out.get('attempts')} attempt(s); last error: {out.get('error')}")

    def _item(self, row: dict[str, Any]) -> MemoryItem:
        return MemoryItem(id=row["id"], text=row["text"], kind=row.get("kind", "chunk"), session_id=row["session_id"],
                          turn_ids=[self._turns.get(t, t) for t in row["turn_ids"]], timestamp=row.get("timestamp"),
                          metadata={"sessions": row.get("sessions", [])})

    def retrieve(self, query: str, k: int) -> list[RetrievedItem]:
        return [RetrievedItem(item=self._item(r), score=r["score"], rank=i)
                for i, r in enumerate(self.client.search(query, min(k, 100)), start=1)]

    def memory_items(self) -> list[MemoryItem]:
        return [self._item(r) for r in self.client.get_all()]

    def snapshot(self) -> dict[str, Any]:
        return {"export": self.client.export(), "turns": dict(self._turns)}

    def restore(self, state: dict[str, Any]) -> None:
        self.client.import_(state["export"])
        self._turns = dict(state["turns"])
