"""Calling a reward function safely: one `RewardResult` per call, whatever the function does.

A reward function (verl's `compute_score(data_source, solution_str, ground_truth,
extra_info=None)`) may be sync or async and may return a number, a bool or a dict with a
"score" and extra keys. A bad reward must not pass as a real 0 and must not crash a
training step: raising, NaN/inf, a non-number or a dict without "score" becomes a
`RewardResult` with score 0.0 and `error` naming the function, so it is counted.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import numbers
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RewardResult:
    score: float
    extras: dict[str, Any] = field(default_factory=dict)  # logged next to the score (a dict return's other keys)
    error: str | None = None  # set when the reward could not be computed; the score is then 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None


def function_name(fn: Callable[..., Any]) -> str:
    """`module.qualname` of a function, for error texts."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else name


def failure(fn_name: str, reason: str, extras: Mapping[str, Any] | None = None) -> RewardResult:
    return RewardResult(0.0, dict(extras or {}), f"{fn_name}: {reason}")


def as_score(value: Any) -> float:
    """A finite float from a number or a bool (True → 1.0); ValueError otherwise."""
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"score is too large for a float ({value!r:.40})") from None
        if math.isfinite(number):
            return number
        raise ValueError(f"score is not finite ({number})")
    raise ValueError(f"score is not a number: {type(value).__name__} {value!r:.200}")


def normalize(value: Any, fn_name: str) -> RewardResult:
    """The RewardResult of one returned value (number, bool or dict with "score")."""
    if isinstance(value, Mapping):
        if "score" not in value:
            return failure(fn_name, f"returned a dict without 'score' (keys: {sorted(map(str, value))})")
        extras = {str(k): v for k, v in value.items() if k != "score"}
        try:
            return RewardResult(as_score(value["score"]), extras)
        except ValueError as err:
            return failure(fn_name, str(err), extras)
    try:
        return RewardResult(as_score(value))
    except ValueError as err:
        return failure(fn_name, str(err))


async def wait_for(awaitable: Any) -> Any:
    return await awaitable


def run_awaitable(awaitable: Any) -> Any:
    """Await in this thread via asyncio.run, or in a helper thread's fresh loop when a loop already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait_for(awaitable))
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = asyncio.run(wait_for(awaitable))
        except BaseException as err:  # noqa: BLE001 - handed back to the caller's thread
            box["error"] = err

    thread = threading.Thread(target=work, name="reward-await")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def call_reward(fn: Callable[..., Any], data_source: str, solution_str: str, ground_truth: Any,
                extra_info: Mapping[str, Any] | None = None) -> RewardResult:
    """fn(data_source, solution_str, ground_truth, extra_info) as a RewardResult; never raises."""
    name = function_name(fn)
    try:
        value = fn(data_source, solution_str, ground_truth, extra_info)
        if inspect.isawaitable(value):
            value = run_awaitable(value)
    except Exception as err:  # noqa: BLE001 - a reward bug is a counted failure, not a crashed step
        return failure(name, f"raised {type(err).__name__}: {err}")
    try:
        return normalize(value, name)
    except Exception as err:  # noqa: BLE001 - e.g. a returned object whose __float__ raises
        return failure(name, f"returned a value that could not be read ({type(err).__name__}: {err})")


def summarize(results: Iterable[RewardResult]) -> dict[str, Any]:
    """Counts for logging: n, n_failed, mean score over all results (failures count as their 0)
    and over the successful ones (None when there are none), and clipped judge scores."""
    items = list(results)
    ok = [r.score for r in items if not r.failed]
    return {
        "n": len(items),
        "n_failed": len(items) - len(ok),
        "mean_score": sum(r.score for r in items) / len(items) if items else None,
        "mean_score_ok": sum(ok) / len(ok) if ok else None,
        "n_clipped": sum(c for r in items if isinstance(c := r.extras.get("clipped"), int) and not isinstance(c, bool)),
    }


__all__ = ["RewardResult", "as_score", "call_reward", "failure", "function_name", "normalize", "run_awaitable",
           "summarize"]
