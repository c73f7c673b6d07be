"""The bulk dedup set answers exactly what RecentIds answers event by event — new or
duplicate, size, evictions — for random ids, expiry and bounds, at any batch split."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.columnar.dedup_set import DedupSet
from operators.dedup import RecentIds
from tests.operators.columnar.compaction import compaction_levels  # noqa: F401 (autouse)

# An operation: a run of (event_id, ts) added, or an expiry at a watermark.
events = st.lists(st.tuples(st.sampled_from([f"fb-{i}" for i in range(12)]), st.integers(0, 12)),
                  max_size=30)  # fmt: skip
operations = st.lists(st.one_of(events, st.integers(-5, 20)), max_size=12)


@settings(max_examples=600, deadline=None)
@given(operations, st.integers(1, 20), st.integers(0, 6), st.data())
def test_bulk_adds_equal_row_wise_at_any_split(
    ops: list[list[tuple[str, int]] | int], max_entries: int, horizon: int, data: st.DataObject
) -> None:
    row = RecentIds(horizon, max_entries)
    bulk = DedupSet(horizon, max_entries)
    for op in ops:
        if isinstance(op, int):
            row.expire(op)
            bulk.expire(op)
            continue
        want = [row.add(key, ts) for key, ts in op]
        cuts = sorted({0, len(op), *data.draw(st.lists(st.integers(0, len(op)), max_size=4))})
        got: list[bool] = []
        for a, b in itertools.pairwise(cuts):
            part = op[a:b]
            got.extend(
                bulk.add(
                    [k for k, _ in part], np.array([t for _, t in part], dtype=np.int64)
                ).tolist()
            )
        assert got == want
        assert (len(bulk), bulk.evicted) == (len(row), row.evicted)
    keys = [f"fb-{i}" for i in range(12)]
    assert bulk.contains(keys).tolist() == [k in row for k in keys]


def test_a_held_id_pushed_out_inside_a_batch_counts_again() -> None:
    """The bound acts between two occurrences in one batch (the fixed point's case)."""
    bulk, row = DedupSet(10**9, 2), RecentIds(10**9, 2)
    first = ["a", "b"]
    bulk.add(first, np.zeros(2, dtype=np.int64))
    for key in first:
        row.add(key, 0)
    batch = ["a", "c", "d", "a", "b"]
    want = [row.add(key, 0) for key in batch]
    assert want == [False, True, True, True, True]
    assert bulk.add(batch, np.zeros(5, dtype=np.int64)).tolist() == want
