"""Per-slice deltas: what a partition accumulated since its last tick.

A partition updates one accumulator per event: the (slice, finest cell, extra key) it
falls in, per *family* of fields (``main``: the catalogue's counters and sums;
``latency``: sketch bucket counts, extra key = bucket). Once per tick the deltas travel
to the merge stage as a :class:`PartialBatch` and are reset, so a partition holds only
one tick's worth of them.

An event that is late for some of the windows containing its slice (sliding windows
overlap) carries a *cutoff*: the partition's emitted watermark when it arrived. The merge
adds it only to windows that were still open at that watermark; the others count it
in ``metrics_late``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from operators.cells import Cell

NO_CUTOFF = -math.inf
MAIN = "main"
LATENCY = "latency"


@dataclass(slots=True)
class FamilyDelta:
    """Column-oriented deltas of one family: row i is (slice, cutoff, cell, extra) += values[i]."""

    slice_starts: np.ndarray  # int64
    cutoffs: np.ndarray  # float64, NO_CUTOFF for on-time rows
    cells: list[Cell]
    extras: np.ndarray  # int64 extra key ids (0 for main)
    values: np.ndarray  # float64 [rows, width]

    def __len__(self) -> int:
        return len(self.cells)


@dataclass(slots=True)
class PartialBatch:
    """One partition's tick: deltas plus its emitted watermark (ms; +inf when ended)."""

    partition: int
    watermark: float
    ended: bool
    families: dict[str, FamilyDelta] = field(default_factory=dict)


class FamilyAccumulator:
    """Deltas of one family, keyed (slice, cell, extra) -> vector; cutoff rows apart."""

    __slots__ = ("on_time", "restricted", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.on_time: dict[tuple[int, Cell, int], list[float]] = {}
        self.restricted: dict[tuple[int, Cell, int, float], list[float]] = {}

    def __len__(self) -> int:
        return len(self.on_time) + len(self.restricted)

    def vector(self, slice_start: int, cell: Cell, extra: int = 0) -> list[float]:
        key = (slice_start, cell, extra)
        acc = self.on_time.get(key)
        if acc is None:
            acc = self.on_time[key] = [0.0] * self.width
        return acc

    def restricted_vector(
        self, slice_start: int, cell: Cell, extra: int, cutoff: float
    ) -> list[float]:
        key = (slice_start, cell, extra, cutoff)
        acc = self.restricted.get(key)
        if acc is None:
            acc = self.restricted[key] = [0.0] * self.width
        return acc

    def drain(self) -> FamilyDelta | None:
        """The deltas as columns, leaving this accumulator empty."""
        n = len(self)
        if n == 0:
            return None
        slice_starts = np.empty(n, dtype=np.int64)
        cutoffs = np.full(n, NO_CUTOFF)
        extras = np.empty(n, dtype=np.int64)
        cells: list[Cell] = []
        vectors: list[list[float]] = []
        i = 0
        for (slice_start, cell, extra), vector in self.on_time.items():
            slice_starts[i] = slice_start
            extras[i] = extra
            cells.append(cell)
            vectors.append(vector)
            i += 1
        for (slice_start, cell, extra, cutoff), vector in self.restricted.items():
            slice_starts[i] = slice_start
            cutoffs[i] = cutoff
            extras[i] = extra
            cells.append(cell)
            vectors.append(vector)
            i += 1
        self.on_time = {}
        self.restricted = {}
        values = np.array(vectors, dtype=np.float64).reshape(n, self.width)
        return FamilyDelta(slice_starts, cutoffs, cells, extras, values)
