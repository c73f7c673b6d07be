"""A tick's sums of one slice by cell id: a dense table that batches are scatter-added to.

A partition's cell ids are small dense ints (:class:`operators.cells.LocalIds`), and a
tick adds thousands of rows, most to cells already seen. Sorting each batch by key and
merging it into sorted runs (:class:`operators.keyed_sums.KeyedSums`) cost most of the
accumulate; here a batch is one ``np.add.at`` of its non-zero entries into a table
indexed by ``id * width + column``, and the tick's rows are read off the table once, at
drain. Most entries of a wide family's rows are 0 (a feedback row sets a few of the
main family's ~33 fields), so adding only the non-zero ones skips most of the work.

Exact, bit for bit what summing the rows one after another gives: every value is on a
fixed grid (:mod:`operators.metrics`), so the order of additions does not matter, and
signed zeros are kept as IEEE addition keeps them: a sum is -0.0 only when every row
added to it was -0.0 there. The table starts at +0.0 and skips zeros, so it counts the
rows per id, and the -0.0 entries per (id, column) apart (they are rare), and puts the
sign back at drain.
"""

from __future__ import annotations

import numpy as np

from operators.field_entries import Entries
from operators.keyed_sums import Run

_MINUS_ZERO = np.int64(-(2**63))  # the bits of -0.0 read as an int64


class ScatterSums:
    """Sums of float64 rows of `width` by small non-negative int id, emptied by `clear`."""

    __slots__ = ("_negative_zeros", "_rows", "_table", "width")

    def __init__(self, width: int, size: int = 0) -> None:
        """`size`: ids to make room for at once (a partition's cells so far)."""
        self.width = width
        self._table = np.zeros((size, width))  # [ids, width]; +0.0 where nothing was added
        self._rows = np.zeros(size, dtype=np.int64)  # rows added per id
        self._negative_zeros: list[np.ndarray] = []  # flat positions of -0.0 entries

    @property
    def size(self) -> int:
        """Ids there is room for."""
        return len(self._rows)

    def __len__(self) -> int:
        """Ids added to since the last drain."""
        return int(np.count_nonzero(self._rows))

    def add(self, ids: np.ndarray, values: np.ndarray | Entries) -> None:
        """Add row i of `values` [n, width] at ids[i] (ids may repeat)."""
        if len(ids) == 0:
            return
        top = int(ids.max())
        if top >= len(self._rows):
            self._grow(top + 1)
        np.add.at(self._rows, ids, 1)
        if isinstance(values, Entries):
            self._add_entries(ids[values.rows], values.columns, values.values)
            return
        width = self.width
        flat = values.ravel()
        entries = np.flatnonzero(flat != 0)
        rows, columns = np.divmod(entries, width)
        self._add_entries(ids[rows], columns, flat[entries])
        negative_zeros = np.flatnonzero(flat.view(np.int64) == _MINUS_ZERO)
        if len(negative_zeros):
            rows, columns = np.divmod(negative_zeros, width)
            self._negative_zeros.append(ids[rows] * width + columns)

    def _add_entries(self, ids: np.ndarray, columns: np.ndarray, values: np.ndarray) -> None:
        positions = ids * self.width + columns
        np.add.at(self._table.ravel(), positions, values)
        negative_zeros = values.view(np.int64) == _MINUS_ZERO
        if negative_zeros.any():
            self._negative_zeros.append(positions[negative_zeros])

    def _grow(self, size: int) -> None:
        """Room for `size` ids and an eighth more: a partition's cells stop growing early
        in a run, and every table a partition holds is as large as the largest (half
        more held ~7 MB a table for ~17k cells at the bench's 10k dims)."""
        size = max(size + size // 8, 256)
        table = np.zeros((size, self.width))
        rows = np.zeros(size, dtype=np.int64)
        table[: len(self._table)] = self._table
        rows[: len(self._rows)] = self._rows
        self._table, self._rows = table, rows

    def run(self, shift: int) -> Run:
        """The ids added to, as the sorted keys ``id << shift``, with their sums."""
        ids = np.flatnonzero(self._rows)
        values = self._table[ids]
        if self._negative_zeros:
            positions, counts = np.unique(np.concatenate(self._negative_zeros), return_counts=True)
            every = counts == self._rows[positions // self.width]  # all its rows were -0.0
            row, column = np.divmod(positions[every], self.width)
            values[np.searchsorted(ids, row), column] = -0.0
        return ids.astype(np.int64) << shift, values

    def clear(self) -> None:
        """Back to no rows, keeping the table (zeroed where it was added to)."""
        ids = np.flatnonzero(self._rows)
        self._table[ids] = 0.0
        self._rows[ids] = 0
        self._negative_zeros = []
