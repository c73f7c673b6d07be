"""The merge stage's window emissions as one typed batch, for the sink and for the rules.

A :class:`WindowMetrics` *is* the `metrics` :class:`~operators.batches.TableRows` the
ClickHouse sink writes (same table, same columns), and carries what the rules need on top,
so they never read SQL column names back: whether the rows are final or early, the
merge stage's watermark at the emission, the additive field matrix the published
metrics were derived from (:class:`operators.metrics.MainLayout` order, histogram bins
last), and each row's cell id (:class:`operators.cells.CellIndex`: one dense integer per
distinct dims, append-only and snapshotted with the merge stage, so the same cell has
the same id for the life of the flow, resumes included): rules that keep per-cell state
find a cell by that integer instead of hashing its dims. The wiring hands the sink a
plain :class:`TableRows` of the same columns (:meth:`WindowMetrics.table_rows`) so the
field matrix is not kept while rows wait to be written.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators.batches import Categorical, TableRows


@dataclass(slots=True)
class WindowGroup:
    """The rows of one window (name and start) within an emission."""

    window: str
    start: int
    end: int
    rows: np.ndarray  # row indices into the batch


@dataclass(slots=True)
class WindowMetrics(TableRows):
    """`metrics` rows of one emission (early or final), with the watermark and fields."""

    final: bool
    watermark: float  # the merge stage's minimum watermark when it emitted these rows
    field_names: tuple[str, ...]  # columns of `fields` (MainLayout.names)
    fields: Any  # numpy float64 [rows, len(field_names)]
    cell_ids: Any  # numpy int64 [rows]: each row's CellIndex id

    def table_rows(self) -> TableRows:
        """The same rows as plain TableRows (what the sink keeps until written)."""
        return TableRows(self.table, self.columns, write_now=self.write_now)

    def groups(self) -> Iterator[WindowGroup]:
        """The rows by window, in order of window end then name (oldest first)."""
        window = self.columns["window"]
        assert isinstance(window, Categorical)
        codes = np.asarray(window.codes, dtype=np.int64)
        starts = np.asarray(self.columns["window_start"], dtype=np.int64)
        ends = np.asarray(self.columns["window_end"], dtype=np.int64)
        if len(codes) == 0:
            return
        order = np.lexsort((codes, starts, ends))
        keys = np.stack((ends[order], starts[order], codes[order]), axis=1)
        cut = np.flatnonzero((keys[1:] != keys[:-1]).any(axis=1)) + 1
        for rows in np.split(order, cut):
            first = int(rows[0])
            yield WindowGroup(
                window.categories[int(codes[first])], int(starts[first]), int(ends[first]), rows
            )

    def event_time(self, window_end: int, allowed_lateness: int) -> float:
        """When the rules read these rows, in event time: a final window at the watermark
        that made it final (its end + allowed lateness: the same in a live run and in a
        replay, whatever tick carried it), an early one at the emission's watermark
        (-inf before every partition was heard from: not placeable yet)."""
        if self.final:
            return float(window_end + allowed_lateness)
        return self.watermark if math.isfinite(self.watermark) else -math.inf
