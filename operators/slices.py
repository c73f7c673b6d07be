"""Per-slice deltas: what a partition accumulated since its last tick.

A partition updates one accumulator per event: the (slice, cell id, extra key) it falls
in, per *family* of fields (``main``: the catalogue's counters and sums; ``latency``:
sketch bucket counts, extra key = bucket). Once per tick the deltas travel to the merge
stage as a :class:`PartialBatch` and are reset, so a partition holds one tick of them.

An event that is late for some of the windows containing its slice (sliding windows
overlap) carries a *cutoff*: the partition's emitted watermark when it arrived. The merge
adds it only to windows that were still open at that watermark; the others count it in
``metrics_late``.
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
    """Column-oriented deltas of one family: row i is (slice, cutoff, cell, extra) += values[i].

    Cell ids are the partition's own (:class:`~operators.cells.LocalCells`).
    """

    slice_starts: np.ndarray  # int64
    cutoffs: np.ndarray  # float64, NO_CUTOFF for on-time rows
    cell_ids: np.ndarray  # int64
    extras: np.ndarray  # int64 extra key ids (0 for main)
    values: np.ndarray  # float64 [rows, width]

    def __len__(self) -> int:
        return len(self.cell_ids)


@dataclass(slots=True)
class PartialBatch:
    """One partition's tick: deltas plus its emitted watermark (ms; +inf when ended).

    `new_cells` are the cells the partition numbered since its previous batch, in id
    order (the merge stage keeps the partition's id -> cell mapping).
    """

    partition: int
    watermark: float
    ended: bool
    families: dict[str, FamilyDelta] = field(default_factory=dict)
    new_cells: list[Cell] = field(default_factory=list)


class FamilyAccumulator:
    """Deltas of one family, keyed (slice, cell id, extra) -> vector; cutoff rows apart."""

    __slots__ = ("on_time", "restricted", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.on_time: dict[tuple[int, int, int], list[float]] = {}
        self.restricted: dict[tuple[int, int, int, float], list[float]] = {}

    def __len__(self) -> int:
        return len(self.on_time) + len(self.restricted)

    def vector(self, slice_start: int, cell_id: int, extra: int = 0) -> list[float]:
        key = (slice_start, cell_id, extra)
        acc = self.on_time.get(key)
        if acc is None:
            acc = self.on_time[key] = [0.0] * self.width
        return acc

    def restricted_vector(
        self, slice_start: int, cell_id: int, extra: int, cutoff: float
    ) -> list[float]:
        key = (slice_start, cell_id, extra, cutoff)
        acc = self.restricted.get(key)
        if acc is None:
            acc = self.restricted[key] = [0.0] * self.width
        return acc

    def drain(self) -> FamilyDelta | None:
        """The deltas as columns, leaving this accumulator empty."""
        n = len(self)
        if n == 0:
            return None
        keys = np.array(list(self.on_time), dtype=np.int64).reshape(-1, 3)
        vectors = list(self.on_time.values())
        cutoffs = np.full(n, NO_CUTOFF)
        if self.restricted:
            restricted = list(self.restricted)
            keys = np.concatenate((keys, np.array([k[:3] for k in restricted], dtype=np.int64)))
            cutoffs[len(self.on_time) :] = [k[3] for k in restricted]
            vectors.extend(self.restricted.values())
        self.on_time = {}
        self.restricted = {}
        values = np.array(vectors, dtype=np.float64).reshape(n, self.width)
        return FamilyDelta(keys[:, 0], cutoffs, keys[:, 1], keys[:, 2], values)
