"""A token bucket per agent: how many requests may start, and how fast."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimited(RuntimeError):
    """Too many requests; ``retry_after`` seconds until the next one may start."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimiter:
    """Allow ``per_minute`` requests a minute per key, in bursts of up to ``burst``.

    Args:
        per_minute: steady rate.
        burst: requests that may start at once after a quiet spell.
        clock: monotonic seconds (a test passes its own).
    """

    def __init__(
        self,
        per_minute: float = 60.0,
        burst: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str, label: str | None = None) -> None:
        """Take one request for ``key`` or raise :class:`RateLimited`."""
        now = self.clock()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1.0:
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else float("inf")
            self._buckets[key] = (tokens, now)
            raise RateLimited(
                f"{label or key} is receiving too many requests: try again in {wait:.0f} s.",
                wait,
            )
        self._buckets[key] = (tokens - 1.0, now)
