"""Fixtures for memory-framework tests: a scripted engine for control-flow tests, one torch thread."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from mnemoray.llm.types import ChatRequest, ChatResult, Usage


class ScriptedEngine:
    """Answers each request with `script(call, request)` (a str, or a JSON value to dump); logs batches."""

    name = "scripted"
    model = "scripted"

    def __init__(self, script: Callable[[str, ChatRequest], Any]):
        self.script = script
        self.batches: list[list[str]] = []

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        self.batches.append([r.metadata.get("call", "") for r in requests])
        out = []
        for r in requests:
            answer = self.script(r.metadata.get("call", ""), r)
            text = answer if isinstance(answer, str) else json.dumps(answer)
            out.append(ChatResult(id=r.id, text=text, usage=Usage(prompt_tokens=10, completion_tokens=5)))
        return out


@pytest.fixture
def scripted():
    return ScriptedEngine
