"""The request path every engine deployment shares: with batching, concurrent requests are
grouped by `@serve.batch` into one engine call; without, the replica runs them one at a
time (the baseline benchmarks compare against). Counts what the engine was handed, so a
test or benchmark can see whether batching happened. Mixed into `serve llm`'s
`HFChatModel` and the memory service's `MemoryModel`."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from mnemoray.llm.types import ChatRequest, ChatResult


class BatchedEngine:
    """Call `_init_batching` from the deployment's `__init__`; `self.engine` is any engine
    with `generate(list[ChatRequest]) -> list[ChatResult]`."""

    engine: Any

    def _init_batching(self, batching: bool, max_batch_size: int, wait_s: float) -> None:
        self.batching = batching
        self._one_at_a_time = asyncio.Lock()
        self._stats = {"calls": 0, "requests": 0, "max_batch": 0}
        self.generate_batch.set_max_batch_size(max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(wait_s)

    async def generate(self, request: ChatRequest) -> ChatResult:
        if self.batching:
            return await self.generate_batch(request)
        async with self._one_at_a_time:
            self._count(1)
            return (await asyncio.to_thread(self.engine.generate, [request]))[0]

    def _count(self, size: int) -> None:
        self._stats["calls"] += 1
        self._stats["requests"] += size
        self._stats["max_batch"] = max(self._stats["max_batch"], size)

    def batch_stats(self) -> dict[str, int]:
        """Engine calls and the largest batch: shows whether dynamic batching happened."""
        return dict(self._stats)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.05)
    async def generate_batch(self, requests: list[ChatRequest]) -> list[ChatResult]:
        self._count(len(requests))
        # off the event loop, so the replica keeps accepting (and batching) requests
        results = await asyncio.to_thread(self.engine.generate, requests)
        if len(results) != len(requests):  # never let a request hang on a short answer
            return [ChatResult(id=r.id, error="engine lost the result", error_kind="engine") for r in requests]
        return results


__all__ = ["BatchedEngine"]
