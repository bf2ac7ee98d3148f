"""Scoring a batch of rollouts with one reward, concurrently, with timeouts, retries and a rate limit.

Plain Python (no Ray): a reward actor holds one `RewardScorer`; tests and notebooks can
use it directly. Whatever a reward function does (raises, hangs, returns NaN), every item
gets exactly one `RewardResult`, in order; failures score 0.0 with `error` set and are
counted, never silently read as a real 0.

- async functions run on one event loop, `in_flight` at a time; a call past `timeout_s`
  is cancelled;
- sync functions run in a thread pool of `in_flight` threads; a call past `timeout_s` is
  abandoned (Python cannot stop a thread) and its thread is replaced;
- a call that raised or timed out is retried up to `max_retries` times; an invalid return
  value (NaN, no "score") is not retried: the function would return it again;
- judge rewards (`needs_judge`) get the batch with an engine (in chunks of one second's
  calls under a rate limit) and re-ask invalid replies themselves; the engine's own
  timeout and retries apply to each judge call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mnemoray.rewards.scoring import RewardResult, failure, function_name, normalize, run_awaitable


@dataclass(frozen=True)
class RewardItem:
    """One rollout to score, in verl's `compute_score` terms; `id` is unique within a step."""

    id: str
    data_source: str
    solution_str: str
    ground_truth: Any = None
    extra_info: dict[str, Any] = field(default_factory=dict)


def resolve_reward(reward: str) -> tuple[Callable[..., Any], bool, Callable[[RewardItem], Any] | None]:
    """(function, needs_judge, item adapter) of a registered name or a 'file.py:function' reference."""
    from mnemoray.config.rl import is_file_reference
    from mnemoray.registry import load_target
    from mnemoray.rewards.registry import REWARDS, load_custom_reward

    if is_file_reference(reward):
        return load_custom_reward(reward), False, None
    spec = REWARDS.spec(reward)
    adapter = load_target(spec.item_adapter) if spec.item_adapter else None
    return REWARDS.load(reward), spec.needs_judge, adapter


def engine_optional(reward: str) -> bool:
    """Whether a judge reward also runs without an engine (registry flag; file references never need one)."""
    from mnemoray.config.rl import is_file_reference
    from mnemoray.rewards.registry import REWARDS

    return is_file_reference(reward) or REWARDS.spec(reward).engine_optional


class RateLimiter:
    """Starts at most `per_s` calls per second (evenly spaced); None = no limit."""

    def __init__(self, per_s: float | None):
        self.interval = 1.0 / per_s if per_s else 0.0
        self.next_at = 0.0

    def delay(self) -> float:
        """Seconds to wait before the next call may start (and reserve that slot)."""
        if not self.interval:
            return 0.0
        now = time.monotonic()
        start = max(now, self.next_at)
        self.next_at = start + self.interval
        return start - now


@dataclass
class ScorerStats:
    calls: int = 0
    retries: int = 0
    timeouts: int = 0
    failed: int = 0


