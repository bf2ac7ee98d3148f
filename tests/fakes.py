"""Stand-ins for control-flow tests only (parsing, retries, failure counting, ordering).

Every component they replace also has tests on real parts: the engines on the tiny model
and the fault endpoint, the memories on real embeddings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mnemoray.llm.types import ChatRequest, ChatResult, Usage
from mnemoray.records import MemoryItem, RetrievedItem

Script = Callable[[ChatRequest], Any] | dict[str, list[str]]


class ScriptedEngine:
    """Answers each request from a script, in order, and records every batch it was given.

    `script` is either `request -> reply` (a str, or a JSON value sent as its dump) or a
    dict `{first message text: [reply of the first ask, of the first re-ask, ...]}` (a
    re-ask appends the bad answer and the feedback, so turn = (messages - 1) // 2).
    """

    name = "scripted"
    model = "scripted"

    def __init__(self, script: Script, usage: tuple[int, int] = (10, 5), latency_s: float = 0.5):
        self.script = script
        self.usage = usage
        self.latency_s = latency_s
        self.calls: list[list[ChatRequest]] = []

    @property
    def seen(self) -> list[ChatRequest]:
        """Every request, in the order the engine got them."""
        return [r for batch in self.calls for r in batch]

    @property
    def batches(self) -> list[list[str]]:
        """Each batch as the `call` names its requests carry (memory frameworks tag them)."""
        return [[r.metadata.get("call", "") for r in batch] for batch in self.calls]

    def reply(self, request: ChatRequest) -> str:
        if isinstance(self.script, dict):
            answers = self.script[request.messages[0].content]
            return answers[min((len(request.messages) - 1) // 2, len(answers) - 1)]
        answer = self.script(request)
        return answer if isinstance(answer, str) else json.dumps(answer)

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        self.calls.append(list(requests))
        prompt, completion = self.usage
        return [ChatResult(id=r.id, text=self.reply(r), latency_s=self.latency_s,
                           usage=Usage(prompt_tokens=prompt, completion_tokens=completion)) for r in requests]


class ListMemory:
    """Every ingested session's first turn is one memory item; retrieval returns them in order and
    records how many sessions it had ingested by then (`seen_at`)."""

    def __init__(self):
        self.sessions, self.seen_at = [], []

    def ingest_many(self, sessions, persona=None):
        self.sessions.extend(sessions)

    def retrieve_many(self, queries, k):
        self.seen_at.append(len(self.sessions))
        items = [MemoryItem(id=s.id, text=s.turns[0].text, session_id=s.id, timestamp=s.timestamp)
                 for s in self.sessions]
        return [[RetrievedItem(item=it, score=1.0, rank=i) for i, it in enumerate(items[:k])] for _ in queries]
