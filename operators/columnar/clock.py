"""The partition's watermark at every event of a batch, and lateness, in bulk.

The row-wise stage calls :meth:`operators.clock.PartitionClock.observe` per event; here
the watermark after each event is a running maximum (``numpy.maximum.accumulate``) put
through the same rule (:func:`operators.clock.watermark_of`) and never below the
carried watermark (which seeds it). The state stays the
:class:`~operators.clock.PartitionClock` itself, so idleness, pauses and ended streams
keep their one definition. Lateness is :func:`operators.windows.is_final`, which is a
comparison and so takes arrays as they are.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from operators.clock import PartitionClock, watermark_of
from operators.windows import is_final


class ColumnarClock:
    """Per-event watermarks for batches of event times; advances the wrapped clock."""

    __slots__ = ("clock",)

    def __init__(self, clock: PartitionClock) -> None:
        self.clock = clock

    def observe(self, ts: NDArray[np.int64]) -> NDArray[np.float64]:
        """The watermark after each event of `ts` (in processing order), as
        `PartitionClock.observe` would return it event by event; the clock is advanced
        to the batch's end."""
        clock = self.clock
        if len(ts) == 0:
            return np.empty(0, dtype=np.float64)
        # The carried watermark seeds the running maximum: it is never below the rule
        # applied to the carried maximum event time, and may be above it (idleness).
        running = np.maximum.accumulate(ts.astype(np.float64))
        marks = np.maximum(watermark_of(running, clock.max_out_of_orderness), clock.watermark)
        clock.max_ts = max(clock.max_ts, int(ts.max()))
        clock.watermark = float(marks[-1])
        return marks

    def emitted(self, marks: NDArray[np.float64]) -> NDArray[np.float64]:
        """The cutoff each event sees: its watermark held back by the join's wait, as
        `PartitionClock.emitted`."""
        return marks - self.clock.join_wait

    @staticmethod
    def late(
        window_ends: NDArray[np.int64], cutoffs: NDArray[np.float64], allowed_lateness: int
    ) -> NDArray[np.bool_]:
        """Which events are late: their earliest window is final at their cutoff."""
        verdict: Any = is_final(cast(Any, window_ends), cast(Any, cutoffs), allowed_lateness)
        return np.asarray(verdict, dtype=np.bool_)
