"""Query vectors of the memory service without Ray: concurrent searches share forward passes
(the real MiniLM), each gets its own query's vector, errors reach every waiting search, and
primed vectors spare the frameworks a second encode."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mnemoray.service.batching import PrimedEmbedder, QueryBatcher

QUERIES = ["what is my dog called?", "where does my sister work?", "what is my dog called?",
           "which city is the new job in?", "what did I plant in the garden?", "when is the marathon?"]


class Counting:
    """The real embedder, recording each forward pass's texts."""

    def __init__(self, inner, fail: bool = False):
        self.inner = inner
        self.passes: list[list[str]] = []
        self.fail = fail

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.passes.append(list(texts))
        if self.fail:
            raise ConnectionError("encoder lost")
        return self.inner.encode(texts)


def test_concurrent_queries_share_passes_and_each_gets_its_own_vector(embedder):
    encode = Counting(embedder)
    batcher = QueryBatcher(encode, max_batch=4)

    async def searches() -> tuple[np.ndarray, list[np.ndarray]]:
        lone = await batcher.encode(QUERIES[0])
        return lone, await asyncio.gather(*(batcher.encode(q) for q in QUERIES))

    lone, together = asyncio.run(searches())
    assert encode.passes[0] == [QUERIES[0]]  # a lone query is encoded at once, alone
    assert encode.passes[1] == list(dict.fromkeys(QUERIES[:4]))  # the repeated query once per pass
    assert encode.passes[2] == QUERIES[4:] and len(encode.passes) == 3
    alone = embedder.encode(QUERIES)
    for i, vector in enumerate(together):
        assert np.allclose(vector, alone[i], atol=1e-5), QUERIES[i]
    assert np.allclose(lone, alone[0], atol=1e-5)
    assert batcher.stats == {"calls": 3, "texts": 1 + 3 + 2, "max_batch": 3, "shared_searches": 6}


def test_a_failed_pass_fails_every_waiting_search_and_the_next_pass_works(embedder):
    encode = Counting(embedder, fail=True)
    batcher = QueryBatcher(encode)

    async def searches() -> list:
        return await asyncio.gather(*(batcher.encode(q) for q in QUERIES[:3]), return_exceptions=True)

    assert all(isinstance(r, ConnectionError) for r in asyncio.run(searches()))
    encode.fail = False
    assert asyncio.run(batcher.encode(QUERIES[1])).shape == (embedder.dim,)


def test_primed_vectors_spare_a_second_encode(embedder):
    encode = Counting(embedder)
    frameworks = PrimedEmbedder(encode, lambda: embedder.dim)
    vector = embedder.encode([QUERIES[1]])[0]
    frameworks.prime(QUERIES[1], vector)
    assert np.array_equal(frameworks.encode([QUERIES[1]])[0], vector) and encode.passes == []
    assert frameworks.encode(QUERIES[:2]).shape == (2, embedder.dim) and encode.passes == [QUERIES[:2]]
    assert frameworks.encode([]).shape == (0, embedder.dim) and frameworks.dim == embedder.dim
    with pytest.raises(ConnectionError):
        PrimedEmbedder(Counting(embedder, fail=True), lambda: embedder.dim).encode([QUERIES[2]])
