import numpy as np

from operators.keyed_sums import KeyedSums, rows_in, sum_by_key


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
