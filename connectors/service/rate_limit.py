"""Per-key ingestion rate limit, counted in events (a batch of 100 costs 100).

The `limits` library's moving window over its in-memory storage: a moving window has no
burst at a window edge (a fixed window admits twice the rate across one), and one
process holds all its keys' counters. A refused request gets the seconds until the
oldest counted events leave the window, for Retry-After.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    too_big: bool = False  # more events than the limit admits in a whole window


class RateLimit:
    """`service.rate_limit` (e.g. "50000/second"), per API key name."""

    def __init__(self, rate: str) -> None:
        self.item = limits.parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    @property
    def per_window(self) -> int:
        return int(self.item.amount)

    def hit(self, key: str, events: int) -> Verdict:
        """Count `events` for `key` if the window has room for them all."""
        if events > self.item.amount:
            return Verdict(False, too_big=True)
        if self.limiter.hit(self.item, key, cost=max(events, 1)):
            return Verdict(True)
        reset = self.limiter.get_window_stats(self.item, key).reset_time
        return Verdict(False, max(1, math.ceil(reset - time.time())))
