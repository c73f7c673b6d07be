"""Per-slice deltas: what a partition accumulated since its last tick.

A partition adds each batch of counted events to the (slice, cell id, extra key) they
fall in, per *family* of fields (``main``: the catalogue's counters and sums;
``latency``: sketch bucket counts, extra key = bucket). Once per tick the deltas travel to
the merge stage as a :class:`PartialBatch` and are reset, so a partition holds one tick
of them.

An event that is late for some of the windows containing its slice (sliding windows
overlap) carries a *cutoff*: the partition's emitted watermark when it arrived. The merge
adds it only to windows that were still open at that watermark; the others count it in
``metrics_late``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from operators.cells import EXTRA_KEY_BITS, Cell
from operators.field_entries import Entries
from operators.keyed_sums import KeyedSums, Run, merge_runs, sum_by_sort
from operators.scatter_sums import ScatterSums

NO_CUTOFF = -math.inf
_EXTRA_MASK = (1 << EXTRA_KEY_BITS) - 1
SCATTER_FROM_WIDTH = 8  # narrower families' rows are cheap to sort (latency: 1 column)
# A slice's table is made for a batch of this many rows at least: a few stragglers of an
# older slice are sorted at the drain rather than given a table as large as the cells.
SCATTER_FROM_ROWS = 512
MAX_SPARE_TABLES = 1  # drained tables kept (a tick's rows are mostly in one slice)


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

    `new_cells` (and `new_keys` of the keyed families) are the values the partition
    numbered since its previous batch, in id order (the merge stage keeps the partition's
    id -> value mappings).
    """

    partition: int
    watermark: float
    ended: bool
    families: dict[str, FamilyDelta] = field(default_factory=dict)
    new_cells: list[Cell] = field(default_factory=list)
    new_keys: dict[str, list[Any]] = field(default_factory=dict)


