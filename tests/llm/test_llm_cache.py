"""Response cache: hits skip the engine, only successes are stored, shared across instances."""

from __future__ import annotations

from pathlib import Path

from mnemoray.llm.cache import CachedEngine, ResponseCache, cache_key
from mnemoray.llm.hf_engine import HFEngine
from mnemoray.llm.types import ChatMessage, ChatRequest, ChatResult, SamplingParams


def req(text: str, rid: str = "", **kw) -> ChatRequest:
    return ChatRequest(id=rid, messages=[ChatMessage(role="user", content=text)],
                       params=SamplingParams(max_tokens=6), **kw)


class Counting:
    """Wraps a real engine and records what reached it."""

    def __init__(self, inner):
        self.inner, self.name, self.model, self.seen = inner, inner.name, inner.model, []

    def generate(self, requests):
        self.seen.append([r.id for r in requests])
        return self.inner.generate(requests)


def test_hits_skip_the_engine(engine: HFEngine, tmp_path: Path):
    counting = Counting(engine)
    cached = CachedEngine(counting, ResponseCache(tmp_path / "cache"))
    first = cached.generate([req("alpha", "a"), req("beta", "b")])
    assert not any(r.cached for r in first) and counting.seen == [["a", "b"]]
    # Same content under another id is a hit; new content is a miss; order is kept.
    second = cached.generate([req("gamma", "g"), req("alpha", "a2"), req("beta", "b2")])
    assert counting.seen[-1] == ["g"]
    assert [r.id for r in second] == ["g", "a2", "b2"]
    assert [r.cached for r in second] == [False, True, True]
    assert [r.text for r in second[1:]] == [r.text for r in first]
    assert second[1].usage == first[0].usage


def test_key_covers_what_changes_the_answer():
    base = req("x")
    keys = {
        cache_key("hf", "m", base),
        cache_key("hf", "other-model", base),
        cache_key("openai", "m", base),
        cache_key("hf", "m", base.model_copy(update={"seed": 1})),
        cache_key("hf", "m", base.model_copy(update={"params": SamplingParams(max_tokens=7)})),
        cache_key("hf", "m", base.model_copy(update={"json_schema": {"type": "object"}})),
        cache_key("hf", "m", req("y")),
    }
    assert len(keys) == 7
    assert cache_key("hf", "m", base) == cache_key("hf", "m", req("x", rid="other", metadata={"k": 1}))


def test_failures_are_not_stored_and_cache_is_shared(tmp_path: Path):
    class Flaky:
        name, model = "flaky", "m"

        def __init__(self):
            self.calls = 0

        def generate(self, requests):
            self.calls += 1
            if self.calls == 1:
                return [ChatResult(id=r.id, error="HTTP 500", error_kind="http") for r in requests]
            return [ChatResult(id=r.id, text=f"answer {self.calls}") for r in requests]

    flaky = Flaky()
    first = CachedEngine(flaky, ResponseCache(tmp_path))
    assert first.generate([req("q")])[0].error_kind == "http"
    assert len(ResponseCache(tmp_path)) == 0
    assert first.generate([req("q")])[0].text == "answer 2"
    # A second cache object on the same folder (another worker) sees the stored answer.
    other = CachedEngine(flaky, ResponseCache(tmp_path)).generate([req("q")])[0]
    assert other.cached and other.text == "answer 2" and flaky.calls == 2


def test_concurrent_writers_lose_nothing(tmp_path: Path):
    import threading

    def writer(n: int) -> None:
        cache = ResponseCache(tmp_path)  # one object per worker, as separate Ray actors would have
        for i in range(40):
            cache.put_many([(f"{n}-{i}", ChatResult(id=f"{n}-{i}", text=str(i)))])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cache = ResponseCache(tmp_path)
    assert len(cache) == 160
    assert cache.get_many(["3-39", "0-0", "missing"]).keys() == {"3-39", "0-0"}


def test_close_reaches_the_wrapped_engine(tmp_path: Path, scripted_engine):
    class Closable(scripted_engine):
        closed = 0

        def close(self):
            self.closed += 1

    inner = Closable(lambda r: "x")
    CachedEngine(inner, ResponseCache(tmp_path)).close()
    assert inner.closed == 1
    CachedEngine(scripted_engine(lambda r: "x"), ResponseCache(tmp_path / "b")).close()  # nothing to close: fine
