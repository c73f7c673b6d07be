"""Field vectors of a batch as a sparse matrix: the entries that can be other than +0.0.

A counted event sets a few of the main family's ~33 fields (a feedback event its count
and its kind's two or three; an inference four), so its row of the field matrix is
mostly +0.0. The accumulator adds only these entries to a slice's table
(:class:`operators.scatter_sums.ScatterSums`); building the whole matrix and then finding
its non-zero entries cost more than the adds. :meth:`Entries.dense` gives the matrix,
for the rare paths that need rows (late events, narrow families' sorted runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Entries:
    """An [n, width] matrix whose entry k is values[k] at (rows[k], columns[k]); every
    other entry is +0.0. No (row, column) appears twice."""

    n: int
    width: int
    rows: np.ndarray  # int64
    columns: np.ndarray  # int64
    values: np.ndarray  # float64

    def __len__(self) -> int:
        return self.n

    def dense(self) -> np.ndarray:
        out = np.zeros((self.n, self.width))
        out[self.rows, self.columns] = self.values
        return out

    def select(self, keep: np.ndarray) -> Entries:
        """The rows where the bool mask `keep` [n] holds, renumbered in order."""
        kept = keep[self.rows]
        renumbered = np.cumsum(keep) - 1
        return Entries(
            int(np.count_nonzero(keep)), self.width, renumbered[self.rows[kept]],
            self.columns[kept], self.values[kept],
        )  # fmt: skip


class EntriesBuilder:
    """Collects the entries of an [n, width] matrix a column at a time."""

    __slots__ = ("_columns", "_rows", "_values", "n", "width")

    def __init__(self, n: int, width: int) -> None:
        self.n, self.width = n, width
        self._rows: list[np.ndarray] = []
        self._columns: list[int] = []
        self._values: list[np.ndarray | None] = []

    def put(self, rows: np.ndarray, column: int, values: np.ndarray | None = None) -> None:
        """Entries (rows[i], column) = values[i] (1.0 without `values`)."""
        self._rows.append(rows)
        self._columns.append(column)
        self._values.append(values)

    def put_columns(self, rows: np.ndarray, columns: np.ndarray) -> None:
        """Entries (rows[i], columns[i]) = 1.0 (the distinct columns of a histogram)."""
        self._rows.append(rows)
        self._columns.append(-1)
        self._values.append(columns)

    def build(self) -> Entries:
        lengths = [len(rows) for rows in self._rows]
        rows = np.concatenate(self._rows) if self._rows else np.empty(0, dtype=np.int64)
        columns = np.repeat(np.array(self._columns, dtype=np.int64), lengths)
        values = np.ones(len(rows))
        at = 0
        for length, column, value in zip(lengths, self._columns, self._values, strict=True):
            if value is None:
                pass
            elif column < 0:  # put_columns: the columns vary, the values are 1.0
                columns[at : at + length] = value
            else:
                values[at : at + length] = value
            at += length
        return Entries(self.n, self.width, rows.astype(np.int64, copy=False), columns, values)
