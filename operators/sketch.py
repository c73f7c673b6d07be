"""Latency quantiles from a mergeable DDSketch kept as sparse bucket counts.

The bucket mapping is the `ddsketch` library's :class:`LogarithmicMapping` (relative
accuracy 1 %, so every quantile is within 1 % of a true sample value). Buckets are
stored as (cell, bucket) -> count rows in the merge stage's keyed sums, not as one
``DDSketch`` object per cell: merging is then a vectorized add across partitions, slices,
windows and rollups, and quantiles of thousands of cells are read in one numpy pass.
The rank rule is DDSketch's own (``get_quantile_value``), so results equal the library's.
"""

from __future__ import annotations

import numpy as np
from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.01
MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
# Bucket ids are shifted to be non-negative; ZERO_BUCKET holds values too small to map.
ZERO_BUCKET = 0
_BUCKET_OFFSET = 1 << 15
QUANTILES = (0.5, 0.95, 0.99)
_MIN_POSSIBLE = MAPPING.min_possible
_key = MAPPING.key


def bucket_of(value: float) -> int:
    """The bucket id of a non-negative value."""
    if value > _MIN_POSSIBLE:
        return _key(value) + _BUCKET_OFFSET
    return ZERO_BUCKET


_LN2 = np.log(2.0)


def buckets_of(values: np.ndarray) -> np.ndarray:
    """Bucket ids of non-negative values, vectorized with the library's arithmetic
    (``ceil(log(v, 2) * multiplier)``, i.e. ln(v) / ln(2)), so ids equal `bucket_of`'s."""
    positive = values > _MIN_POSSIBLE
    safe = np.where(positive, values, 1.0)
    keys = np.ceil(np.log(safe) / _LN2 * MAPPING._multiplier).astype(np.int64) + _BUCKET_OFFSET
    return np.where(positive, keys, ZERO_BUCKET)


def bucket_values(buckets: np.ndarray) -> np.ndarray:
    """The representative value of each bucket id (0 for the zero bucket)."""
    keys = buckets.astype(np.float64) - _BUCKET_OFFSET
    gamma = MAPPING.gamma
    # LogarithmicMapping.value(key) = 2 ** (key / multiplier) * 2 / (1 + gamma)
    values = np.power(2.0, keys / MAPPING._multiplier) * (2.0 / (1.0 + gamma))
    return np.where(buckets == ZERO_BUCKET, 0.0, values)


def segment_quantiles(
    segment_starts: np.ndarray,
    buckets: np.ndarray,
    counts: np.ndarray,
    quantiles: tuple[float, ...] = QUANTILES,
) -> np.ndarray:
    """Quantiles per segment of bucket rows sorted by (segment, bucket).

    `segment_starts[i]` is the first row of segment i (segments are contiguous and
    non-empty). Returns an array [segments, len(quantiles)].
    """
    n_segments = len(segment_starts)
    out = np.full((n_segments, len(quantiles)), np.nan)
    if n_segments == 0:
        return out
    cumulative = np.cumsum(counts)
    ends = np.append(segment_starts[1:], len(counts))
    before = np.where(segment_starts > 0, cumulative[segment_starts - 1], 0.0)
    totals = cumulative[ends - 1] - before
    for j, q in enumerate(quantiles):
        rank = q * (totals - 1)
        # First row whose running count within the segment exceeds the rank.
        rows = np.searchsorted(cumulative, before + rank, side="right")
        rows = np.minimum(rows, ends - 1)
        out[:, j] = bucket_values(buckets[rows])
    out[totals <= 0] = np.nan
    return out
