"""`ServiceMemory`'s wait on sessions the service answered `pending` (control flow only).

The service side of pending / failed sessions runs for real in test_service_core.py and,
through Serve with the fault endpoint, in tests/distributed/serve/test_memory_service.py;
here a scripted client plays the service's answers so the branch where the service gives
up (`failed`) is covered without waiting for its retries.
"""

from __future__ import annotations

import pytest

from mnemoray.records import Session, Turn
from mnemoray.service.remote import ServiceMemory


class ScriptedClient:
    """Answers `add` with the first status and each `session` poll with the next one."""

    def __init__(self, statuses: list[dict]):
        self.statuses = list(statuses)
        self.polls = 0

    def add(self, turns, session_id, date=None, persona=None):
        return self.statuses.pop(0)

    def session(self, session_id):
        self.polls += 1
        return self.statuses.pop(0)


def _session() -> Session:
    return Session(id="s9", timestamp="9 May 2024", turns=[
        Turn(id="d-s9-0", speaker="user", text="I keep three goats.", index=0)])


def _pending(attempts: int, error: str | None = "503 from the memory model") -> dict:
    return {"session_id": "s9", "status": "pending", "attempts": attempts, "error": error, "written": []}


def test_a_session_the_service_gives_up_on_fails_naming_history_tenant_attempts_and_error():
    failed = {"session_id": "s9", "status": "failed", "attempts": 3, "error": "memory model failed on 2 call(s)",
              "written": []}
    client = ScriptedClient([_pending(1), _pending(2), failed])
    memory = ServiceMemory(client, tenant="eval-abc", pending_timeout_s=60, poll_interval_s=0)
    memory.history_id = "conv-3"
    with pytest.raises(RuntimeError) as err:
        memory.ingest(_session())
    message = str(err.value)
    assert message.startswith("history 'conv-3', memory service tenant 'eval-abc', session 's9': ")
    assert "the service gave up on it after 3 attempt(s)" in message
    assert message.endswith("last error: memory model failed on 2 call(s)")
    assert client.polls == 2 and not client.statuses  # stopped polling at `failed`


def test_a_pending_session_that_finishes_returns_the_ops_it_wrote():
    done = {"session_id": "s9", "status": "done", "attempts": 2, "error": None,
            "written": [{"event": "ADD", "id": "m1"}, {"event": "UPDATE", "id": "m0"}]}
    client = ScriptedClient([_pending(1), done])
    memory = ServiceMemory(client, tenant="eval-abc", pending_timeout_s=60, poll_interval_s=0)
    ops = memory.ingest(_session())
    assert [(op.op, op.target_id, op.session_id) for op in ops] == [("ADD", "m1", "s9"), ("UPDATE", "m0", "s9")]
    assert client.polls == 1
