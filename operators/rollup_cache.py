"""One family's cached rollups of an open window, for early rows: updated in place.

Each early emission adds the rollup of the window's fresh deltas to its cached rollups.
Merged as two sorted runs (:func:`~operators.keyed_sums.merge_runs`), that copied the
whole cache at every emission: O(cache), growing with the hour window over the hour.
Here the keys already cached get their sums added in place, and only the keys new to
the cache are merged, into a small side run that joins the main run once it has grown
to about sqrt(2 · main · new) rows: each emission costs in proportion to its delta and
the side run, the main run's copy amortized over many emissions. The sums are the same
additions (cached + delta, key by key) as a merge's, so the rows are bit for bit the same.

A delta may subtract too (a sliding window's cache passed on to the next window, less
the parts it no longer covers, :meth:`drop_emptied`): every value is on a grid
(:mod:`operators.metrics`), so the differences are exact.
"""

from __future__ import annotations

import numpy as np

from operators.keyed_sums import Run, merge_runs, rows_in


class RollupCache:
    """Sorted unique keys and their sums, as a main run and a side run of other keys."""

    __slots__ = ("keys", "side", "values")

    def __init__(self, run: Run) -> None:
        keys, values = run
        self.keys = keys
        # Our own copy, updated in place (a rollup's values can be a pane's own arrays).
        self.values = np.array(values, dtype=np.float64)
        self.side: Run = (keys[:0], self.values[:0])

    def __len__(self) -> int:
        return len(self.keys) + len(self.side[0])

    def add(self, delta: Run) -> None:
        """Add a sorted run with unique keys (the caller's arrays are not kept)."""
        add_keys, add_values = delta
        if len(add_keys) == 0:
            return
        pos, found = _find(self.keys, add_keys)
        if found.all():
            self.values[pos] += add_values
            return
        self.values[pos[found]] += add_values[found]
        new = ~found
        new_keys, new_values = add_keys[new], add_values[new]
        side_keys, side_values = self.side
        if len(side_keys):
            side_pos, in_side = _find(side_keys, new_keys)
            if in_side.any():
                side_values[side_pos[in_side]] += new_values[in_side]
                if in_side.all():
                    return
                new_keys, new_values = new_keys[~in_side], new_values[~in_side]
        side = merge_runs(self.side, (new_keys, new_values))  # disjoint: no sums
        if len(side[0]) ** 2 >= 2 * len(self.keys) * len(new_keys):
            self.keys, self.values = merge_runs((self.keys, self.values), side)
            side = self.keys[:0], self.values[:0]
        self.side = side

    def drop_emptied(self, keys: np.ndarray) -> None:
        """Forget those of `keys` (sorted, unique, every one cached) whose sums are now
        all zero: a delta took away every contribution they had. Every contribution
        counts in some field of its family (an event, a tp, fp or fn, a win or tie, a
        report, a latency bucket: each adds a positive count), so all-zero sums are
        exactly the keys a sum of the remaining parts would not hold."""
        if len(keys) == 0:
            return
        empty = ~self.of_keys(keys)[1].any(axis=1)
        if not empty.any():
            return
        gone = keys[empty]
        self.keys, self.values = _without(self.keys, self.values, gone)
        self.side = _without(*self.side, gone)

    def run(self) -> Run:
        """Everything as one sorted run (it may share the cache's arrays: read only)."""
        if len(self.side[0]) == 0:
            return self.keys, self.values
        return merge_runs((self.keys, self.values), self.side)

    def of_cells(self, low: np.ndarray, high: np.ndarray) -> Run:
        """The rows with keys in [low[i], high[i]) for every i (sorted, disjoint), in
        key order: fresh arrays."""
        rows = rows_in(self.keys, low, high)
        main = self.keys[rows], self.values[rows]
        side_keys, side_values = self.side
        if len(side_keys) == 0:
            return main
        rows = rows_in(side_keys, low, high)
        if len(rows) == 0:
            return main
        return merge_runs(main, (side_keys[rows], side_values[rows]))

    def of_keys(self, keys: np.ndarray) -> Run:
        """The rows of `keys` (sorted, unique, every one cached): fresh arrays."""
        pos, found = _find(self.keys, keys)
        if found.all():
            return keys, self.values[pos]
        side_keys, side_values = self.side
        values = np.empty((len(keys), self.values.shape[1]))
        values[found] = self.values[pos[found]]
        values[~found] = side_values[np.searchsorted(side_keys, keys[~found])]
        return keys, values


def _find(keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each wanted key's position in the sorted `keys`, and whether it is there."""
    pos = np.searchsorted(keys, wanted)
    found = pos < len(keys)
    found[found] = keys[pos[found]] == wanted[found]
    return pos, found


def _without(keys: np.ndarray, values: np.ndarray, gone: np.ndarray) -> Run:
    """The sorted run less the rows of `gone` (sorted; any of them may be absent)."""
    keep = np.ones(len(keys), dtype=bool)
    pos, found = _find(keys, gone)
    keep[pos[found]] = False
    if keep.all():
        return keys, values
    return keys[keep], values[keep]
