"""Batching inside a persona worker without Ray: the coalescer and the encode batcher (a machine
whose encodes go out as requests is tested with the other machine tests in test_realmem_units.py)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mnemoray.synth.realmem.batching import Coalescer, EncodeBatcher


def test_callers_waiting_together_share_one_call_and_get_their_own_answers():
    seen: list[list[int]] = []

    async def serve(items):
        seen.append(list(items))
        await asyncio.sleep(0)  # yields to the loop (no wall time): later callers queue meanwhile
        return [i * 10 for i in items]

    async def main():
        co = Coalescer(serve, max_batch=5)
        return await asyncio.gather(*(co.ask([i, i + 100]) for i in range(6))), co

    answers, co = asyncio.run(main())
    assert answers == [[i * 10, (i + 100) * 10] for i in range(6)]
    assert len(seen) < 6 and all(len(batch) <= 5 for batch in seen)  # batched, never over the bound
    assert sorted(x for batch in seen for x in batch) == sorted(x for i in range(6) for x in (i, i + 100))
    assert co.mean_batch() > 2


def test_a_failed_batch_fails_only_its_callers():
    async def serve(items):
        if "bad" in items:
            raise RuntimeError("engine down")
        return [s.upper() for s in items]

    async def main():
        co = Coalescer(serve, max_batch=1)
        return await asyncio.gather(co.ask(["ok"]), co.ask(["bad"]), co.ask(["fine"]), return_exceptions=True)

    ok, bad, fine = asyncio.run(main())
    assert ok == ["OK"] and fine == ["FINE"]
    assert isinstance(bad, RuntimeError) and "engine down" in str(bad)
    with pytest.raises(ValueError, match="max_batch"):
        Coalescer(lambda items: items, max_batch=0)


def test_batched_vectors_are_the_encoders_own(embedder):
    texts = [[f"note {i} about the trip", "shared text"] for i in range(8)]

    async def main():
        batcher = EncodeBatcher(embedder)
        return await asyncio.gather(*(batcher.encode(t) for t in texts)), batcher

    vectors, batcher = asyncio.run(main())
    assert batcher.coalescer.batches < len(texts)
    for t, v in zip(texts, vectors, strict=True):
        assert np.allclose(v, embedder.encode(t), atol=1e-5)


def test_a_worker_encodes_in_small_chunks_to_the_same_vectors(embedder):
    """The persona worker's chunk size (ray.encode_batch) is a cost choice: the vectors stay the encoder's."""
    from mnemoray.config.synth import RealMemSynthConfig
    from mnemoray.index.embedder import Embedder

    cfg = RealMemSynthConfig.model_validate({"personas": "p.jsonl"})
    assert cfg.ray.encode_batch == 8
    small = Embedder(embedder.path, batch_size=cfg.ray.encode_batch, store=None)
    texts = ["a short note"] + [f"a much longer note number {i} about the trip to the coast " * (i % 3 + 1)
                                for i in range(20)]
    assert np.allclose(small.encode(texts), embedder.encode(texts), atol=1e-5)
