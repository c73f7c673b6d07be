"""Vectors of sums by int64 key, merged a whole batch at a time with numpy.

The merge stage adds every partition's slice deltas into panes, once per grouping set:
thousands of keys per tick. A Python dict per key would cost a lookup per key; here a
batch is summed once (:func:`sum_by_key`: a sort for small batches, one sparse product for
large ones) and kept as a sorted *run*. Runs are merged
size-tiered, as an LSM tree does (a run merges into the one before it once it is at least
half its size), so a pane that keeps growing for an hour copies each row O(log n) times
rather than once per tick, and there are at most O(log n) runs to read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from operators.snapshots import pack, unpack

Run = tuple[np.ndarray, np.ndarray]  # sorted unique int64 keys, float64 [rows, width]


BINCOUNT_FROM = 4096  # rows; below this one sort beats the sums by id (_column_sums)
RANK_BY_SORT = 8  # rank ids by a sort when they are this many times fewer than the range


def run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts in a sorted array: `np.unique`'s first
    indices, in one pass and no sort."""
    if len(values) == 0:
        return np.empty(0, dtype=np.intp)
    return np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))


def sum_by_key(keys: np.ndarray, values: np.ndarray) -> Run:
    """Sorted unique keys and the sum of the value rows of each."""
    if len(keys) == 0:
        return keys.astype(np.int64), values
    if len(keys) >= BINCOUNT_FROM:
        return sum_by_keys(keys[:, None], values)
    return sum_by_sort(keys, values)


def sum_by_sort(keys: np.ndarray, values: np.ndarray) -> Run:
    """:func:`sum_by_key` by one stable sort, whatever the size: each key's rows are added
    in their order, so a sum is -0.0 where all its rows are (a bincount starts at +0.0)."""
    if len(keys) == 0:
        return keys.astype(np.int64), values
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    values = values[order]
    starts = run_starts(keys)
    if len(starts) == len(keys):
        return keys, values
    return keys[starts], np.add.reduceat(values, starts, axis=0)


def sum_by_keys(keys: np.ndarray, values: np.ndarray) -> Run:
    """Like :func:`sum_by_key` for rows that each count under several keys: `keys` is
    [rows, k], and row i adds to all of keys[i] (a finest cell to each of its rollups).

    Large inputs: group ids from `np.unique`, then the sums by id (:func:`_column_sums`),
    never the k-fold repeated rows. Gathering whole rows in sorted order (what reduceat needs) is
    the costly part of sorting. Both ways give bit-identical sums: every value is on an
    exact grid (:mod:`operators.metrics`), so the order of addition does not matter.
    """
    rows, k = keys.shape
    if rows * k < BINCOUNT_FROM:
        return sum_by_key(keys.ravel(), np.repeat(values, k, axis=0))
    unique, inverse = np.unique(keys.T.ravel(), return_inverse=True)
    if k == 1 and len(unique) == rows:  # nothing to add up (a partition's own delta)
        order = np.argsort(keys[:, 0])
        return unique.astype(np.int64), values[order]
    return unique.astype(np.int64), _column_sums(inverse, values, k, len(unique))


def sum_by_dense_keys(keys: np.ndarray, values: np.ndarray, size: int) -> Run:
    """:func:`sum_by_keys` for keys known to lie in [0, size) (cell ids): no sort at all,
    the ids that occur (one bincount over the id range), then their sums."""
    flat = keys.T.ravel()
    if values.shape[1] == 1 and (values > 0).all():  # counts: a key is present iff its sum is
        sums = np.bincount(flat, weights=np.tile(values[:, 0], keys.shape[1]), minlength=size)
        present = np.flatnonzero(sums > 0)
        return present.astype(np.int64), sums[present][:, None]
    present = np.flatnonzero(np.bincount(flat, minlength=size) > 0)  # via bool: ~2x faster
    return present.astype(np.int64), _column_sums(flat, values, keys.shape[1], size, present)


