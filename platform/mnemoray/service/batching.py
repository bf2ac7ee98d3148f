"""Query vectors for the memory service's searches (docs/ARCHITECTURE.md, "Memory service").

`QueryBatcher` lets concurrent searches share one forward pass without a timer: a lone
query is encoded at once; queries arriving while a pass runs queue up, and the next pass
takes them all (up to `max_batch`). A single-text forward costs several times the CPU per
text of a batched one, so under load this is where a search's CPU goes down.

`PrimedEmbedder` is what tenant frameworks see as their embedder (`dim`, `encode`): the
query vector the event loop already fetched (batched) is handed back at once, and any
other text is encoded by the given function (from a worker thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

EncodeFn = Callable[[list[str]], np.ndarray]


class QueryBatcher:
    """Concurrent single-text encodes share forward passes (one pass at a time)."""

    def __init__(self, encode: EncodeFn, max_batch: int = 32) -> None:
        self._encode = encode
        self.max_batch = max_batch
        self._queue: list[tuple[str, asyncio.Future]] = []
        self._runner: asyncio.Task | None = None
        self.stats = {"calls": 0, "texts": 0, "max_batch": 0, "shared_searches": 0}

    async def encode(self, text: str) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((text, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            texts = list(dict.fromkeys(text for text, _ in batch))  # the same query twice: encoded once
            try:
                vectors = await asyncio.to_thread(self._encode, texts)
            except Exception as err:  # noqa: BLE001 - every waiting search gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            self._count(len(texts), len(batch))
            row = {text: i for i, text in enumerate(texts)}
            for text, future in batch:
                if not future.done():  # its caller may have given up (cancelled)
                    future.set_result(vectors[row[text]])

    def _count(self, texts: int, searches: int) -> None:
        self.stats["calls"] += 1
        self.stats["texts"] += texts
        self.stats["max_batch"] = max(self.stats["max_batch"], texts)
        if searches > 1:
            self.stats["shared_searches"] += searches


class PrimedEmbedder:
    """The frameworks' embedder: primed query vectors first, else `encode` (called from
    worker threads, never from the event loop)."""

    def __init__(self, encode: EncodeFn, dim: Callable[[], int], limit: int = 4096) -> None:
        self._encode = encode
        self._dim_fn = dim
        self._dim: int | None = None
        self._limit = limit
        self._primed: dict[str, np.ndarray] = {}

    def prime(self, text: str, vector: np.ndarray) -> None:
        """Keep a vector the caller already has, so `encode([text])` returns it at once."""
        if len(self._primed) > self._limit:
            self._primed.clear()
        self._primed[text] = np.asarray(vector, dtype=np.float32)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._dim_fn())
        return self._dim

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) == 1:
            primed = self._primed.get(texts[0])
            if primed is not None:
                return primed[None, :]
        return np.asarray(self._encode(list(texts)), dtype=np.float32)
