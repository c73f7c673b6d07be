import numpy as np

from operators.keyed_sums import KeyedSums


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


def test_range_of_finds_key_ranges() -> None:
    sums = KeyedSums(1)
    sums.add(np.array([10, 11, 20, 35]), np.ones((4, 1)))
    low, high = sums.range_of(np.array([10, 20, 30]), np.array([20, 30, 40]))
    assert low.tolist() == [0, 2, 3] and high.tolist() == [2, 3, 4]
