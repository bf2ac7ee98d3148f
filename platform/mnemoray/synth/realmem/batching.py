"""Batching of many persona machines' small requests inside one asyncio worker (no Ray).

One persona asks one thing at a time, so a worker running a hundred personas sees a hundred
tiny requests: a sentence encode of one text costs about three times per text what it costs
in a batch, and every LLM call sent alone pays the transport's fixed cost. Both batchers
here take what the coroutines ask, and whatever accumulates while one batch is being served
goes out as the next batch, with the asks of callers resumed in the same event-loop tick:
no timer, no waiting for a batch to fill; one caller alone gets a batch of one at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np


class Coalescer:
    """Calls `serve(list of items) -> list of answers` with the items of every waiting caller.

    At most `max_batch` items per call and `max_running` calls at once; each caller gets the
    answers of its own items, in order. An exception of `serve` goes to every caller of that batch.
    """

    def __init__(self, serve: Callable[[list[Any]], Awaitable[list[Any]]], max_batch: int, max_running: int = 1):
        if max_batch < 1 or max_running < 1:
            raise ValueError(f"max_batch and max_running must be >= 1 (got {max_batch}, {max_running})")
        self.serve = serve
        self.max_batch = max_batch
        self.max_running = max_running
        self.queue: list[tuple[list[Any], asyncio.Future]] = []
        self.running = 0
        self.scheduled = False
        self.batches = 0
        self.items = 0

    async def ask(self, items: list[Any]) -> list[Any]:
        if not items:
            return []
        future = asyncio.get_running_loop().create_future()
        self.queue.append((list(items), future))
        if not self.scheduled:  # after the callbacks ready now: callers resumed in this tick join
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._start)
        return await future

    def _start(self) -> None:
        self.scheduled = False
        while self.queue and self.running < self.max_running:
            batch, size = [], 0
            while self.queue and (not batch or size + len(self.queue[0][0]) <= self.max_batch):
                entry = self.queue.pop(0)
                batch.append(entry)
                size += len(entry[0])
            self.running += 1
            asyncio.get_running_loop().create_task(self._serve(batch))

    async def _serve(self, batch: list[tuple[list[Any], asyncio.Future]]) -> None:
        try:
            flat = [item for items, _ in batch for item in items]
            self.batches += 1
            self.items += len(flat)
            try:
                answers = await self.serve(flat)
                if len(answers) != len(flat):
                    raise RuntimeError(f"batch of {len(flat)} answered with {len(answers)}")
            except Exception as err:  # noqa: BLE001 - every caller of the batch gets it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                return
            start = 0
            for items, future in batch:
                if not future.done():
                    future.set_result(answers[start:start + len(items)])
                start += len(items)
        finally:
            self.running -= 1
            self._start()

    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class EncodeBatcher:
    """Sentence vectors for many coroutines, one `embedder.encode` per batch of distinct texts,
    run in a thread (the encoder releases the GIL) so the event loop keeps serving the others."""

    def __init__(self, embedder: Any, max_batch: int = 256):
        self.embedder = embedder
        self.coalescer = Coalescer(self._encode, max_batch)

    async def _encode(self, texts: list[str]) -> list[np.ndarray]:
        distinct = list(dict.fromkeys(texts))
        vectors = await asyncio.to_thread(self.embedder.encode, distinct)
        by_text = dict(zip(distinct, vectors, strict=True))
        return [by_text[t] for t in texts]

    async def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack(await self.coalescer.ask(texts))


__all__ = ["Coalescer", "EncodeBatcher"]
