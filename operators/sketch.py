"""Latency quantiles from a mergeable DDSketch kept as sparse bucket counts.

The bucket mapping is the `ddsketch` library's :class:`LogarithmicMapping` (relative
accuracy 1 %, so every quantile is within 1 % of a true sample value). Buckets are
stored as (cell, bucket) -> count rows in the merge stage's keyed sums, not as one
``DDSketch`` object per cell: merging is then a vectorized add across partitions, slices,
windows and rollups, and quantiles of thousands of cells are read in one numpy pass.
The rank rule is DDSketch's own (``get_quantile_value``), so results equal the library's.

Range: bucket ids are the library's keys shifted by 2^15, and must stay within 1..2^24
(the keyed sums' extra-key bits, :data:`operators.cells.EXTRA_KEY_BITS`). The contract
bounds latency_ms to [0, 1e9] (id 33805); values up to :data:`MIN_TRACKED` (about
2.4e-285 ms, below which the shifted key would reach 0) count in the zero bucket, as 0 does.
"""

from __future__ import annotations

import math

import numpy as np
from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.01
MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
# Bucket ids are shifted to be positive; ZERO_BUCKET holds values too small to map.
ZERO_BUCKET = 0
_BUCKET_OFFSET = 1 << 15
QUANTILES = (0.5, 0.95, 0.99)
_key = MAPPING.key
# log_gamma(v) = log2(v) * _MULTIPLIER: LogarithmicMapping's formula, from its public
# relative accuracy (checked against its public key() below, and in the tests).
_RA = MAPPING.relative_accuracy
_MULTIPLIER = 1 / math.log1p(2 * _RA / (1 - _RA)) * math.log(2)
# The smallest value whose shifted key is positive (key > -_BUCKET_OFFSET).
MIN_TRACKED = max(MAPPING.min_possible, math.pow(2.0, (1 - _BUCKET_OFFSET) / _MULTIPLIER))


def bucket_of(value: float) -> int:
    """The bucket id of a non-negative value."""
    if value > MIN_TRACKED:
        return _key(value) + _BUCKET_OFFSET
    return ZERO_BUCKET


_LN2 = np.log(2.0)


def buckets_of(values: np.ndarray) -> np.ndarray:
    """Bucket ids of non-negative values, vectorized with the library's arithmetic
    (``ceil(log(v, 2) * multiplier)``, i.e. ln(v) / ln(2)), so ids equal `bucket_of`'s."""
    positive = values > MIN_TRACKED
    safe = np.where(positive, values, 1.0)
    keys = np.ceil(np.log(safe) / _LN2 * _MULTIPLIER).astype(np.int64) + _BUCKET_OFFSET
    return np.where(positive, keys, ZERO_BUCKET)


def bucket_values(buckets: np.ndarray) -> np.ndarray:
    """The representative value of each bucket id (0 for the zero bucket)."""
    keys = buckets.astype(np.float64) - _BUCKET_OFFSET
    gamma = MAPPING.gamma
    # LogarithmicMapping.value(key) = 2 ** (key / multiplier) * 2 / (1 + gamma)
    values = np.power(2.0, keys / _MULTIPLIER) * (2.0 / (1.0 + gamma))
    return np.where(buckets == ZERO_BUCKET, 0.0, values)


def _check_mapping() -> None:
    """Fail at import, not with wrong quantiles, if the library's mapping changes."""
    for value in (MIN_TRACKED * 1.5, 1e-3, 0.7, 1.0, 3.3, 1234.5, 1e9):
        got = int(buckets_of(np.array([value]))[0])
        if got != bucket_of(value) or not math.isclose(
            float(bucket_values(np.array([got]))[0]), MAPPING.value(_key(value)), rel_tol=1e-12
        ):
            raise RuntimeError(f"ddsketch's LogarithmicMapping changed: key of {value} differs")


_check_mapping()


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
