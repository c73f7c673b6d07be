import pickle

import numpy as np
import pytest

from operators.keyed_sums import (
    BINCOUNT_FROM,
    KeyedSums,
    merge_runs,
    rank_ids,
    rows_in,
    sum_by_dense_keys,
    sum_by_key,
    sum_by_keys,
    summed,
)


def test_adds_by_key_across_batches_keeping_keys_sorted() -> None:
    sums = KeyedSums(2)
    sums.add(np.array([5, 1, 5]), np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 20.0]]))
    sums.add(np.array([3, 5]), np.array([[7.0, 7.0], [1.0, 1.0]]))
    assert sums.keys.tolist() == [1, 3, 5]
    assert sums.values.tolist() == [[3.0, 4.0], [7.0, 7.0], [12.0, 23.0]]


def test_matches_a_dict_on_random_batches() -> None:
    rng = np.random.default_rng(3)
    sums, reference = KeyedSums(3), {}
    for _ in range(50):
        keys = rng.integers(0, 200, size=rng.integers(0, 60))
        values = rng.normal(size=(len(keys), 3))
        sums.add(keys, values)
        for k, v in zip(keys.tolist(), values, strict=True):
            reference[k] = reference.get(k, 0) + v
    assert sums.keys.tolist() == sorted(reference)
    assert np.allclose(sums.values, np.array([reference[k] for k in sorted(reference)]))


def test_rows_in_finds_the_rows_of_key_ranges() -> None:
    keys = np.array([10, 11, 20, 35])
    assert rows_in(keys, np.array([10, 20, 30]), np.array([20, 30, 40])).tolist() == [0, 1, 2, 3]
    assert rows_in(keys, np.array([12, 21]), np.array([21, 35])).tolist() == [2]
    assert rows_in(keys, np.array([0]), np.array([5])).tolist() == []


def test_runs_stay_few_and_gather_sees_every_run() -> None:
    rng = np.random.default_rng(8)
    sums, reference = KeyedSums(1), {}
    for _ in range(300):
        keys = np.unique(rng.integers(0, 5000, size=rng.integers(1, 40)))
        sums.add_unique(keys, np.ones((len(keys), 1)))
        for k in keys.tolist():
            reference[k] = reference.get(k, 0) + 1
        assert len(sums.runs) <= 2 + int(np.log2(max(len(reference), 2)))
    keys, values = sum_by_key(*sums.gather(np.array([0]), np.array([2500])))
    assert dict(zip(keys.tolist(), values[:, 0].tolist(), strict=True)) == {
        k: v for k, v in reference.items() if k < 2500
    }
    assert len(sums.compacted()[0]) == len(reference) and len(sums.runs) == 1


