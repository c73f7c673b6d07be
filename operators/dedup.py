"""Which feedback `event_id`s were seen recently: duplicates inside the horizon count once.

Memory is bounded twice: ids older than `horizon` (event time, against the watermark)
are forgotten, and past `max_entries` the oldest go first (counted in `evicted`).
Beyond the horizon, ClickHouse `events` (keyed by event_id) still stores one row.

The partition stage holds its ids in the bulk form of these rules
(:class:`operators.columnar.dedup_set.DedupSet`); this row-wise form is the reference
its property tests compare with, and `scripts/bench_columnar.py` times against.
"""

from __future__ import annotations

from collections import OrderedDict


class RecentIds:
    __slots__ = ("_seen", "evicted", "horizon", "max_entries")

    def __init__(self, horizon: int, max_entries: int) -> None:
        self.horizon = horizon
        self.max_entries = max_entries
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: str) -> bool:
        return key in self._seen

    def add(self, key: str, ts: int) -> bool:
        """Remember `key`; False when it was already seen (a duplicate)."""
        seen = self._seen
        if key in seen:
            return False
        seen[key] = ts
        if len(seen) > self.max_entries:
            seen.popitem(last=False)
            self.evicted += 1
        return True

    def expire(self, watermark: float) -> None:
        """Forget ids whose event time is more than `horizon` behind the watermark."""
        seen = self._seen
        cutoff = watermark - self.horizon
        while seen:
            if next(iter(seen.values())) > cutoff:
                break
            seen.popitem(last=False)
