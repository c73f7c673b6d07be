import random
from collections import Counter

import numpy as np
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

from operators.sketch import QUANTILES, bucket_of, segment_quantiles


def test_quantiles_equal_the_ddsketch_library_for_many_cells_at_once() -> None:
    rng = random.Random(5)
    starts, buckets, counts, expected = [], [], [], []
    for _ in range(300):
        values = [rng.lognormvariate(3, 1.2) for _ in range(rng.randint(1, 400))]
        values += [0.0] * rng.randint(0, 3)
        library = DDSketch(0.01)
        for v in values:
            library.add(v)
        expected.append([library.get_quantile_value(q) for q in QUANTILES])
        starts.append(len(buckets))
        for bucket, n in sorted(Counter(bucket_of(v) for v in values).items()):
            buckets.append(bucket)
            counts.append(float(n))
    got = segment_quantiles(np.array(starts), np.array(buckets), np.array(counts))
    assert np.allclose(got, np.array(expected), rtol=1e-12, atol=1e-12)


def test_relative_error_is_within_one_percent() -> None:
    rng = random.Random(9)
    values = sorted(rng.lognormvariate(4, 0.7) for _ in range(10_001))
    counts = Counter(bucket_of(v) for v in values)
    keys = sorted(counts)
    got = segment_quantiles(
        np.array([0]), np.array(keys), np.array([counts[k] for k in keys], float)
    )
    for j, q in enumerate(QUANTILES):
        true = values[round(q * (len(values) - 1))]
        assert abs(got[0, j] - true) / true <= 0.01 + 1e-9


def test_vectorized_buckets_equal_the_library_mapping() -> None:
    from operators.sketch import buckets_of

    rng = np.random.default_rng(4)
    values = np.concatenate((rng.lognormal(3, 2, 200_000), [0.0, 1e-320, 1.0, 2.0, 1e9]))
    assert buckets_of(values).tolist() == [bucket_of(v) for v in values.tolist()]


def test_bucket_ids_of_extreme_latencies_stay_in_the_key_space() -> None:
    """Ids are positive and below 2^EXTRA_KEY_BITS (they share a key with the cell id) for
    every latency the contract admits, and tiny ones land in the zero bucket, as 0 does."""
    from operators.cells import EXTRA_KEY_BITS
    from operators.sketch import MIN_TRACKED, ZERO_BUCKET, buckets_of

    tiny = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1e-300, MIN_TRACKED]
    tracked = [MIN_TRACKED * 1.01, 1e-200, 1e-6, 1.0, 1e9]
    ids = buckets_of(np.array(tiny + tracked)).tolist()
    assert ids == [bucket_of(v) for v in tiny + tracked]
    assert ids[: len(tiny)] == [ZERO_BUCKET] * len(tiny)
    assert all(0 < i < 1 << EXTRA_KEY_BITS for i in ids[len(tiny) :])
    mapping = LogarithmicMapping(0.01)
    for v in tracked:  # above the zero bucket, the library's own keys (shifted)
        assert bucket_of(v) - bucket_of(1.0) == mapping.key(v) - mapping.key(1.0)