def _column_sums(
    ids: np.ndarray, values: np.ndarray, k: int, size: int, keep: np.ndarray | None = None
) -> np.ndarray:
    """[size (or len(keep)), width]: the rows of `values`, tiled k times, summed at `ids`.

    One sparse product (scipy): a 0/1 matrix [ids, rows] times the rows, every column in
    one pass and the rows never tiled. A bincount per column read the ids and a tiled
    copy of the column once per column: 2.3x the time on the early rows' rollups
    (docs/performance.md). Zeros are never multiplied and each sum starts at +0.0, as a
    bincount's does, so the sums are bit-identical. (scipy.sparse is imported at the first
    call, not with the module: ~0.2 s a process that may never sum a batch.)"""
    import scipy.sparse

    rows = values.shape[0]
    if keep is not None:
        position = np.full(size, -1, dtype=np.int64)
        position[keep] = np.arange(len(keep))
        ids, size = position[ids], len(keep)
    columns = np.tile(np.arange(rows, dtype=np.int64), k)  # ids are k blocks of the rows
    ones = np.ones(len(ids))
    matrix = scipy.sparse.csr_array((ones, (ids, columns)), shape=(size, rows))
    return np.ascontiguousarray(matrix @ values)


def rank_ids(ids: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(ids, return_inverse=True)` for ids in [0, size), the inverse in `ids`'
    shape: the distinct ids, sorted, and each id's rank among them. Ids of a dense range
    (cell ids) are ranked by a table of `size` flags and its running count, O(size + n),
    instead of a sort, unless they are far fewer than `size` (a rollup's ids: 3-10x
    faster at the merge stage's sizes)."""
    if ids.size * RANK_BY_SORT < size:
        distinct, rank = np.unique(ids, return_inverse=True)
        return distinct, rank.reshape(ids.shape)
    seen = np.zeros(size, dtype=bool)
    seen[ids] = True
    rank_of = np.cumsum(seen) - 1
    return np.flatnonzero(seen), rank_of[ids]


def merge_runs(older: Run, newer: Run) -> Run:
    """Two sorted runs as one, in O(n + m): shared keys are summed. The older values are
    copied once (into the merged arrays, or, when no key is new, as they are)."""
    keys, values = older
    add_keys, add_values = newer
    n = len(keys)
    pos = np.searchsorted(keys, add_keys)
    found = pos < n
    found[found] = keys[pos[found]] == add_keys[found]
    if found.all():
        values = values.copy()
        values[pos] += add_values
        return keys, values
    new = ~found
    new_keys = add_keys[new]
    # Both sides are sorted: the i-th new key lands at its insertion point + i.
    at = pos[new] + np.arange(len(new_keys))
    total = n + len(new_keys)
    old = np.ones(total, dtype=bool)
    old[at] = False
    merged_keys = np.empty(total, dtype=np.int64)
    merged_keys[at] = new_keys
    merged_keys[old] = keys
    merged_values = np.empty((total, values.shape[1]), dtype=np.float64)
    merged_values[at] = add_values[new]
    merged_values[old] = values
    if found.any():  # an older row moves down by the new keys before it
        shared = add_keys[found]
        merged_values[pos[found] + np.searchsorted(new_keys, shared)] += add_values[found]
    return merged_keys, merged_values


def rows_in(keys: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Row indices of the sorted keys in [low[i], high[i]) for every i, in key order."""
    return _spans(np.searchsorted(keys, low), np.searchsorted(keys, high))


def _spans(start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Every integer in [start[i], stop[i]) for every i (stop >= start), in order."""
    lengths = stop - start
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.arange(total) - np.repeat(offsets - start, lengths)


DENSE_SLACK = 2  # a dense table may hold this many ids per id present, else runs
DENSE_MIN_IDS = 1 << 8  # ids a dense table may always hold, however few are present


class KeyedSums:
    """Sums of float64 vectors by int64 key, kept as a few sorted runs.

    Each run keeps its packed bytes (:func:`operators.snapshots.pack`) until it changes,
    so a snapshot packs only the runs merged since the last one and copies the rest: a
    growing pane (the hour window's) repacks its big run O(log n) times in its life, not
    at every snapshot.

    `dense_shift`: every key is ``id << dense_shift`` with ids small and mostly present
    (a pane's main family: one row per finest cell, extra key 0). Then the sums are a
    table indexed by id, and adding a batch is a scatter-add of its rows, never a merge
    that copies the pane's rows (the main family's rows are 33 floats: its merges were
    ~3 s of the bench log's bounded run). Once the ids present are too few for the range
    the table would span (fewer than 1 in `DENSE_SLACK`), the table becomes a run and
    the sums go on as runs. The table starts at -0.0, the sum's identity, so every sum
    is bit for bit what the runs would hold.
    """

    __slots__ = ("_blobs", "_dense", "_present", "dense_shift", "runs", "width")

    def __init__(self, width: int, dense_shift: int | None = None) -> None:
        self.width = width
        self.runs: list[Run] = []
        # runs[i] pickled, None until asked (while dense: the table's run, once asked)
        self._blobs: list[bytes | None] = []
        self.dense_shift = dense_shift
        self._dense: np.ndarray | None = None  # [ids, width], while dense
        self._present = np.zeros(0, dtype=bool)  # ids added to, while dense

    def __reduce__(self) -> tuple[Any, tuple[int, list[bytes]]]:
        if self._dense is not None:  # a snapshot holds a run, as it always did
            if not self._blobs:  # packed once while the table does not change
                self._blobs = [pack(self._dense_run())]
            return _keyed_sums_from_blobs, (self.width, [b for b in self._blobs if b])
        ready: list[bytes] = []
        for i, blob in enumerate(self._blobs):
            if blob is None:
                blob = self._blobs[i] = pack(self.runs[i])
            ready.append(blob)
        return _keyed_sums_from_blobs, (self.width, ready)

    def __len__(self) -> int:
        """Rows stored (a key in several runs counts once per run)."""
        if self._dense is not None:
            return int(np.count_nonzero(self._present))
        return sum(len(keys) for keys, _ in self.runs)

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Add value rows by key (keys may repeat)."""
        if len(keys):
            self.add_unique(*sum_by_key(keys, values))

    def add_unique(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Add value rows whose keys are sorted and unique (as `sum_by_key` returns them)."""
        if len(keys) == 0:
            return
        if self.dense_shift is not None and self._add_dense(keys, values):
            return
        runs, blobs = self.runs, self._blobs
        runs.append((keys, values))
        blobs.append(None)
        while len(runs) > 1 and 2 * len(runs[-1][0]) >= len(runs[-2][0]):
            self._merge_last_two()

    def _add_dense(self, keys: np.ndarray, values: np.ndarray) -> bool:
        """Add to the dense table, made or grown as needed (taking in any runs), unless
        the ids present would be too few for its size: then False, the caller adds to
        the runs (the table, if any, becomes one)."""
        assert self.dense_shift is not None
        if (keys & ((1 << self.dense_shift) - 1)).any():  # not ids << shift: never dense
            self._to_runs()
            self.dense_shift = None
            return False
        ids = keys >> self.dense_shift
        if self._dense is None or ids[-1] >= len(self._dense):  # keys are sorted
            top = max([int(ids[-1]), *(int(k[-1]) >> self.dense_shift for k, _ in self.runs)])
            size = max(top + 1 + (top + 1) // 8, 16)
            held = len(self) + len(ids)  # ids present after the add, at most
            # Hysteresis: a table gives way at twice the sparseness that makes one.
            slack = DENSE_SLACK * (1 if self._dense is None else 2)
            if size > max(DENSE_MIN_IDS, slack * held):
                self._to_runs()
                return False
            self._grow(size)
        assert self._dense is not None
        self._dense[ids] += values
        self._present[ids] = True
        self._blobs = []  # the table's packed run, if any, is stale
        return True

    def _grow(self, size: int) -> None:
        dense = np.full((size, self.width), -0.0)
        present = np.zeros(size, dtype=bool)
        if self._dense is not None:
            dense[: len(self._dense)] = self._dense
            present[: len(self._present)] = self._present
        for keys, values in self.runs:  # -0.0 + x is x: the same sums
            ids = keys >> self.dense_shift
            dense[ids] += values
            present[ids] = True
        self.runs, self._blobs = [], []
        self._dense, self._present = dense, present

    def _dense_run(self) -> Run:
        assert self._dense is not None and self.dense_shift is not None
        return _table_run(self._dense, self._present, self.dense_shift)

    def _to_runs(self) -> None:
        if self._dense is not None:
            run = self._dense_run()
            self._dense, self._present = None, np.zeros(0, dtype=bool)
            self.runs, self._blobs = ([run], [None]) if len(run[0]) else ([], [])

    def _merge_last_two(self) -> None:
        newer = self.runs.pop()
        self._blobs.pop()
        self.runs[-1] = merge_runs(self.runs[-1], newer)
        self._blobs[-1] = None

    def compacted(self) -> Run:
        """Everything as one sorted run (and keep it that way; a dense table's is made
        at each call)."""
        if self._dense is not None:
            return self._dense_run()
        if not self.runs:
            return np.empty(0, dtype=np.int64), np.empty((0, self.width))
        while len(self.runs) > 1:
            self._merge_last_two()
        return self.runs[0]

    @property
    def keys(self) -> np.ndarray:
        return self.compacted()[0]

    @property
    def values(self) -> np.ndarray:
        return self.compacted()[1]

    def gather(self, low: np.ndarray, high: np.ndarray) -> Run:
        """(keys, values) of the rows with keys in the ranges, from every run (unmerged:
        a key may appear once per run; sum with `sum_by_key`)."""
        if self._dense is not None:
            return self._gather_dense(low, high)
        keys_chunks, value_chunks = [], []
        for keys, values in self.runs:
            rows = rows_in(keys, low, high)
            keys_chunks.append(keys[rows])
            value_chunks.append(values[rows])
        if not keys_chunks:
            return np.empty(0, dtype=np.int64), np.empty((0, self.width))
        return np.concatenate(keys_chunks), np.concatenate(value_chunks)

    def _gather_dense(self, low: np.ndarray, high: np.ndarray) -> Run:
        assert self._dense is not None and self.dense_shift is not None
        size, shift = len(self._dense), self.dense_shift
        # key = id << shift is in [low, high) iff id is in [ceil(low >> shift), ...).
        first = np.clip(-((-low) >> shift), 0, size)
        stop = np.clip(-((-high) >> shift), 0, size)
        ids = _spans(first, np.maximum(stop, first))
        ids = ids[self._present[ids]]
        return ids.astype(np.int64) << shift, self._dense[ids]


def summed(parts: list[KeyedSums]) -> Run | None:
    """The sum of several KeyedSums as one sorted run (None: all empty). Dense tables
    are added as tables (the sum of a window's panes: a vector add each, no merge); the
    others' rows are summed together, then merged into the tables' sum."""
    tables = [p for p in parts if p._dense is not None]
    rest = [p for p in parts if p._dense is None and len(p)]
    if len(tables) == 1 and not rest:
        return tables[0]._dense_run()  # a tumbling window's one pane: no sum to make
    total: Run | None = None
    if tables:
        shift = tables[0].dense_shift
        assert shift is not None and all(p.dense_shift == shift for p in tables)  # one family
        size = max(len(p._present) for p in tables)
        dense, present = np.full((size, tables[0].width), -0.0), np.zeros(size, dtype=bool)
        for p in tables:
            assert p._dense is not None
            dense[: len(p._dense)] += p._dense
            present[: len(p._present)] |= p._present
        total = _table_run(dense, present, shift)
    if len(rest) > 1:
        # Every run of every part summed at once (a sort and one sparse product,
        # :func:`sum_by_key`): merging the parts one at a time into a running sum copied
        # that sum at each merge, 2-3x the time for a `5m_30s` window's ten panes. These
        # are the sparse families (widths 1-3): their rows together are a few MB.
        keys = np.concatenate([k for p in rest for k, _ in p.runs])
        values = np.concatenate([v for p in rest for _, v in p.runs])
        runs = [sum_by_key(keys, values)]
    else:
        runs = [p.compacted() for p in rest]
    for run in runs:
        total = run if total is None else merge_runs(total, run)
    return total


def _table_run(dense: np.ndarray, present: np.ndarray, shift: int) -> Run:
    """A dense table as a sorted run: its first rows as they are (a view, as the runs of
    a compacted KeyedSums are its own) when the ids present are 0..n-1, else the rows
    present, copied."""
    ids = np.flatnonzero(present)
    keys = ids.astype(np.int64) << shift
    if len(ids) == 0 or ids[-1] == len(ids) - 1:
        return keys, dense[: len(ids)]
    return keys, dense[ids]


def _keyed_sums_from_blobs(width: int, blobs: list[bytes]) -> KeyedSums:
    sums = KeyedSums(width)
    sums.runs = [unpack(blob) for blob in blobs]
    sums._blobs = list(blobs)  # still what it holds
    return sums