class SliceDeltas:
    """One family's deltas since the last tick: per slice, sums by cell_id << 24 | extra.

    On-time rows arrive a batch at a time and are summed once per tick, not per batch:
    a wide family's rows without an extra key (``main``) are scatter-added to a table by
    cell id per slice (:class:`~operators.scatter_sums.ScatterSums`; a drained table is
    kept for the next slices), and the narrow families' rows (a few columns each), like
    a few stragglers of a slice without a table, are kept as they come and summed by one
    sort at the drain. Rows with a cutoff (late for
    some windows) are rare and kept one by one. A snapshot holds each slice's sums as
    one run (:class:`~operators.keyed_sums.KeyedSums`), as it always did: a tick's rows.
    """

    __slots__ = ("_spare", "on_time", "pending", "restricted", "tables", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.on_time: dict[int, KeyedSums] = {}  # from a snapshot
        self.tables: dict[int, ScatterSums] = {}
        self.pending: dict[int, list[Run]] = {}  # rows by key, not summed yet
        self._spare: list[ScatterSums] = []  # drained tables, for the next slices
        self.restricted: dict[tuple[int, int, int, float], np.ndarray] = {}

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        on_time = {}
        for slice_start, run in self._runs().items():
            on_time[slice_start] = sums = KeyedSums(self.width)
            sums.add_unique(*run)
        return None, {"on_time": on_time, "restricted": self.restricted, "width": self.width}

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        fields = state[1]
        self.width = fields["width"]
        self.on_time = fields["on_time"]
        self.restricted = fields["restricted"]
        self.tables, self.pending, self._spare = {}, {}, []

    def __len__(self) -> int:
        """Rows held (a key held in several ways counts once for each)."""
        return (
            sum(len(s) for s in self.on_time.values())
            + sum(len(t) for t in self.tables.values())
            + sum(len(keys) for rows in self.pending.values() for keys, _ in rows)
            + len(self.restricted)
        )

    def add(self, slice_starts: np.ndarray, keys: np.ndarray, values: np.ndarray | Entries) -> None:
        if len(keys) == 0:
            return
        first = int(slice_starts[0])
        if (slice_starts == first).all():
            self._add_slice(first, keys, values)
            return
        uniques, inverse = np.unique(slice_starts, return_inverse=True)
        for i, slice_start in enumerate(uniques.tolist()):
            rows = inverse == i
            self._add_slice(slice_start, keys[rows], _rows(values, rows))

    def _add_slice(self, slice_start: int, keys: np.ndarray, values: np.ndarray | Entries) -> None:
        table = self.tables.get(slice_start)
        if (table is not None or len(keys) >= SCATTER_FROM_ROWS) and self._scatters(keys):
            if table is None:
                table = self.tables[slice_start] = self._table()
            table.add(keys >> EXTRA_KEY_BITS, values)
            return
        dense = values.dense() if isinstance(values, Entries) else values
        self.pending.setdefault(slice_start, []).append((keys, dense))

    def _scatters(self, keys: np.ndarray) -> bool:
        """Rows of a wide family without an extra key go to a scatter table."""
        return self.width >= SCATTER_FROM_WIDTH and not (keys & _EXTRA_MASK).any()

    def _table(self) -> ScatterSums:
        """A drained table, or a new one as large as the largest (cell ids only grow)."""
        if self._spare:
            return self._spare.pop()
        sizes = [t.size for t in self.tables.values()]
        return ScatterSums(self.width, max(sizes, default=0))

    def add_rows(
        self,
        slice_starts: np.ndarray,
        cutoffs: np.ndarray,
        keys: np.ndarray,
        values: np.ndarray | Entries,
    ) -> None:
        """Rows on time (cutoff NO_CUTOFF) and late alike: the one entry point of a family's
        bulk update (:mod:`operators.columnar.accumulator`)."""
        on_time = cutoffs == NO_CUTOFF
        if on_time.all():
            self.add(slice_starts, keys, values)
            return
        self.add(slice_starts[on_time], keys[on_time], _rows(values, on_time))
        late = ~on_time
        vectors = _rows(values, late)
        if isinstance(vectors, Entries):
            vectors = vectors.dense()
        for vector, slice_start, key, cutoff in zip(
            vectors, slice_starts[late].tolist(), keys[late].tolist(), cutoffs[late].tolist(),
            strict=True,
        ):  # fmt: skip
            self.add_restricted(slice_start, key >> EXTRA_KEY_BITS, key & _EXTRA_MASK, cutoff,
                                vector.copy())  # fmt: skip

    def add_restricted(
        self, slice_start: int, cell_id: int, extra: int, cutoff: float, vector: np.ndarray
    ) -> None:
        key = (slice_start, cell_id, extra, cutoff)
        previous = self.restricted.get(key)
        self.restricted[key] = vector if previous is None else previous + vector

    def _runs(self) -> dict[int, Run]:
        """Each slice's on-time sums as one sorted run (leaving this as it is)."""
        runs = {slice_start: sums.compacted() for slice_start, sums in self.on_time.items()}
        parts: list[tuple[int, Run]] = [
            (slice_start, table.run(EXTRA_KEY_BITS))
            for slice_start, table in self.tables.items()
            if len(table)
        ]
        for slice_start, rows in self.pending.items():
            keys = np.concatenate([k for k, _ in rows]) if len(rows) > 1 else rows[0][0]
            values = np.concatenate([v for _, v in rows]) if len(rows) > 1 else rows[0][1]
            parts.append((slice_start, sum_by_sort(keys, values)))
        for slice_start, run in parts:
            older = runs.get(slice_start)
            runs[slice_start] = run if older is None else merge_runs(older, run)
        return runs

    @property
    def tables_held(self) -> int:
        """Scatter tables held, in use or kept for the next slices."""
        return len(self.tables) + len(self._spare)

    def release(self) -> None:
        """Free the drained tables kept for the next slices (a partition whose input
        ended has no next slice: ~7 MB a table at the bench's 10k dims)."""
        self._spare = []

    def drain(self) -> FamilyDelta | None:
        """The deltas as columns, leaving this accumulator empty."""
        runs = self._runs()
        for table in self.tables.values():
            table.clear()
        self._spare.extend(list(self.tables.values())[:MAX_SPARE_TABLES])
        del self._spare[MAX_SPARE_TABLES:]
        self.on_time, self.tables, self.pending = {}, {}, {}
        starts, keys, values = [], [], []
        for slice_start, (run_keys, run_values) in runs.items():
            starts.append(np.full(len(run_keys), slice_start, dtype=np.int64))
            keys.append(run_keys)
            values.append(run_values)
        cutoffs = [np.full(sum(len(k) for k in keys), NO_CUTOFF)]
        if self.restricted:
            entries = list(self.restricted.items())
            starts.append(np.array([k[0] for k, _ in entries], dtype=np.int64))
            keys.append(
                np.array([k[1] << EXTRA_KEY_BITS | k[2] for k, _ in entries], dtype=np.int64)
            )
            cutoffs.append(np.array([k[3] for k, _ in entries]))
            values.append(np.array([v for _, v in entries]).reshape(len(entries), self.width))
        self.restricted = {}
        if not keys:
            return None
        all_keys = _joined(keys)
        if len(all_keys) == 0:
            return None
        return FamilyDelta(
            _joined(starts),
            _joined(cutoffs),
            all_keys >> EXTRA_KEY_BITS,
            all_keys & _EXTRA_MASK,
            _joined(values),
        )


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The parts as one array; the one part itself (most ticks have one slice: no copy)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _rows(values: np.ndarray | Entries, keep: np.ndarray) -> np.ndarray | Entries:
    return values.select(keep) if isinstance(values, Entries) else values[keep]
