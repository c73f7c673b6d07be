import pickle

import numpy as np

from operators.keyed_sums import (
    BINCOUNT_FROM,
    KeyedSums,
    rows_in,
    sum_by_dense_keys,
    sum_by_key,
    sum_by_keys,
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
    """Small inputs sort, large ones bincount per column; on the QUANTUM grid both sums are
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
