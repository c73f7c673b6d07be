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

A rule keeps the references of all its cells in one :class:`ReferenceTable`: numpy
arrays indexed by the cells' slots (:class:`~operators.rules.cell_ids.CellIds`), so a
window's cells are absorbed, and their references read, in one call each (a trailing
reference is a :class:`~operators.rules.window_ring.WindowRing`). :class:`ReferenceHistogram`
is one cell's reference through the same table (tests, tools): one definition of both.
The state is plain data (numpy arrays), pickled with the rules stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from operators.rules.cell_ids import MISSING, first_of_each, grown
from operators.rules.window_ring import NO_TIME, WindowRing


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


class ReferenceTable:
    """The references of many cells of one rule, by slot; feed it final windows in
    event-time order (see the module docstring for what is absorbed)."""

    def __init__(self, spec: ReferenceSpec, bins: int) -> None:
        if bins < 1:
            raise ValueError(f"bins must be ≥ 1, got {bins}")
        self.spec, self.bins = spec, bins
        self.last_end = np.zeros(0, dtype=np.int64)  # end of the last absorbed window
        # trailing: the absorbed windows, at most windows + 1 per cell (every earlier
        # entry ends at or before the newest one's start, so a later recent window can
        # need at most the last `windows` of them plus the newest)
        self.windows = spec.windows if isinstance(spec, TrailingWindows) else 0
        self.ring = WindowRing(self.windows + 1, bins) if self.windows else None
        # fixed: the running sum over the period and what it covers
        self.total = np.zeros((0, bins), dtype=np.float64)
        self.total_windows = np.zeros(0, dtype=np.int64)
        self.total_start = np.zeros(0, dtype=np.int64)

    def ensure(self, capacity: int) -> None:
        """Room for slots below `capacity`."""
        self.last_end = grown(self.last_end, capacity, NO_TIME)
        if self.ring is not None:
            self.ring.ensure(capacity)
        else:
            self.total = grown(self.total, capacity, 0.0)
            self.total_windows = grown(self.total_windows, capacity, 0)
            self.total_start = grown(self.total_start, capacity, NO_TIME)

    def absorb(
        self, slots: np.ndarray, window_start: int, window_end: int, counts: np.ndarray
    ) -> np.ndarray:
        """Take in one FINAL window's histograms [slots, bins] (distinct slots); per slot,
        whether it was absorbed (not when it overlaps or repeats the slot's last absorbed
        window, or lies outside a fixed period)."""
        counts = np.asarray(counts, dtype=np.float64).reshape(len(slots), -1)
        if counts.shape[1] != self.bins:
            raise ValueError(
                f"a histogram of {counts.shape[1]} bins, the reference has {self.bins}"
            )
        if window_start >= window_end:
            raise ValueError(f"window start {window_start} must be before end {window_end}")
        last = self.last_end[slots]
        taken = ((last == NO_TIME) | (window_start >= last)) & first_of_each(slots)
        spec = self.spec
        if isinstance(spec, FixedPeriod) and (window_start < spec.start or window_end > spec.end):
            return np.zeros(len(slots), dtype=bool)
        chosen = slots[taken]
        if self.ring is not None:
            self.ring.append(chosen, window_start, window_end, counts[taken])
        else:
            self.total[chosen] += counts[taken]
            self.total_windows[chosen] += 1
            fresh = chosen[self.total_start[chosen] == NO_TIME]
            self.total_start[fresh] = window_start
        self.last_end[chosen] = window_end
        return taken

    def references(self, slots: np.ndarray, window_start: int) -> tuple[np.ndarray, np.ndarray]:
        """The reference counts [slots, bins] for a recent window starting at
        `window_start`, and whether each slot has one (MISSING: none)."""
        if self.ring is not None:
            trailing = self.ring.trailing(slots, window_start, self.windows)
            return trailing.sums, trailing.count > 0
        counts = np.zeros((len(slots), self.bins), dtype=np.float64)
        has = np.zeros(len(slots), dtype=bool)
        assert isinstance(self.spec, FixedPeriod)
        if window_start >= self.spec.end:
            known = np.flatnonzero(slots != MISSING)
            has[known] = self.total_windows[slots[known]] > 0
            counts[has] = self.total[slots[has]]
        return counts, has

    def reference(self, slot: int, window_start: int) -> Reference | None:
        """One slot's :class:`Reference` for a recent window starting at `window_start`,
        None when there is none yet: no window absorbed before it, or a fixed period
        that is not over when the recent window starts."""
        slots = np.array([slot], dtype=np.int64)
        if self.ring is not None:
            t = self.ring.trailing(slots, window_start, self.windows)
            if not t.count[0]:
                return None
            counts, windows = t.sums[0], int(t.count[0])
            start, end = int(t.first_start[0]), int(t.last_end[0])
        else:
            counts_of, has = self.references(slots, window_start)
            if not has[0]:
                return None
            counts, windows = counts_of[0], int(self.total_windows[slot])
            start, end = int(self.total_start[slot]), int(self.last_end[slot])
        return Reference(tuple(int(c) for c in counts.tolist()), windows, start, end)

    def kept(self, slots: np.ndarray) -> np.ndarray:
        """Which slots hold a fixed period's sum: kept for good (the period is over and
        never comes back; the cells that had data in it bound them)."""
        if self.ring is not None:
            return np.zeros(len(slots), dtype=bool)
        return np.asarray(self.total_windows[slots] > 0)

    def clear(self, slots: np.ndarray) -> None:
        """Forget these slots' references (their cells expired; the slots are reused)."""
        self.last_end[slots] = NO_TIME
        if self.ring is not None:
            self.ring.clear(slots)
        else:
            self.total[slots] = 0.0
            self.total_windows[slots] = 0
            self.total_start[slots] = NO_TIME


class ReferenceHistogram:
    """The reference of one rule × cell (a one-slot :class:`ReferenceTable`); feed it
    final windows in event-time order."""

    def __init__(self, spec: ReferenceSpec, bins: int) -> None:
        self.spec, self.bins = spec, bins
        self.table = ReferenceTable(spec, bins)
        self.table.ensure(1)
        self._slot = np.zeros(1, dtype=np.int64)

    @property
    def ring(self) -> list[tuple[int, int, tuple[float, ...]]]:
        """A trailing reference's absorbed windows, oldest first."""
        return self.table.ring.entries(0) if self.table.ring is not None else []

    def absorb(self, window_start: int, window_end: int, counts: Sequence[int]) -> bool:
        """Take in one FINAL window's histogram; False when it is not absorbed (it
        overlaps or repeats the last absorbed window, or lies outside a fixed period)."""
        row = np.asarray(counts, dtype=np.float64).reshape(1, -1)
        return bool(self.table.absorb(self._slot, window_start, window_end, row)[0])

    def reference_for(self, window_start: int) -> Reference | None:
        """The reference for a recent window starting at `window_start` (early or final)."""
        return self.table.reference(0, window_start)
