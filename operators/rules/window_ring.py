"""Each cell's last few final windows, for many cells, in numpy arrays.

A drift rule's trailing reference and a spike rule's baseline both keep, per cell, a
short ring of past FINAL windows (start, end and a vector: a histogram, or a value and
its sample size) and read "the last K windows that end at or before the recent window's
start". :class:`WindowRing` holds those rings for every slot of a rule's
:class:`~operators.rules.cell_ids.CellIds` as 2-D and 3-D arrays, so that a window's cells
are appended, and their trailing sums read, in one numpy call each.

Entries are appended in event-time order (the callers refuse replays and, for a
reference, overlaps) and are windows of one length (a rule reads one window), so a
ring's ends ascend and the windows ending at or before a
start are a prefix of it. Sums run over the ring positions in order (oldest first, one
`+` per position): the same float sum as adding the entries one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from operators.rules.cell_ids import MISSING, grown

NO_TIME = np.iinfo(np.int64).min  # the start or end of no window


@dataclass(frozen=True, slots=True)
class Trailing:
    """The last `k` (at most) ring entries ending at or before a start, per slot."""

    sums: np.ndarray  # float64 [slots, width]: the entries' vectors summed
    count: np.ndarray  # int64 [slots]: how many entries (0: none)
    first_start: np.ndarray  # int64 [slots]: the oldest entry's start (NO_TIME: none)
    last_end: np.ndarray  # int64 [slots]: the newest entry's end (NO_TIME: none)


class WindowRing:
    """Per slot, up to `keep` windows (start, end, vector of `width`), oldest first."""

    def __init__(self, keep: int, width: int) -> None:
        if keep < 1 or width < 1:
            raise ValueError(f"a ring keeps ≥ 1 window of ≥ 1 value, got {keep} × {width}")
        self.keep, self.width = keep, width
        self.start = np.full((0, keep), NO_TIME, dtype=np.int64)
        self.end = np.full((0, keep), NO_TIME, dtype=np.int64)
        self.values = np.zeros((0, keep, width), dtype=np.float64)
        self.length = np.zeros(0, dtype=np.int64)

    def ensure(self, capacity: int) -> None:
        """Room for slots below `capacity`."""
        if len(self.length) < capacity:
            self.start = grown(self.start, capacity, NO_TIME)
            self.end = grown(self.end, capacity, NO_TIME)
            self.values = grown(self.values, capacity, 0.0)
            self.length = grown(self.length, capacity, 0)

    def newest(self, slots: np.ndarray, field: str = "start") -> np.ndarray:
        """Each slot's newest entry's start (or end), NO_TIME for an empty ring or MISSING."""
        out = np.full(len(slots), NO_TIME, dtype=np.int64)
        known = slots != MISSING
        s = slots[known]
        if len(s):
            n = self.length[s]
            column = getattr(self, field)[s, np.maximum(n - 1, 0)]
            out[known] = np.where(n > 0, column, NO_TIME)
        return out

    def append(self, slots: np.ndarray, start: int, end: int, values: np.ndarray) -> None:
        """One window [start, end) per slot (distinct slots), its vector a row of
        `values` [slots, width]; a full ring drops its oldest entry."""
        if not len(slots):
            return
        full = slots[self.length[slots] == self.keep]
        if len(full):
            for column in (self.start, self.end, self.values):
                column[full, :-1] = column[full, 1:]
            self.length[full] -= 1
        at = self.length[slots]
        self.start[slots, at] = start
        self.end[slots, at] = end
        self.values[slots, at] = values
        self.length[slots] = at + 1

    def trailing(self, slots: np.ndarray, before: int, k: int) -> Trailing:
        """For each slot (MISSING: none), the last `k` entries that end at or before
        `before`, summed."""
        n = len(slots)
        sums = np.zeros((n, self.width), dtype=np.float64)
        count = np.zeros(n, dtype=np.int64)
        first = np.full(n, NO_TIME, dtype=np.int64)
        last = np.full(n, NO_TIME, dtype=np.int64)
        known = np.flatnonzero(slots != MISSING)
        if len(known):
            s = slots[known]
            positions = np.arange(self.keep)
            ends = (positions < self.length[s][:, None]) & (self.end[s] <= before)
            upto = ends.sum(axis=1)  # a prefix: the ends ascend
            lowest = np.maximum(upto - k, 0)
            taken = (positions >= lowest[:, None]) & (positions < upto[:, None])
            values = self.values[s]
            acc = np.zeros((len(s), self.width), dtype=np.float64)
            for j in range(self.keep):  # oldest first: the sum entry by entry
                acc = acc + np.where(taken[:, j, None], values[:, j], 0.0)
            got = upto - lowest
            has = got > 0
            sums[known] = acc
            count[known] = got
            rows = np.arange(len(s))
            first[known] = np.where(has, self.start[s][rows, np.minimum(lowest, self.keep - 1)],
                                    NO_TIME)  # fmt: skip
            last[known] = np.where(has, self.end[s][rows, np.maximum(upto - 1, 0)], NO_TIME)
        return Trailing(sums, count, first, last)

    def clear(self, slots: np.ndarray) -> None:
        """Empty these slots' rings (forgotten cells; the slots are reused)."""
        self.length[slots] = 0
        self.start[slots] = NO_TIME
        self.end[slots] = NO_TIME
        self.values[slots] = 0.0

    def entries(self, slot: int) -> list[tuple[int, int, tuple[float, ...]]]:
        """One slot's ring as (start, end, vector), oldest first."""
        n = int(self.length[slot])
        return [
            (int(self.start[slot, j]), int(self.end[slot, j]), tuple(self.values[slot, j].tolist()))
            for j in range(n)
        ]
