"""A partition's event-time watermark.

The partition stage consumes its two streams (inferences, feedback) merged in timestamp
order (:mod:`operators.stream_merge`), so one watermark covers both: the largest event
time seen minus `max_out_of_orderness`. Merging two streams whose disorder is within the
bound keeps the merged disorder within it, so no on-time event is ever late.

Quiet partitions (unbounded runs only): when every stream is caught up (its source has
nothing more to read) and none has delivered data for `idle_timeout` of processing time,
nothing is in flight any more, so the allowances for disorder and for the join's wait are
dropped: the watermark passed downstream jumps to the largest event time seen and then
advances with processing time (feedback still waiting for its inference gives up as it
passes). A stream that stops at 03:00 has its window ending at 03:00 final `idle_timeout`
later. Time in which the stage could not run (the worker held elsewhere) does not count
as quiet (:meth:`PartitionClock.pause`). A partition that has never seen an event follows
the wall clock once idle, so it never holds the other partitions back. Ended streams
(bounded runs) put it at +infinity once all have ended. The watermark never goes back.

The join holds the watermark passed downstream back by `join.wait`
(:attr:`PartitionClock.emitted`), so feedback still waiting for its inference cannot
see its window closed without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

NEG_INF = -math.inf
POS_INF = math.inf

_Time = TypeVar("_Time", int, float, NDArray[np.float64])


def watermark_of(max_ts: _Time, max_out_of_orderness: int) -> _Time:
    """The watermark rule, written once: the largest event time seen minus the allowed
    disorder. Scalar for :meth:`PartitionClock.observe`, an array of running maxima for
    the columnar clock (:mod:`operators.columnar.clock`): both paths share the definition."""
    return max_ts - max_out_of_orderness


@dataclass(slots=True)
class PartitionClock:
    max_out_of_orderness: int
    join_wait: int
    idle_timeout: int
    bounded: bool
    last_data: float  # processing time (ms) of the last data, or of creation
    max_ts: float = NEG_INF
    watermark: float = NEG_INF
    ended: set[str] = field(default_factory=set)

    @property
    def emitted(self) -> float:
        """The watermark passed downstream: held back by the join's wait."""
        return self.watermark - self.join_wait

    def observe(self, ts: int) -> float:
        """An event at `ts` was processed; returns the (possibly advanced) watermark: the
        largest event time seen minus `max_out_of_orderness`, never going back. The
        partition stage calls it for every event (one call costs ~33 ns more than the
        comparison inlined, 0.3 % of the stage's ~10 µs per event)."""
        if ts > self.max_ts:
            self.max_ts = ts
            candidate = watermark_of(ts, self.max_out_of_orderness)
            if candidate > self.watermark:
                self.watermark = candidate
        return self.watermark

    def touch(self, now: float) -> None:
        self.last_data = now

    def pause(self, ms: float) -> None:
        """The stage could not run for `ms` (the worker was busy): not quiet time."""
        self.last_data += ms

    def end(self, stream: str, streams: int) -> bool:
        """`stream` has ended; True once all `streams` have (the watermark is then +inf)."""
        self.ended.add(stream)
        if len(self.ended) >= streams:
            self.watermark = POS_INF
            return True
        return False

    def idle(self, now: float, caught_up: bool) -> bool:
        """Quiet: the sources have nothing more to read (`caught_up`) and have delivered
        nothing for `idle_timeout`. Silence while a backlog waits to be read is a busy
        worker, not a quiet stream."""
        return not self.bounded and caught_up and now - self.last_data >= self.idle_timeout

    def advance(self, now: float, caught_up: bool) -> float:
        """Let an idle partition's watermark follow processing time; returns it."""
        if self.idle(now, caught_up):
            if self.max_ts > NEG_INF:
                quiet_for = now - self.last_data - self.idle_timeout
                # emitted (watermark - join_wait) = max_ts + quiet_for
                candidate = self.max_ts + self.join_wait + quiet_for
            else:
                candidate = now - self.max_out_of_orderness
            if candidate > self.watermark:
                self.watermark = candidate
        return self.watermark