class RewardScorer:
    def __init__(self, reward: str, *, in_flight: int = 8, timeout_s: float = 30.0, max_retries: int = 1,
                 rate_limit_per_s: float | None = None, engine: Any = None, judge_retries: int = 2):
        self.reward = reward
        self.fn, self.needs_judge, self.adapter = resolve_reward(reward)
        if self.needs_judge and engine is None and not engine_optional(reward):
            raise ValueError(f"reward {reward!r} calls an LLM judge: give it an engine")
        self.name = function_name(self.fn)
        self.in_flight, self.timeout_s, self.max_retries = in_flight, timeout_s, max_retries
        self.engine, self.judge_retries = engine, judge_retries
        self.limiter = RateLimiter(rate_limit_per_s)
        # judge rewards send a batch to the engine: with a rate limit, chunks of about one
        # second's worth of calls, each started 1 s after the previous one
        self.judge_chunk = max(1, int(rate_limit_per_s)) if rate_limit_per_s else in_flight
        self.chunk_limiter = RateLimiter(rate_limit_per_s / self.judge_chunk if rate_limit_per_s else None)
        self.stats = ScorerStats()
        self.is_async = inspect.iscoroutinefunction(self.fn)
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None

    def score(self, items: Sequence[RewardItem]) -> list[RewardResult]:
        """One result per item, in order; never raises for a bad reward."""
        if not items:
            return []
        if self.needs_judge:
            results = self.score_judged(items)
        elif self.is_async:
            results = asyncio.run(self.score_async(items))
        else:
            results = self.score_threads(items)
        self.stats.failed += sum(r.failed for r in results)
        return results

    def score_judged(self, items: Sequence[RewardItem]) -> list[RewardResult]:
        judge_items, results, where = [], [None] * len(items), []
        for i, item in enumerate(items):
            try:
                judge_items.append(self.adapter(item) if self.adapter else item)
                where.append(i)
            except Exception as err:  # noqa: BLE001 - a malformed item fails alone
                results[i] = failure(self.name, f"item {item.id}: {err}")
        self.stats.calls += len(judge_items)
        scored: list[RewardResult] = []
        for start in range(0, len(judge_items), self.judge_chunk):  # the rate limit paces whole chunks
            time.sleep(self.chunk_limiter.delay())
            scored += self.fn(self.engine, judge_items[start : start + self.judge_chunk], self.judge_retries)
        for i, result in zip(where, scored, strict=True):
            results[i] = result
        return results

    def call_args(self, item: RewardItem) -> tuple[Any, ...]:
        return item.data_source, item.solution_str, item.ground_truth, dict(item.extra_info)

    async def score_async(self, items: Sequence[RewardItem]) -> list[RewardResult]:
        gate = asyncio.Semaphore(self.in_flight)

        async def one(item: RewardItem) -> RewardResult:
            async with gate:
                for attempt in range(self.max_retries + 1):
                    await asyncio.sleep(self.limiter.delay())
                    self.stats.calls += 1
                    self.stats.retries += attempt > 0
                    try:
                        value = await asyncio.wait_for(self.fn(*self.call_args(item)), self.timeout_s)
                    except TimeoutError:
                        self.stats.timeouts += 1
                        reason = f"timed out after {self.timeout_s:g} s"
                    except Exception as err:  # noqa: BLE001 - counted, retried
                        reason = f"raised {type(err).__name__}: {err}"
                    else:
                        return self.read(value)
                return failure(self.name, f"item {item.id}: {reason} ({self.max_retries + 1} attempts)")

        return list(await asyncio.gather(*(one(item) for item in items)))

    def score_threads(self, items: Sequence[RewardItem]) -> list[RewardResult]:
        results: list[RewardResult | None] = [None] * len(items)
        attempts = [0] * len(items)
        reasons: dict[int, str] = {}
        pending: dict[concurrent.futures.Future, tuple[int, float]] = {}
        todo = list(range(len(items)))
        while todo or pending:
            while todo and len(pending) < self.in_flight:
                i = todo.pop(0)
                time.sleep(self.limiter.delay())
                attempts[i] += 1
                self.stats.calls += 1
                self.stats.retries += attempts[i] > 1
                pending[self.executor().submit(self.fn, *self.call_args(items[i]))] = (i, time.monotonic())
            deadline = min(started for _, started in pending.values()) + self.timeout_s
            done, _ = concurrent.futures.wait(pending, timeout=max(0.0, deadline - time.monotonic()),
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                i, _ = pending.pop(future)
                try:
                    results[i] = self.read(future.result())
                    continue
                except Exception as err:  # noqa: BLE001 - counted, retried
                    reasons[i] = f"raised {type(err).__name__}: {err}"
                self.retry_or_fail(i, items, attempts, reasons, todo, results)
            now = time.monotonic()
            for future, (i, started) in list(pending.items()):
                if now - started >= self.timeout_s:
                    del pending[future]
                    self.stats.timeouts += 1
                    self.abandon()  # its thread may never return: later calls get fresh threads
                    reasons[i] = f"timed out after {self.timeout_s:g} s"
                    self.retry_or_fail(i, items, attempts, reasons, todo, results)
        return [r for r in results if r is not None]

    def retry_or_fail(self, i: int, items: Sequence[RewardItem], attempts: list[int], reasons: dict[int, str],
                      todo: list[int], results: list[RewardResult | None]) -> None:
        if attempts[i] <= self.max_retries:
            todo.append(i)
        else:
            results[i] = failure(self.name, f"item {items[i].id}: {reasons[i]} ({attempts[i]} attempts)")

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self.pool is None:
            self.pool = concurrent.futures.ThreadPoolExecutor(self.in_flight, thread_name_prefix="reward")
        return self.pool

    def abandon(self) -> None:
        """Leave the current pool to its stuck threads; the next call starts a new one."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=False)
            self.pool = None

    def read(self, value: Any) -> RewardResult:
        if inspect.isawaitable(value):  # a sync function that returned a coroutine
            value = run_awaitable(value)
        try:
            return normalize(value, self.name)
        except Exception as err:  # noqa: BLE001 - e.g. a returned object whose __float__ raises
            return failure(self.name, f"returned a value that could not be read ({type(err).__name__}: {err})")

    def close(self) -> None:
        self.abandon()
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()


__all__ = ["RateLimiter", "engine_optional", "RewardItem", "RewardScorer", "ScorerStats", "resolve_reward"]
