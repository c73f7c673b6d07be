"""RollupCache: the same sums as merging every delta into one run, whatever the order of
keys new to the main run, to the side run, or to both (and after folding the side in)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.keyed_sums import Run, merge_runs, rows_in
from operators.rollup_cache import RollupCache


def _run(keys: list[int], seed: int, width: int) -> Run:
    unique = np.unique(np.array(keys, dtype=np.int64))
    # Values on a grid of quarters, as the flow's are: sums exact in any order.
    values = np.random.default_rng(seed).integers(-8, 8, (len(unique), width)) / 4.0
    return unique, values


_keys = st.lists(st.integers(0, 200), max_size=60)


@settings(max_examples=200, deadline=None)
@given(first=_keys, deltas=st.lists(_keys, min_size=1, max_size=12), width=st.sampled_from([1, 3]))
def test_cache_equals_merged_runs(first: list[int], deltas: list[list[int]], width: int) -> None:
    start = _run(first, 0, width)
    pane_values = start[1].copy()
    cache = RollupCache(start)
    merged = start
    for i, keys in enumerate(deltas, 1):
        delta = _run(keys, i, width)
        cache.add(delta)
        merged = merge_runs(merged, delta)
        run = cache.run()
        assert np.array_equal(run[0], merged[0])
        assert np.array_equal(run[1], merged[1])
        assert len(cache) == len(merged[0])
        if len(delta[0]):  # the keys just changed, and cells (key ranges) around them
            got = cache.of_keys(delta[0])
            assert np.array_equal(got[0], delta[0])
            assert np.array_equal(got[1], merged[1][np.searchsorted(merged[0], delta[0])])
            low = np.unique(delta[0] // 8) * 8
            got = cache.of_cells(low, low + 8)
            rows = rows_in(merged[0], low, low + 8)
            assert np.array_equal(got[0], merged[0][rows])
            assert np.array_equal(got[1], merged[1][rows])
    # The arrays it was built from are not written to (a rollup's can be a pane's).
    assert np.array_equal(start[1], pane_values)


def test_keys_new_to_a_large_cache_wait_in_the_side_run() -> None:
    """A delta of few new keys is not merged into the main run (that would copy it)."""
    cache = RollupCache(_run(list(range(0, 20_000, 2)), 0, 1))
    main = cache.values
    cache.add(_run([1, 3, 4], 1, 1))
    assert cache.values is main
    assert len(cache.side[0]) == 2 and len(cache) == 10_002


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_keys, min_size=2, max_size=6), added=_keys, dropped=st.integers(1, 3))
def test_a_cache_less_its_oldest_parts_equals_the_sum_of_the_rest(
    parts: list[list[int]], added: list[int], dropped: int
) -> None:
    """A sliding window's cache passed on: the sums of every part, plus a new part, less
    the oldest parts, with the keys left empty dropped, equal the sum of the parts that
    remain (keys and values), whether the emptied keys sit in the main or the side run.
    Each part's values are positive counts, as every contribution's are (a key with all
    zero sums holds none)."""

    def counts(keys: list[int], seed: int) -> Run:
        unique = np.unique(np.array(keys, dtype=np.int64))
        rng = np.random.default_rng(seed)
        return unique, rng.integers(1, 5, (len(unique), 2)) / 4.0 - [0.0, 1.0]

    runs = [counts(keys, seed) for seed, keys in enumerate(parts)]
    cache = RollupCache(runs[0])
    for run in runs[1:]:
        cache.add(run)  # later parts' keys may wait in the side run
    new = counts(added, 99)
    gone = runs[:dropped]
    delta = new
    for keys, values in gone:
        delta = merge_runs(delta, (keys, -values))
    cache.add(delta)
    cache.drop_emptied(delta[0])
    want: Run = (np.empty(0, dtype=np.int64), np.empty((0, 2)))
    for run in [*runs[dropped:], new]:
        want = merge_runs(want, run)
    got = cache.run()
    assert np.array_equal(got[0], want[0])
    assert np.array_equal(got[1], want[1])
