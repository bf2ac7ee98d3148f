"""Time-weighted in-flight meter: how many requests were really outstanding, on average.

A throughput claim ("keeps 256 requests in flight") is only checkable if the client and
the server both measure the area under their in-flight curve; this is that measurement.
Thread-safe, so a server thread and a benchmark thread can read it while it moves.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class InFlightStats:
    """Summary over the busy window (first start to last end), not over idle time."""

    completed: int
    average: float
    peak: int
    busy_s: float


class InFlightMeter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._current = 0
            self._peak = 0
            self._completed = 0
            self._area = 0.0  # integral of in-flight count over time, request-seconds
            self._busy_s = 0.0
            self._last = 0.0

    def _advance(self, now: float) -> None:
        if self._current:
            elapsed = now - self._last
            self._area += self._current * elapsed
            self._busy_s += elapsed
        self._last = now

    def start(self) -> None:
        with self._lock:
            self._advance(time.perf_counter())
            self._current += 1
            self._peak = max(self._peak, self._current)

    def end(self) -> None:
        with self._lock:
            self._advance(time.perf_counter())
            self._current -= 1
            self._completed += 1

    @property
    def current(self) -> int:
        return self._current

    def stats(self) -> InFlightStats:
        with self._lock:
            self._advance(time.perf_counter())
            avg = self._area / self._busy_s if self._busy_s > 0 else 0.0
            return InFlightStats(self._completed, avg, self._peak, self._busy_s)
