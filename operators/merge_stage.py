"""The merge stage: partial slice deltas from every partition become window rows.

Low volume by design: it receives one :class:`PartialBatch` per partition per tick. Each
slice delta is added (vectorized, :mod:`operators.keyed_sums`) into every window that
contains the slice, once per grouping set. A window is final when every partition's
watermark has passed its end + allowed lateness; until then its changed cells are
emitted every `emit_interval` as early rows (``final = 0``, ``version`` = emission
time), then once as the final row (``final = 1``, ``version`` = :data:`FINAL_VERSION`)
that ``ReplacingMergeTree(version)`` keeps over all early ones, also after a replay.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from bytewax.operators import StatefulLogic

from operators.batches import TableRows
from operators.cells import BASE_DIMS, EXTRA_KEY_BITS, CellIndex
from operators.keyed_sums import KeyedSums
from operators.metrics import HISTOGRAM_METRIC, LATENCY_METRICS, MainLayout, derive
from operators.rows import format_extra_dims
from operators.sketch import segment_quantiles
from operators.slices import MAIN, NO_CUTOFF, FamilyDelta, PartialBatch
from operators.stats import FlowStats
from operators.windows import WindowSpec, slice_length

FINAL_VERSION = 1 << 62
_EXTRA_MASK = (1 << EXTRA_KEY_BITS) - 1


@dataclass(frozen=True)
class MergeConfig:
    partitions: int
    specs: tuple[WindowSpec, ...]
    grouping_sets: tuple[tuple[str, ...], ...]
    extra_dims: tuple[str, ...]
    allowed_lateness: int
    emit_interval: int
    confidence_bins: int


class WindowState:
    """Sums of one window instance: main fields and latency buckets by cell."""

    __slots__ = ("end", "latency", "main", "spec_index", "start", "touched")

    def __init__(self, spec_index: int, start: int, end: int, width: int) -> None:
        self.spec_index = spec_index
        self.start = start
        self.end = end
        self.main = KeyedSums(width)
        self.latency = KeyedSums(1)
        self.touched: list[np.ndarray] = []

    def family(self, name: str) -> KeyedSums:
        return self.main if name == MAIN else self.latency

    def all_cells(self) -> np.ndarray:
        return np.union1d(self.main.keys >> EXTRA_KEY_BITS, self.latency.keys >> EXTRA_KEY_BITS)


def _now_ms() -> float:
    return time.time() * 1000.0


class MergeStage(StatefulLogic[PartialBatch, TableRows, bytes]):
    """Sums partials per window and cell, decides finality, emits `metrics` rows."""

    def __init__(
        self,
        config: MergeConfig,
        stats: FlowStats,
        resume: bytes | None = None,
        clock: Callable[[], float] = _now_ms,
    ) -> None:
        self.config = config
        self.stats = stats
        self._now = clock
        self._slice = slice_length(config.specs)
        self._layout = MainLayout(config.confidence_bins)
        if resume is not None:
            self.__dict__.update(pickle.loads(resume))
        else:
            self.cells = CellIndex(config.grouping_sets, config.extra_dims)
            self.windows: dict[tuple[int, int], WindowState] = {}
            self.watermarks: dict[int, float] = {}
            self.ended: set[int] = set()
            self.final_before = [-float("inf")] * len(config.specs)
            self.next_tick = self._now() + config.emit_interval

    _SNAPSHOT_FIELDS = ("cells", "windows", "watermarks", "ended", "final_before", "next_tick")

    # ---- bytewax hooks -----------------------------------------------------------------

    def on_item(self, value: PartialBatch) -> tuple[list[TableRows], bool]:
        for name, delta in value.families.items():
            self._apply(name, delta)
        previous = self.watermarks.get(value.partition, -float("inf"))
        self.watermarks[value.partition] = max(previous, value.watermark)
        if value.ended:
            self.ended.add(value.partition)
            if len(self.ended) >= self.config.partitions:
                return self._emit(), StatefulLogic.RETAIN
        return [], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[TableRows], bool]:
        out = self._emit()
        self.next_tick = self._now() + self.config.emit_interval
        return out, StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[TableRows], bool]:
        """End of this execution: a bounded run has ended every partition; flush the rest."""
        return self._emit(), StatefulLogic.RETAIN

    def notify_at(self) -> datetime:
        return datetime.fromtimestamp(self.next_tick / 1000.0, tz=UTC)

    def snapshot(self) -> bytes:
        return pickle.dumps({name: getattr(self, name) for name in self._SNAPSHOT_FIELDS})

    # ---- merging -----------------------------------------------------------------------

    @property
    def watermark(self) -> float:
        """The minimum over all partitions (a partition not heard from yet is at -inf)."""
        if len(self.watermarks) < self.config.partitions:
            return -float("inf")
        return min(self.watermarks.values())

    def _apply(self, name: str, delta: FamilyDelta) -> None:
        rolled = self.cells.rollup_ids(delta.cells)  # [rows, grouping sets]
        sets = rolled.shape[1]
        keys = (rolled << EXTRA_KEY_BITS) | delta.extras[:, None]
        g, lateness = self._slice, self.config.allowed_lateness
        for (slice_start, cutoff), rows in _groups(delta.slice_starts, delta.cutoffs):
            group_keys = keys[rows].ravel()
            group_values = np.repeat(delta.values[rows], sets, axis=0)
            touched = np.unique(rolled[rows])
            for spec_index, spec in enumerate(self.config.specs):
                for start in spec.starts_containing_slice(slice_start, g):
                    end = start + spec.length
                    if end + lateness <= cutoff:
                        continue  # late for this window: counted in metrics_late
                    if end <= self.final_before[spec_index]:
                        self.stats.after_final += len(rows)
                        continue
                    window = self.windows.get((spec_index, start))
                    if window is None:
                        window = WindowState(spec_index, start, end, self._layout.width)
                        self.windows[(spec_index, start)] = window
                    window.family(name).add(group_keys, group_values)
                    window.touched.append(touched)

    def _emit(self) -> list[TableRows]:
        """Final rows for windows the watermark has passed, early rows for changed ones."""
        watermark = self.watermark
        lateness = self.config.allowed_lateness
        finals: list[tuple[WindowState, np.ndarray]] = []
        early: list[tuple[WindowState, np.ndarray]] = []
        for key in sorted(self.windows, key=lambda k: self.windows[k].end):
            window = self.windows[key]
            if window.end + lateness <= watermark:
                finals.append((window, window.all_cells()))
                del self.windows[key]
                spec_final = self.final_before[window.spec_index]
                self.final_before[window.spec_index] = max(spec_final, window.end)
            elif window.touched:
                early.append((window, np.unique(np.concatenate(window.touched))))
                window.touched = []
        out = []
        if finals:
            self.stats.windows_final += len(finals)
            out.append(self._rows(finals, final=True, version=FINAL_VERSION))
        if early:
            out.append(self._rows(early, final=False, version=int(self._now())))
        for rows in out:
            self.stats.metric_rows += len(rows)
        return out

    def _rows(
        self, parts: list[tuple[WindowState, np.ndarray]], final: bool, version: int
    ) -> TableRows:
        specs = self.config.specs
        width = self._layout.width
        cell_chunks, field_chunks, latency_chunks = [], [], []
        names: list[str] = []
        starts, ends = [], []
        for window, cells in parts:
            n = len(cells)
            cell_chunks.append(cells)
            field_chunks.append(_rows_of(window.main, cells, width))
            latency_chunks.append(_latency_quantiles(window.latency, cells))
            names.extend([specs[window.spec_index].name] * n)
            starts.append(np.full(n, window.start, dtype=np.int64))
            ends.append(np.full(n, window.end, dtype=np.int64))
        cell_ids = np.concatenate(cell_chunks)
        fields = np.concatenate(field_chunks)
        latency = np.concatenate(latency_chunks)
        window_start = np.concatenate(starts)
        window_end = np.concatenate(ends)
        n = len(cell_ids)

        columns: dict[str, Any] = {
            "window": names,
            "window_start": window_start,
            "window_end": window_end,
        }
        dims = self.cells.columns(cell_ids)
        for name in BASE_DIMS:
            columns[name] = dims[name]
        extra_names = self.config.extra_dims
        columns["extra_dims"] = (
            [
                format_extra_dims(extra_names, values)
                for values in zip(*(dims[name] for name in extra_names), strict=True)
            ]
            if extra_names
            else [""] * n
        )
        columns["final"] = np.full(n, 1 if final else 0, dtype=np.uint8)
        columns["version"] = np.full(n, version, dtype=np.uint64)
        seconds = (window_end - window_start) / 1000.0
        columns.update(derive(fields, seconds))
        for j, name in enumerate(LATENCY_METRICS):
            columns[name] = latency[:, j]
        first_bin = self._layout.first_bin
        columns[HISTOGRAM_METRIC] = fields[:, first_bin : first_bin + self.config.confidence_bins]
        return TableRows("metrics", columns)


def _groups(
    slice_starts: np.ndarray, cutoffs: np.ndarray
) -> list[tuple[tuple[int, float], np.ndarray]]:
    """Row indices grouped by (slice start, cutoff)."""
    on_time = cutoffs == NO_CUTOFF
    groups = []
    if on_time.all():
        uniques, inverse = np.unique(slice_starts, return_inverse=True)
        for i, slice_start in enumerate(uniques.tolist()):
            groups.append(((slice_start, NO_CUTOFF), np.flatnonzero(inverse == i)))
        return groups
    by_key: dict[tuple[int, float], list[int]] = {}
    for i, key in enumerate(zip(slice_starts.tolist(), cutoffs.tolist(), strict=True)):
        by_key.setdefault(key, []).append(i)
    return [(key, np.array(rows, dtype=np.int64)) for key, rows in by_key.items()]


def _rows_of(sums: KeyedSums, cells: np.ndarray, width: int) -> np.ndarray:
    """Main-family vectors of `cells` (zeros for a cell with no main row)."""
    out = np.zeros((len(cells), width))
    if len(sums) == 0:
        return out
    keys = cells << EXTRA_KEY_BITS
    pos = np.searchsorted(sums.keys, keys)
    found = pos < len(sums.keys)
    found[found] = sums.keys[pos[found]] == keys[found]
    out[found] = sums.values[pos[found]]
    return out


def _latency_quantiles(sums: KeyedSums, cells: np.ndarray) -> np.ndarray:
    out = np.full((len(cells), len(LATENCY_METRICS)), np.nan)
    if len(sums) == 0:
        return out
    low, high = sums.range_of(cells << EXTRA_KEY_BITS, (cells + 1) << EXTRA_KEY_BITS)
    lengths = high - low
    present = lengths > 0
    if not present.any():
        return out
    low, lengths = low[present], lengths[present]
    # Row indices of every present cell's bucket range, concatenated in cell order.
    segment_starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    rows = np.arange(lengths.sum()) - np.repeat(segment_starts - low, lengths)
    buckets = sums.keys[rows] & _EXTRA_MASK
    counts = sums.values[rows, 0]
    out[present] = segment_quantiles(segment_starts, buckets, counts)
    return out
