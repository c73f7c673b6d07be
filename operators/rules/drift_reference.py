"""The reference histogram of a drift rule, accumulated from final windows in event time.

One :class:`ReferenceHistogram` per rule × cell absorbs the cell's FINAL window
histograms as they are emitted (early rows are never absorbed: they would change) and
gives the reference a recent window is compared with:

* :class:`TrailingWindows` — the last `windows` absorbed windows that end at or before
  the recent window's start (a ring: older ones are dropped);
* :class:`FixedPeriod` — the sum of the windows inside [start, end) of event time (a
  running sum), available to recent windows that start at or after `end`.

Only windows that do not overlap the previously absorbed one are absorbed: a sliding
window shares events with its neighbours, and counting an event twice would make the
reference look larger (and the chi-square test surer) than it is. With tumbling windows
every final window is absorbed. For the same reason a window already absorbed (a replay)
or older than it is ignored, so absorbing is idempotent.

The state is plain data (ints and tuples of ints), pickled with the rules stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TrailingWindows:
    """The reference is the `windows` final windows before the recent one."""

    windows: int

    def __post_init__(self) -> None:
        if self.windows < 1:
            raise ValueError(f"trailing windows must be ≥ 1, got {self.windows}")


@dataclass(frozen=True, slots=True)
class FixedPeriod:
    """The reference is the final windows inside [start, end) of event time (epoch ms)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise ValueError(f"reference start {self.start} must be before end {self.end}")


ReferenceSpec = TrailingWindows | FixedPeriod


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference histogram and the event time it covers."""

    counts: tuple[int, ...]
    windows: int  # how many final windows were summed
    start: int  # first summed window's start
    end: int  # last summed window's end

    @property
    def samples(self) -> int:
        return sum(self.counts)


@dataclass(slots=True)
class ReferenceHistogram:
    """The reference of one rule × cell; feed it final windows in event-time order."""

    spec: ReferenceSpec
    bins: int
    # trailing: (start, end, counts) of the absorbed windows, oldest first, at most windows + 1
    ring: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)
    # fixed: the running sum over the period and what it covers
    total: tuple[int, ...] | None = None
    total_windows: int = 0
    total_start: int | None = None
    last_end: int | None = None  # end of the last absorbed window

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError(f"bins must be ≥ 1, got {self.bins}")

    def absorb(self, window_start: int, window_end: int, counts: Sequence[int]) -> bool:
        """Take in one FINAL window's histogram; False when it is not absorbed (it
        overlaps or repeats the last absorbed window, or lies outside a fixed period)."""
        if len(counts) != self.bins:
            raise ValueError(f"a histogram of {len(counts)} bins, the reference has {self.bins}")
        if window_start >= window_end:
            raise ValueError(f"window start {window_start} must be before end {window_end}")
        if self.last_end is not None and window_start < self.last_end:
            return False
        values = tuple(map(int, counts))
        if isinstance(self.spec, FixedPeriod):
            if window_start < self.spec.start or window_end > self.spec.end:
                return False
            self.total = (
                values
                if self.total is None
                else tuple(map(sum, zip(self.total, values, strict=True)))
            )
            self.total_windows += 1
            if self.total_start is None:
                self.total_start = window_start
        else:
            self.ring.append((window_start, window_end, values))
            # Every earlier entry ends at or before this window's start (no overlaps), so a
            # later recent window can need at most the last `windows` of them plus this one.
            del self.ring[: max(0, len(self.ring) - self.spec.windows - 1)]
        self.last_end = window_end
        return True

    def reference_for(self, window_start: int) -> Reference | None:
        """The reference for a recent window starting at `window_start` (early or final),
        None when there is none yet: no window absorbed before it, or a fixed period that
        is not over when the recent window starts."""
        if isinstance(self.spec, FixedPeriod):
            if window_start < self.spec.end or self.total is None or self.total_start is None:
                return None
            assert self.last_end is not None
            return Reference(self.total, self.total_windows, self.total_start, self.last_end)
        before = [entry for entry in self.ring if entry[1] <= window_start][-self.spec.windows :]
        if not before:
            return None
        summed = tuple(map(sum, zip(*(entry[2] for entry in before), strict=True)))
        return Reference(summed, len(before), before[0][0], before[-1][1])
