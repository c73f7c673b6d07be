"""Vectors of sums by int64 key, merged a whole batch at a time with numpy.

The merge stage adds every partition's slice deltas into each window they belong to,
once per grouping set: thousands of keys per tick. A Python dict per key would cost a
lookup per key and window; here a batch is sorted once and merged into sorted arrays
(``searchsorted``), so the work per tick is a few vectorized passes.
"""

from __future__ import annotations

import numpy as np


def sum_by_key(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys and the sum of the value rows of each."""
    if len(keys) == 0:
        return keys.astype(np.int64), values
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    values = values[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return keys[starts], np.add.reduceat(values, starts, axis=0)


class KeyedSums:
    """Sorted keys with one float64 vector each."""

    __slots__ = ("keys", "values")

    def __init__(self, width: int) -> None:
        self.keys = np.empty(0, dtype=np.int64)
        self.values = np.empty((0, width), dtype=np.float64)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def width(self) -> int:
        return int(self.values.shape[1])

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Add value rows by key (keys may repeat)."""
        if len(keys) == 0:
            return
        keys, values = sum_by_key(keys, values)
        if len(self.keys) == 0:
            self.keys, self.values = keys, values.copy()
            return
        pos = np.searchsorted(self.keys, keys)
        in_range = pos < len(self.keys)
        found = np.zeros(len(keys), dtype=bool)
        found[in_range] = self.keys[pos[in_range]] == keys[in_range]
        self.values[pos[found]] += values[found]
        if not found.all():
            new = ~found
            merged_keys = np.concatenate((self.keys, keys[new]))
            merged_values = np.concatenate((self.values, values[new]))
            order = np.argsort(merged_keys, kind="stable")
            self.keys, self.values = merged_keys[order], merged_values[order]

    def range_of(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row bounds [start, stop) of the keys in [low, high) for each pair of bounds."""
        return np.searchsorted(self.keys, low), np.searchsorted(self.keys, high)
