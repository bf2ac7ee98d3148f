"""OpenAI chat-completions wire format <-> the engine contract (no Ray, no HTTP here).

Only what a batch client needs: messages, sampling, seed, `response_format` (json_schema
or json_object). Features we cannot honour (streaming, n > 1, tools) are refused with a
400 rather than silently ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mnemoray.llm.types import ChatMessage, ChatRequest, ChatResult, SamplingParams


class ProtocolError(ValueError):
    """A request we refuse; carries the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatCompletionBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[_Message] = Field(min_length=1)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    n: int = 1
    stream: bool = False
    tools: list[Any] | None = None


def schema_from_response_format(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    if not fmt or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "object"}
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise ProtocolError("response_format.json_schema.schema must be an object")
        return schema
    raise ProtocolError(f"unsupported response_format type {fmt['type']!r}")


def to_chat_request(body: dict[str, Any], request_id: str | None = None) -> tuple[str, ChatRequest]:
    """Validate an OpenAI request body; return (requested model, engine request)."""
    try:
        parsed = ChatCompletionBody.model_validate(body)
    except ValidationError as err:
        raise ProtocolError(f"invalid request: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}") from None
    if parsed.stream:
        raise ProtocolError("stream=true is not supported by this endpoint")
    if parsed.n != 1:
        raise ProtocolError("only n=1 is supported")
    if parsed.tools:
        raise ProtocolError("tools are not supported")
    params: dict[str, Any] = {}
    if parsed.temperature is not None:
        params["temperature"] = parsed.temperature
    if parsed.top_p is not None:
        params["top_p"] = parsed.top_p
    max_tokens = parsed.max_completion_tokens or parsed.max_tokens
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if parsed.stop:
        params["stop"] = [parsed.stop] if isinstance(parsed.stop, str) else parsed.stop
    try:
        request = ChatRequest(
            id=request_id or "",
            messages=[ChatMessage(role=m.role, content=m.text()) for m in parsed.messages],
            params=SamplingParams(**params),
            seed=parsed.seed,
            json_schema=schema_from_response_format(parsed.response_format),
        )
    except ValidationError as err:
        raise ProtocolError(f"invalid sampling parameters: {err.errors()[0]['msg']}") from None
    return parsed.model, request


def to_completion(model: str, result: ChatResult, max_tokens: int) -> dict[str, Any]:
    usage = result.usage
    finish = "length" if usage.completion_tokens >= max_tokens else "stop"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
    }


def error_body(message: str, status: int, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": status}}


def models_body(model_ids: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "mnemoray"} for m in model_ids],
    }
