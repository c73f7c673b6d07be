"""Processing-time ticks on one grid for every stage.

Early rows go out in two steps: a partition stage sends its deltas at its tick, and the
merge stage emits the changed windows at its own. When each stage ticks `emit_interval`
after its last tick, their phases drift apart at random, and an event waits for the
partition's tick and then for the merge stage's: up to two intervals, ~1.8 s at the
1 s default (`scripts/bench_alerts.py`). On one wall-clock grid (``k * interval``), every
partition stage of every worker ticks together, and the merge stage ticks `MERGE_LAG`
after them, when their deltas are in: an event's early row (and the alert it raises)
waits at most one interval plus that lag.
"""

from __future__ import annotations

import math

MERGE_LAG_SHARE = 0.1  # of the interval, at most MERGE_LAG_MAX_MS
MERGE_LAG_MAX_MS = 100.0


def next_tick(now: float, interval: float, lag: float = 0.0) -> float:
    """The first tick after `now` (ms since the epoch) on the grid ``k * interval + lag``."""
    return (math.floor((now - lag) / interval) + 1) * interval + lag


def merge_lag(interval: float) -> float:
    """How long after the partitions' tick the merge stage ticks: long enough for their
    deltas to arrive (the same worker's activation, or a short exchange), short against
    the interval."""
    return min(interval * MERGE_LAG_SHARE, MERGE_LAG_MAX_MS)
