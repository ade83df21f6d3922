"""
A token bucket with the API's `RateLimit-*` headers.

The real API gives each project 3600 requests that refill at one per second.
`--rate-limit N` (or a `rate_limit` fault) replaces that with a bucket of N
requests that refills at N per minute.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Capacity of the real API's bucket, in requests.
DEFAULT_CAPACITY = 3600

#: Refill rate of the real API's bucket, in requests per second.
DEFAULT_REFILL_PER_SECOND = 1.0


@dataclass(frozen=True)
class RateLimitState:
    """The values of the `RateLimit-*` headers after one request."""

    allowed: bool
    limit: int
    remaining: int
    # Unix time, in whole seconds, when the bucket is full again.
    reset: int

    def headers(self) -> dict[str, str]:
        """Return the response headers for this state."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


class TokenBucket:
    """Counts requests against a bucket of `capacity` tokens refilled at a steady rate.

    Thread safe. `clock` returns seconds and is injectable for tests.
    """

    def __init__(
        self,
        capacity: int,
        refill_per_second: float,
        description: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.capacity = capacity
        # The limit in words for the 429 message, e.g. "3600 requests per hour".
        self.description = description
        self.refill_per_second = refill_per_second
        self._clock = clock
        self._tokens = float(capacity)
        self._updated = clock()
        self._lock = threading.Lock()

    @classmethod
    def per_minute(cls, requests_per_minute: int) -> TokenBucket:
        """Return a bucket of `requests_per_minute` tokens that refills in one minute."""
        return cls(requests_per_minute, requests_per_minute / 60.0, f"{requests_per_minute} requests per minute")

    @classmethod
    def like_hetzner(cls) -> TokenBucket:
        """Return a bucket with the real API's default limits."""
        return cls(DEFAULT_CAPACITY, DEFAULT_REFILL_PER_SECOND, f"{DEFAULT_CAPACITY} requests per hour")

    def take(self) -> RateLimitState:
        """Spend one token if one is left and return the header values."""
        with self._lock:
            now = self._refill()
            allowed = self._tokens >= 1.0
            if allowed:
                self._tokens -= 1.0
            return self._state(allowed, now)

    def peek(self) -> RateLimitState:
        """Return the header values without spending a token."""
        with self._lock:
            now = self._refill()
            return self._state(True, now)

    def _refill(self) -> float:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.capacity), self._tokens + elapsed * self.refill_per_second)
        self._updated = now
        return now

    def _state(self, allowed: bool, now: float) -> RateLimitState:
        missing = self.capacity - self._tokens
        reset = math.ceil(now + missing / self.refill_per_second)
        return RateLimitState(allowed, self.capacity, math.floor(self._tokens), reset)
