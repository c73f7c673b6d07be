"""The bounds and reserved values of event contract v1, written once for both decoders.

Numbers: every number the aggregates sum (reward, dwell seconds, report amount) or
bucket (latency_ms) has |value| <= MAX_MAGNITUDE = 1e9. Sums are rounded to 2^-20 and
squares of rewards are summed (:mod:`operators.metrics`), so a bound keeps every field
finite: 1e9 squared is 1e18, and 2^53 events of it still sum to ~1e34, far below the
float64 limit (~1.8e308). One value below 1e9 also stays within the 2^33 under which a
cell's sum on the 2^-20 grid is exact, and a latency of 1e9 ms (11.6 days) is bucket
+1037 of the sketch, far inside its key space. Labels and predictions are only compared
and stored: any finite float, and integers within int64 (bigger ones would not convert
to a float or an Arrow column without loss or error). Ratings (1-5) and confidence
(0-1) have their own ranges in the contract. Tiny values (5e-324, -0.0) are valid.

Dims: `"*"` marks a rollup cell and `"unknown"` the dims of unjoined feedback, so
neither may be a dim value (`model_id`, `model_version`, `deployment`, `segment`,
`endpoint`, `tenant` and the configured extra dims): it would be counted in the rollup
or unjoined cell it names.
"""

from __future__ import annotations

from operators.cells import ALL, BASE_DIMS, UNKNOWN

MAX_MAGNITUDE = 1_000_000_000  # |reward|, |report amount|, dwell seconds, latency_ms
MAX_MAGNITUDE_TEXT = "1e9"  # as the contract's docs and reasons write it
assert float(MAX_MAGNITUDE_TEXT) == MAX_MAGNITUDE
MAX_TEXT = 65_536  # characters of any other string (a label, a prediction)
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
RESERVED_DIM_VALUES = frozenset((ALL, UNKNOWN))
DIMS = BASE_DIMS  # the dims an event names itself (extra dims come from attributes)


def reserved_reason(value: str) -> str:
    """The contract's wording for a reserved dim value."""
    meaning = "the rollup marker" if value == ALL else "the dim of unjoined feedback"
    return f'"{value}" is reserved ({meaning})'
