"""The LLM engine contract shared by every engine (openai, hf, vllm) — plain pydantic.

A batch of ChatRequests goes in; one ChatResult per request comes out, in the same order,
each either a completion (text, optional parsed JSON, usage, timing) or a typed failure
(`error` set, raw text kept). Nothing is dropped silently.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from mnemoray.ids import stable_id


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    content: str


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    stop: list[str] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = ""
    messages: list[ChatMessage]
    params: SamplingParams = Field(default_factory=SamplingParams)
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, _: Any) -> None:
        if not self.id:
            self.id = stable_id(
                [m.model_dump() for m in self.messages], self.params.model_dump(), self.seed, self.json_schema
            )


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ChatResult(BaseModel):
    """One request's outcome. `error` is None on success; on failure `text` keeps the raw output."""

    id: str
    text: str = ""
    parsed: Any = None
    error: str | None = None
    error_kind: str | None = None  # e.g. "http", "timeout", "parse", "schema", "engine"
    attempts: int = 1
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Engine(Protocol):
    """Every engine: `generate(batch) -> results` in request order."""

    name: str
    model: str

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]: ...


def close_engine(engine: Any) -> None:
    """Release what an engine holds (pooled connections, an engine process), for engines
    that hold anything: `close()` is optional in the Engine protocol."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()