def test_both_summing_paths_equal_a_dict_bit_for_bit() -> None:
    """Small inputs sort, large ones take one sparse product; on the QUANTUM grid both sums are
    exact, so they must agree to the last bit (and with a dict), row keys sorted."""
    rng = np.random.default_rng(11)
    for rows in (10, BINCOUNT_FROM - 1, BINCOUNT_FROM, 3 * BINCOUNT_FROM):
        keys = rng.integers(0, rows // 3 + 1, size=(rows, 4)).astype(np.int64) << 20
        values = np.round(rng.normal(size=(rows, 5)) / 2.0**-20) * 2.0**-20
        reference: dict[int, np.ndarray] = {}
        for row_keys, row in zip(keys.tolist(), values, strict=True):
            for key in row_keys:
                reference[key] = reference.get(key, 0) + row
        expected_keys = sorted(reference)
        expected = np.array([reference[k] for k in expected_keys])
        for got_keys, got in (
            sum_by_keys(keys, values),
            sum_by_key(keys.ravel(), np.repeat(values, 4, axis=0)),
        ):
            assert got_keys.tolist() == expected_keys
            assert np.array_equal(got, expected)
            assert got.flags["C_CONTIGUOUS"]


def test_a_snapshot_after_adding_or_compacting_holds_the_current_sums() -> None:
    """KeyedSums pickles each run from a cache while it is unchanged; every change to a
    run must drop its cache."""
    sums = KeyedSums(1)
    sums.add(np.array([1, 2]), np.ones((2, 1)))
    pickle.dumps(sums)
    sums.add(np.array([3]), np.ones((1, 1)))
    sums.add(np.array([2]), np.ones((1, 1)))
    assert len(sums.runs) > 1
    resumed = pickle.loads(pickle.dumps(sums))
    assert resumed.keys.tolist() == [1, 2, 3]
    assert resumed.values.ravel().tolist() == [1.0, 2.0, 1.0]
    sums.compacted()
    resumed = pickle.loads(pickle.dumps(sums))
    assert len(resumed.runs) == 1 and resumed.values.ravel().tolist() == [1.0, 2.0, 1.0]
    resumed.add(np.array([9]), np.ones((1, 1)))  # a resumed one goes on changing
    assert pickle.loads(pickle.dumps(resumed)).keys.tolist() == [1, 2, 3, 9]


def test_dense_keys_sum_like_any_keys() -> None:
    rng = np.random.default_rng(12)
    keys = rng.integers(0, 700, size=(3000, 8)).astype(np.int64)
    values = np.round(rng.normal(size=(3000, 6)) / 2.0**-20) * 2.0**-20
    dense_keys, dense = sum_by_dense_keys(keys, values, 1000)
    any_keys, summed = sum_by_keys(keys, values)
    assert dense_keys.tolist() == any_keys.tolist()
    assert np.array_equal(dense, summed) and dense.flags["C_CONTIGUOUS"]


def test_a_snapshot_pickles_only_the_runs_that_changed() -> None:
    sums = KeyedSums(1)
    sums.add(np.arange(1000), np.ones((1000, 1)))
    pickle.dumps(sums)
    big = sums._blobs[0]
    sums.add(np.array([5000]), np.ones((1, 1)))  # a small run: the big one stays
    resumed = pickle.loads(pickle.dumps(sums))
    assert sums._blobs[0] is big and len(sums.runs) == 2
    assert resumed.keys.tolist() == [*range(1000), 5000]
    sums.add(np.arange(2000, 4000), np.ones((2000, 1)))  # merges into the big run
    assert sums._blobs[0] is None
    resumed = pickle.loads(pickle.dumps(sums))
    assert len(resumed) == 3001 and resumed.values.sum() == 3001.0


def _dense_and_runs(seed: int, top: int, batches: int) -> tuple[KeyedSums, KeyedSums]:
    """The same batches (keys id << 24, values on a grid, signed zeros among them) into
    a dense KeyedSums and into one kept as runs."""
    rng = np.random.default_rng(seed)
    dense, runs = KeyedSums(3, dense_shift=24), KeyedSums(3)
    for _ in range(batches):
        ids = np.unique(rng.integers(0, top, size=rng.integers(1, top)))
        values = rng.integers(-4, 5, size=(len(ids), 3)) / 8.0
        values[values == 0] = rng.choice([0.0, -0.0], size=int((values == 0).sum()))
        dense.add_unique(ids << 24, values)
        runs.add_unique(ids << 24, values.copy())
    return dense, runs


def _same_bits(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return a[0].tolist() == b[0].tolist() and a[1].tobytes() == b[1].tobytes()


def test_a_dense_table_holds_the_runs_sums_bit_for_bit() -> None:
    dense, runs = _dense_and_runs(11, 600, 40)
    assert dense._dense is not None  # it did go dense
    assert len(dense) == len(runs.compacted()[0])
    assert _same_bits(dense.compacted(), runs.compacted())
    low, high = np.array([0, 5 << 24, 300 << 24]), np.array([1, (40 << 24) + 1, 1 << 40])
    assert _same_bits(sum_by_key(*dense.gather(low, high)), sum_by_key(*runs.gather(low, high)))
    resumed = pickle.loads(pickle.dumps(dense))
    assert _same_bits(resumed.compacted(), runs.compacted())
    packed = dense._blobs[0]  # kept for the next snapshot while the table is the same
    assert pickle.loads(pickle.dumps(dense)) and dense._blobs[0] is packed
    dense.add_unique(np.array([7 << 24]), np.ones((1, 3)))
    runs.add_unique(np.array([7 << 24]), np.ones((1, 3)))
    assert _same_bits(pickle.loads(pickle.dumps(dense)).compacted(), runs.compacted())
    # A sum of nothing but -0.0 is -0.0 in a run: the table's too.
    zeros = KeyedSums(1, dense_shift=24)
    zeros.add_unique(np.arange(4) << 24, np.array([[-0.0], [0.0], [-0.0], [1.0]]))
    zeros.add_unique(np.array([0, 1]) << 24, np.array([[-0.0], [-0.0]]))
    assert zeros._dense is not None
    assert np.signbit(zeros.values[:, 0]).tolist() == [True, False, True, False]


def test_a_dense_table_becomes_runs_when_its_ids_are_too_sparse() -> None:
    sums = KeyedSums(1, dense_shift=24)
    sums.add_unique(np.arange(300) << 24, np.ones((300, 1)))
    assert sums._dense is not None
    sums.add_unique(np.array([1 << 20]) << 24, np.ones((1, 1)))  # far beyond: runs now
    assert sums._dense is None and len(sums) == 301
    assert sums.keys.tolist() == [*(np.arange(300) << 24).tolist(), 1 << 44]
    # A key that is not an id << shift: runs for good.
    other = KeyedSums(1, dense_shift=24)
    other.add_unique(np.array([3, 5]), np.ones((2, 1)))
    assert other._dense is None and other.dense_shift is None and other.keys.tolist() == [3, 5]


def test_summed_adds_dense_tables_and_runs_alike() -> None:
    parts = [_dense_and_runs(seed, 500, 20) for seed in range(4)]
    mixed = [parts[0][0], parts[1][1], parts[2][0], parts[3][0], KeyedSums(3, 24)]
    as_runs = [runs for _, runs in parts]
    want = as_runs[0].compacted()
    for other in as_runs[1:]:
        want = merge_runs(want, other.compacted())
    for chosen in (mixed, as_runs, [p[0] for p in parts]):
        got = summed(chosen)
        assert got is not None and _same_bits(got, want)
    assert summed([KeyedSums(3, 24), KeyedSums(3)]) is None
    one = summed([parts[0][0], KeyedSums(3, 24)])
    assert one is not None and _same_bits(one, parts[0][1].compacted())


@pytest.mark.parametrize("n, size", [(0, 100), (3, 1000), (40, 100), (5000, 20_000)])
def test_ids_are_ranked_as_numpy_unique_ranks_them(n: int, size: int) -> None:
    """By a sort (ids far fewer than the range) or by a table of the range: the same."""
    ids = np.random.default_rng(n).integers(0, size, (n, 3))
    distinct, rank = rank_ids(ids, size)
    want, inverse = np.unique(ids, return_inverse=True)
    assert distinct.tolist() == want.tolist()
    assert rank.shape == ids.shape and rank.tolist() == inverse.reshape(ids.shape).tolist()
    assert (distinct[rank] == ids).all()
