"""Slice deltas summed by scatter tables and per-tick sorts are, bit for bit, each key's
rows added one after another (signed zeros included), at any batch split, across a
snapshot, for dense rows and sparse entries alike."""

from __future__ import annotations

import itertools
import pickle
from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import slices as slice_module
from operators.cells import EXTRA_KEY_BITS
from operators.field_entries import Entries
from operators.scatter_sums import ScatterSums
from operators.slices import NO_CUTOFF, SliceDeltas

WIDE, NARROW = 9, 2  # a scatter-table family (main-like) and a sorted one
SCATTER_FROM_ROWS = slice_module.SCATTER_FROM_ROWS
GRID = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0**-20, -(2.0**-20), 3.0]

row = st.tuples(
    st.sampled_from([0, 1000]),  # slice
    st.integers(0, 5),  # cell
    st.sampled_from([0, 0, 3]),  # extra key
    st.lists(st.sampled_from(GRID), min_size=WIDE, max_size=WIDE),
)


def bits(a: np.ndarray) -> list[int]:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64).ravel().tolist()


def expected(rows: list[tuple[int, int, int, list[float]]], width: int) -> dict:
    """Each (slice, cell, extra)'s rows added in order, as Python adds floats."""
    sums: dict[tuple[int, int, int], list[float]] = {}
    for slice_start, cell, extra, values in rows:
        key = (slice_start, cell, extra)
        if key not in sums:
            sums[key] = list(values[:width])
        else:
            sums[key] = [a + b for a, b in zip(sums[key], values[:width], strict=True)]
    return {k: bits(np.array(v)) for k, v in sums.items()}


def got(deltas: SliceDeltas) -> dict:
    delta = deltas.drain()
    if delta is None:
        return {}
    assert (delta.cutoffs == NO_CUTOFF).all()
    out = {}
    for i in range(len(delta)):
        key = (int(delta.slice_starts[i]), int(delta.cell_ids[i]), int(delta.extras[i]))
        assert key not in out  # one row per key
        out[key] = bits(delta.values[i])
    return out


def sparse(values: np.ndarray) -> Entries:
    """The rows as entries: the non-zero ones and the -0.0 ones (as the builders emit a
    kind's weighted fields, zeros included)."""
    rows, columns = np.nonzero(np.signbit(values) | (values != 0))
    return Entries(len(values), values.shape[1], rows, columns, values[rows, columns])


@settings(max_examples=300, deadline=None)
@given(st.lists(row, max_size=40), st.lists(st.integers(0, 40), max_size=3), st.booleans(),
       st.booleans())  # fmt: skip
def test_sums_are_the_rows_added_in_order(
    rows: list[tuple[int, int, int, list[float]]], cuts: list[int], entries: bool, snapshot: bool
) -> None:
    try:
        for width, table_from in ((WIDE, 1), (WIDE, 10), (NARROW, 1)):
            slice_module.SCATTER_FROM_ROWS = table_from  # a batch of this many rows makes a table
            deltas = SliceDeltas(width)
            bounds = [0, *sorted(min(c, len(rows)) for c in cuts), len(rows)]
            for a, b in itertools.pairwise(bounds):
                part = rows[a:b]
                if not part:
                    continue
                if snapshot:  # a snapshot between batches holds the same sums
                    deltas = pickle.loads(pickle.dumps(deltas))
                slices = np.array([r[0] for r in part], dtype=np.int64)
                keys = np.array([r[1] << EXTRA_KEY_BITS | r[2] for r in part], dtype=np.int64)
                values = np.array([r[3][:width] for r in part])
                cutoffs = np.full(len(part), NO_CUTOFF)
                deltas.add_rows(slices, cutoffs, keys, sparse(values) if entries else values)
            assert got(deltas) == expected(rows, width)
    finally:
        slice_module.SCATTER_FROM_ROWS = SCATTER_FROM_ROWS


def test_a_sum_is_minus_zero_only_when_all_its_rows_are() -> None:
    table = ScatterSums(2)
    table.add(np.array([0, 0, 1, 2]), np.array([[-0.0, -0.0], [-0.0, 0.0], [-0.0, 1.0],
                                                [0.0, -1.0]]))  # fmt: skip
    table.add(np.array([2]), np.array([[-0.0, 1.0]]))
    keys, values = table.run(0)
    assert keys.tolist() == [0, 1, 2]
    assert bits(values) == bits(np.array([[-0.0, 0.0], [-0.0, 1.0], [0.0, 0.0]]))
    table.clear()
    assert len(table) == 0 and table.run(0)[0].tolist() == []


def test_a_drained_table_is_reused_empty() -> None:
    deltas = SliceDeltas(WIDE)
    n = SCATTER_FROM_ROWS  # enough rows for a table
    ones = np.ones((n, WIDE))
    deltas.add_rows(np.zeros(n, dtype=np.int64), np.full(n, NO_CUTOFF),
                    np.full(n, 3) << 24, ones)  # fmt: skip
    assert deltas.tables and got(deltas) == {(0, 3, 0): bits(np.full(WIDE, float(n)))}
    deltas.add_rows(np.full(n, 60), np.full(n, NO_CUTOFF), np.full(n, 1) << 24, ones)
    assert got(deltas) == {(60, 1, 0): bits(np.full(WIDE, float(n)))}
    assert len(deltas) == 0 and got(deltas) == {}


def test_snapshot_holds_runs_of_the_tick() -> None:
    """A snapshot pickles each slice's rows as one run, not the (cell-sized) tables."""
    deltas = SliceDeltas(WIDE)
    cells = np.repeat(np.arange(50_000, 50_003, dtype=np.int64), SCATTER_FROM_ROWS)
    n = len(cells)
    deltas.add_rows(np.zeros(n, dtype=np.int64), np.full(n, NO_CUTOFF),
                    cells << EXTRA_KEY_BITS, np.ones((n, WIDE)))  # fmt: skip
    assert deltas.tables and len(pickle.dumps(deltas)) < 2_000
    sums = defaultdict(list)
    restored = pickle.loads(pickle.dumps(deltas))
    for key, value in got(restored).items():
        sums[key[1]] = value
    assert sorted(sums) == np.unique(cells).tolist()


def test_released_tables_are_freed_and_new_ones_made_after() -> None:
    deltas = SliceDeltas(WIDE)
    n = SCATTER_FROM_ROWS
    ones = np.ones((n, WIDE))
    deltas.add_rows(np.zeros(n, dtype=np.int64), np.full(n, NO_CUTOFF),
                    np.full(n, 3) << 24, ones)  # fmt: skip
    got(deltas)
    assert deltas.tables_held == 1  # drained, kept for the next slice
    deltas.release()
    assert deltas.tables_held == 0
    deltas.add_rows(np.full(n, 60), np.full(n, NO_CUTOFF), np.full(n, 1) << 24, ones)
    assert deltas.tables_held == 1
    assert got(deltas) == {(60, 1, 0): bits(np.full(WIDE, float(n)))}
