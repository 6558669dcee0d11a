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


class Pacer:
    """Requests a minute per provider, where a burst waits its turn instead of failing.

    A token bucket that may go into debt: each request takes a token at once and sleeps for
    as long as the bucket is in debt, so the k-th request of a burst starts when the steady
    rate allows it, in arrival order.

    Args:
        clock: monotonic seconds (a test passes its own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    @staticmethod
    def burst_for(per_minute: float) -> float:
        """Requests that may start at once after a quiet spell: a tenth of a minute's worth."""
        return max(1.0, per_minute / 10.0)

    def reserve(self, key: str, per_minute: float) -> float:
        """Take a turn for ``key``; returns how many seconds to wait before starting."""
        rate = per_minute / 60.0
        burst = self.burst_for(per_minute)
        now = self.clock()
        tokens, then = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - then) * rate) - 1.0
        self._buckets[key] = (tokens, now)
        return 0.0 if tokens >= 0.0 else -tokens / rate

    async def wait(self, key: str, per_minute: float) -> float:
        """Wait for ``key``'s turn; returns the seconds waited."""
        import asyncio

        delay = self.reserve(key, per_minute)
        if delay > 0.0:
            await asyncio.sleep(delay)
        return delay
