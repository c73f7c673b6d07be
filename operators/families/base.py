"""What a metric family is: one object defining everything about it, once.

A family is a vector of additive fields summed per (slice, cell, extra key) by the same
machinery (slice deltas, panes, rollups). Its object says, in one place, what differs
between families, as quix-streams' ``BaseAggregator`` does for its aggregations:

* its width, and what its extra key means;
* its **bulk update**: from a batch's counted events (:class:`JoinedColumns`) to rows
  ``(slice, cutoff, cell, key, values)``. Late events are the same rows with a cutoff
  (:mod:`operators.slices`), so there is no second, per-event path for them;
* its **derived metrics** at emission: what it adds to each cell's ``metrics`` row, and
  the metrics of its own table, if it has one.

A new family is one new object in :func:`operators.families.registry`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from operators.columnar.joined import JoinedColumns
from operators.field_entries import Entries


@dataclass(slots=True)
class Update:
    """Rows a batch adds to one family: row i adds values[i] at (slice, cutoff, cell, key)."""

    slices: np.ndarray  # int64
    cutoffs: np.ndarray  # float64, NO_CUTOFF for on-time rows
    cells: np.ndarray  # int64
    keys: np.ndarray  # int64 extra key (0 for families without one)
    values: np.ndarray | Entries  # float64 [rows, width], or its non-zero entries

    def __len__(self) -> int:
        return len(self.slices)


class Family(Protocol):
    """One metric family (see the module docstring)."""

    @property
    def name(self) -> str:
        """Its name in slice deltas, partial batches and the merge stage's state."""
        ...

    @property
    def key(self) -> str:
        """What its extra key means ("" when it has none)."""
        ...

    @property
    def width(self) -> int: ...

    @property
    def table(self) -> str | None:
        """The table of its own rows (one per window, cell and key), or None."""
        ...

    def updates(self, batch: JoinedColumns) -> Iterator[Update]:
        """The rows `batch` adds to this family, on time and late alike."""
        ...

    def cell_metrics(
        self, keys: np.ndarray, values: np.ndarray, cells: np.ndarray
    ) -> dict[str, np.ndarray]:
        """What this family adds to each of the (sorted, unique) `cells`' ``metrics`` row,
        from a window's sorted rows ``cell << EXTRA_KEY_BITS | key -> values`` (the rows
        of these cells: the merge stage picks an early emission's changed cells first)."""
        ...

    def key_columns(self, ids: np.ndarray, values: list[Any]) -> dict[str, Any]:
        """Columns naming the key values of its table's rows: row i's key is
        ``values[ids[i]]`` (the family's keys, by id), dictionary-encoded, not a value per
        row (a run's end writes ~1.4M class rows)."""
        ...

    def metrics(self, values: np.ndarray, seconds: np.ndarray) -> dict[str, np.ndarray]:
        """The published metrics of its table's rows (`seconds`: each row's window length)."""
        ...


def no_key(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)
