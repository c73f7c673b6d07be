"""The metric catalogue: every metric's definition lives here.

A window × dims cell accumulates additive *fields* (counts and sums; they merge by
addition across partitions, slices, windows and rollups). The published *metrics* are
derived from the fields when a row is emitted; ratios are null where their denominator
is 0. The README's metric reference is written from this module.

Event time: feedback fields use the feedback's `ts`, inference fields the inference's.

Exact sums: every summed value (reward, dwell seconds, report amount, confidence, ...) is
first rounded to a multiple of :data:`QUANTUM` (2^-20, about 1e-6). Float64 addition of
such numbers is exact while a cell's sum stays below 2^33 (about 8.6e9), hence independent
of the order of addition: the same events give bit-identical rows however they were
batched, ticked, partitioned or replayed after a crash. Squares of rewards (for the
standard deviation, which cancels badly) are summed as two exact parts: rounded to QUANTUM,
and the rest on a 2^-40 grid, so they carry no rounding of their own below |reward| < 90.
The contract bounds every summed value to +-1e9 (:mod:`operators.limits`), so fields stay
finite (squares <= 1e18); past 2^33 a cell's sums round as float64 does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from operators.contract import FEEDBACK_KINDS
from operators.field_entries import Entries, EntriesBuilder

# ---- additive fields of the main family (one vector per window × dims cell) ----------
FEEDBACK_FIELDS = (
    "feedback_count",  # distinct feedback events (after dedup by event_id)
    "unjoined_count",  # feedback that gave up waiting for its inference
    "labeled_count",
    "correct_count",  # label == prediction, compared as trimmed strings
    "thumbs_up",
    "thumbs_down",
    "rating_count",
    "rating_sum",
    "rating_high_count",  # ratings >= 4 (CSAT numerator)
    "reward_count",
    "reward_sum",
    "reward_sumsq",  # squares on the QUANTUM grid ...
    "reward_sumsq_residual",  # ... plus what that rounding left out, on a 2^-40 grid
    "clicks",  # click feedback with value true
    "conversions",  # conversion feedback with value true
    "dwell_count",
    "dwell_sum",
    "preference_count",
    "report_count",
    "report_amount_sum",
)
INFERENCE_FIELDS = (
    "inference_count",
    "confidence_count",
    "confidence_sum",
)
CSAT_THRESHOLD = 4.0
QUANTUM = 2.0**-20
RESIDUAL_QUANTUM = 2.0**-40


def quantized(values: np.ndarray) -> np.ndarray:
    """Values rounded to multiples of QUANTUM (half to even), so that their sums are exact."""
    return np.round(values / QUANTUM) * QUANTUM


def residual(values: np.ndarray, rounded: np.ndarray) -> np.ndarray:
    """What quantized() took off, on the RESIDUAL_QUANTUM grid: below 2^-21 each, so a sum
    of fewer than 2^34 of them stays exact."""
    return np.round((values - rounded) / RESIDUAL_QUANTUM) * RESIDUAL_QUANTUM


@dataclass(frozen=True)
class MainLayout:
    """Column positions of the main family's field vector (histogram bins last)."""

    confidence_bins: int

    @property
    def names(self) -> tuple[str, ...]:
        bins = tuple(f"confidence_bin_{i}" for i in range(self.confidence_bins))
        return FEEDBACK_FIELDS + INFERENCE_FIELDS + bins

    @property
    def width(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    @property
    def first_bin(self) -> int:
        return len(FEEDBACK_FIELDS) + len(INFERENCE_FIELDS)


# Fixed positions of the named fields (the bins follow them).
F = {name: i for i, name in enumerate(FEEDBACK_FIELDS + INFERENCE_FIELDS)}
I_FEEDBACK = F["feedback_count"]
I_UNJOINED = F["unjoined_count"]
I_LABELED = F["labeled_count"]
I_CORRECT = F["correct_count"]
I_THUMBS_UP = F["thumbs_up"]
I_THUMBS_DOWN = F["thumbs_down"]
I_RATING_COUNT = F["rating_count"]
I_RATING_SUM = F["rating_sum"]
I_RATING_HIGH = F["rating_high_count"]
I_REWARD_COUNT = F["reward_count"]
I_REWARD_SUM = F["reward_sum"]
I_REWARD_SUMSQ = F["reward_sumsq"]
I_REWARD_SUMSQ_RESIDUAL = F["reward_sumsq_residual"]
I_CLICKS = F["clicks"]
I_CONVERSIONS = F["conversions"]
I_DWELL_COUNT = F["dwell_count"]
I_DWELL_SUM = F["dwell_sum"]
I_PREFERENCE = F["preference_count"]
I_REPORT_COUNT = F["report_count"]
I_REPORT_AMOUNT = F["report_amount_sum"]
I_INFERENCE = F["inference_count"]
I_CONFIDENCE_COUNT = F["confidence_count"]
I_CONFIDENCE_SUM = F["confidence_sum"]


def as_label(value: Any) -> str | None:
    """Labels and predictions compare as trimmed strings (1 and 1.0 are the same): a
    label is correct when ``as_label(label) == as_label(prediction)``. The partition stage
    applies this rule inline on its hot path (strings trimmed without the call)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


KIND_CODES = {kind: code for code, kind in enumerate(FEEDBACK_KINDS)}
_LABEL, _THUMBS, _RATING, _REWARD, _CLICK, _CONVERSION, _DWELL, _PREFERENCE, _REPORT = range(9)


_NUMERIC = np.zeros(len(KIND_CODES), np.bool_)  # kinds whose value is the number (bools 1/0)
_NUMERIC[[_THUMBS, _RATING, _REWARD, _CLICK, _CONVERSION, _DWELL]] = True
_SUMMED = _NUMERIC.copy()  # kinds whose number the sums count: a report's amount too
_SUMMED[_REPORT] = True


def value_numbers(codes: NDArray[np.int64], values: list[Any]) -> NDArray[np.float64]:
    """The number each feedback value carries, NaN where it carries none: the value of a
    numeric kind (a boolean one's as 1 or 0), a numeric label, a report's amount. In
    bulk: one conversion for the numeric kinds, a Python step only for labels and reports.
    Finite for every valid event: the contract bounds these values to +-1e9
    (:mod:`operators.limits`)."""
    at = np.flatnonzero(_NUMERIC[codes])
    if len(at) == len(values):
        return np.fromiter(values, np.float64, len(values))
    out = np.full(len(values), np.nan)
    if len(at):
        out[at] = np.fromiter(map(values.__getitem__, at.tolist()), np.float64, len(at))
    for j in np.flatnonzero(codes == _LABEL).tolist():
        if type(label := values[j]) is not str:
            out[j] = float(label)
    for j in np.flatnonzero(codes == _REPORT).tolist():
        if (amount := values[j].get("amount")) is not None:
            out[j] = float(amount)
    return out


def feedback_numbers(codes: NDArray[np.int64], numbers: NDArray[np.float64]) -> NDArray[np.float64]:
    """The number each feedback adds to its kind's sums, rounded to QUANTUM: its
    :func:`value_numbers` for the numeric and boolean kinds, a report's amount (0 when
    none), 0 for the rest (a label counts by its class, not by its number)."""
    summed = _SUMMED[codes] & ~np.isnan(numbers)
    return quantized(np.where(summed, numbers, 0.0)) + 0.0  # + 0.0: no -0.0 from rounding


def feedback_fields(
    kinds: np.ndarray, numbers: np.ndarray, correct: np.ndarray, unjoined: np.ndarray, width: int
) -> np.ndarray:
    """Field vectors [n, width] of n counted feedback events (:func:`feedback_entries`)."""
    return feedback_entries(kinds, numbers, correct, unjoined, width).dense()


def feedback_entries(
    kinds: np.ndarray, numbers: np.ndarray, correct: np.ndarray, unjoined: np.ndarray, width: int
) -> Entries:
    """The field vectors of n counted feedback events, as the entries that can be other
    than +0.0 (every other entry is +0.0).

    `kinds`: KIND_CODES; `numbers`: feedback_numbers(); `correct`: label == prediction.
    Every event counts in feedback_count (and unjoined_count when it gave up waiting),
    and in its kind's fields.
    """
    n = len(kinds)
    out = EntriesBuilder(n, width)
    out.put(np.arange(n), I_FEEDBACK)
    out.put(np.flatnonzero(unjoined), I_UNJOINED)
    # Each kind's rows, in order: one stable sort instead of a scan per kind.
    by_kind = np.argsort(kinds.astype(np.int8), kind="stable")  # a radix sort
    bounds = np.searchsorted(kinds[by_kind], np.arange(len(KIND_CODES) + 1)).tolist()
    of = {code: by_kind[bounds[code] : bounds[code + 1]] for code in range(len(KIND_CODES))}
    rounded = quantized(numbers)
    label = of[_LABEL]
    out.put(label, I_LABELED)
    out.put(label[correct[label]], I_CORRECT)
    thumbs = of[_THUMBS]
    out.put(thumbs[numbers[thumbs] > 0], I_THUMBS_UP)  # the value itself: 1 or 0
    out.put(thumbs[numbers[thumbs] <= 0], I_THUMBS_DOWN)
    rating = of[_RATING]
    ratings = rounded[rating]
    out.put(rating, I_RATING_COUNT)
    out.put(rating, I_RATING_SUM, ratings)
    out.put(rating[ratings >= CSAT_THRESHOLD], I_RATING_HIGH)
    reward = of[_REWARD]
    rewards = rounded[reward]
    out.put(reward, I_REWARD_COUNT)
    out.put(reward, I_REWARD_SUM, rewards)
    squares = rewards * rewards  # exact while |reward| < 90: k^2 * 2^-40 fits 53 bits
    squares_rounded = quantized(squares)
    out.put(reward, I_REWARD_SUMSQ, squares_rounded)
    out.put(reward, I_REWARD_SUMSQ_RESIDUAL, residual(squares, squares_rounded))
    for kind, field in ((_CLICK, I_CLICKS), (_CONVERSION, I_CONVERSIONS)):
        rows = of[kind]
        out.put(rows[rounded[rows] > 0], field)
    dwell = of[_DWELL]
    out.put(dwell, I_DWELL_COUNT)
    out.put(dwell, I_DWELL_SUM, rounded[dwell])
    out.put(of[_PREFERENCE], I_PREFERENCE)
    report = of[_REPORT]
    out.put(report, I_REPORT_COUNT)
    out.put(report, I_REPORT_AMOUNT, rounded[report])
    return out.build()


def inference_fields(confidence: np.ndarray, width: int, bins: int) -> np.ndarray:
    """Field vectors [n, width] of n counted inferences (:func:`inference_entries`)."""
    return inference_entries(confidence, width, bins).dense()


def inference_entries(confidence: np.ndarray, width: int, bins: int) -> Entries:
    """The field vectors of n counted inferences (`confidence` NaN when absent, else in
    [0, 1]), as the entries that can be other than +0.0: the count, and with a confidence its
    count, sum and histogram bin."""
    out = EntriesBuilder(len(confidence), width)
    out.put(np.arange(len(confidence)), I_INFERENCE)
    rows = np.flatnonzero(~np.isnan(confidence))
    present = confidence[rows]
    out.put(rows, I_CONFIDENCE_COUNT)
    out.put(rows, I_CONFIDENCE_SUM, quantized(present))
    first_bin = width - bins
    out.put_columns(rows, first_bin + np.minimum((present * bins).astype(np.int64), bins - 1))
    return out.build()


# ---- published metrics, derived per emitted row ---------------------------------------


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (published as null); every family's ratios use it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _sample_stddev(n: np.ndarray, total: np.ndarray, sumsq: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_n = np.where(n > 1, n, 2.0)
        # The textbook formula cancels when the spread is small against the mean; that costs
        # relative precision of about 1e-16 * mean^2 / variance, not the sums' rounding.
        variance = (sumsq - total * total / safe_n) / (safe_n - 1)
        return np.where(n > 1, np.sqrt(np.maximum(variance, 0.0)), np.nan)


Derivation = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _col(name: str) -> Derivation:
    index = F[name]
    return lambda fields, _seconds: fields[:, index]


@dataclass(frozen=True)
class Ratio:
    """A ratio metric as fields: sum(numerator) / sum(denominator), or 1 minus it.

    The one definition of a ratio: its derivation (below, in METRICS) and what rules read
    of it (a threshold's sample size is its denominator; a canary's test reads a
    proportion as trials and successes, a mean as count, sum and sum of squares).
    """

    numerator: tuple[str, ...]
    denominator: tuple[str, ...]
    kind: str  # "proportion" (numerator counts successes among the trials) or "mean"
    complement: bool = False  # 1 - numerator / denominator (error_rate)
    squares: tuple[str, ...] = ()  # a mean's sum of squares (its parts), when summed

    def __call__(self, fields: np.ndarray, _seconds: np.ndarray) -> np.ndarray:
        num, den = _summed(fields, self.numerator), _summed(fields, self.denominator)
        value = ratio(num, den)
        return 1.0 - value if self.complement else value


def _summed(fields: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    if len(names) == 1:
        return fields[:, F[names[0]]]
    return fields[:, [F[n] for n in names]].sum(axis=1)


def _proportion(num: str, *den: str, complement: bool = False) -> Ratio:
    return Ratio((num,), den, "proportion", complement)


def _mean(total: str, count: str, *squares: str) -> Ratio:
    return Ratio((total,), (count,), "mean", squares=squares)


# Every ratio metric. The complement's successes are denominator - numerator.
RATIOS: dict[str, Ratio] = {
    "accuracy": _proportion("correct_count", "labeled_count"),
    "error_rate": _proportion("correct_count", "labeled_count", complement=True),
    "thumbs_down_rate": _proportion("thumbs_down", "thumbs_up", "thumbs_down"),
    "rating_mean": _mean("rating_sum", "rating_count"),  # no sum of squares kept
    "csat": _proportion("rating_high_count", "rating_count"),
    "reward_mean": _mean("reward_sum", "reward_count", "reward_sumsq", "reward_sumsq_residual"),
    "ctr": _proportion("clicks", "inference_count"),
    "conversion_rate": _proportion("conversions", "inference_count"),
    "dwell_mean": _mean("dwell_sum", "dwell_count"),
    "confidence_mean": _mean("confidence_sum", "confidence_count"),
}


def _per_second(name: str) -> Derivation:
    i = F[name]
    return lambda fields, seconds: fields[:, i] / seconds


# Published metric -> (ClickHouse type, derivation from the field matrix and window seconds).
# Order is the column order of the `metrics` table.
METRICS: dict[str, tuple[str, Derivation]] = {
    "feedback_count": ("UInt64", _col("feedback_count")),
    "unjoined_count": ("UInt64", _col("unjoined_count")),
    "labeled_count": ("UInt64", _col("labeled_count")),
    "correct_count": ("UInt64", _col("correct_count")),
    "accuracy": ("Nullable(Float64)", RATIOS["accuracy"]),
    "error_rate": ("Nullable(Float64)", RATIOS["error_rate"]),
    "thumbs_up": ("UInt64", _col("thumbs_up")),
    "thumbs_down": ("UInt64", _col("thumbs_down")),
    "thumbs_down_rate": ("Nullable(Float64)", RATIOS["thumbs_down_rate"]),
    "rating_count": ("UInt64", _col("rating_count")),
    "rating_mean": ("Nullable(Float64)", RATIOS["rating_mean"]),
    "csat": ("Nullable(Float64)", RATIOS["csat"]),
    "reward_count": ("UInt64", _col("reward_count")),
    "reward_sum": ("Float64", _col("reward_sum")),
    "reward_mean": ("Nullable(Float64)", RATIOS["reward_mean"]),
    "reward_stddev": (
        "Nullable(Float64)",
        lambda f, s: _sample_stddev(
            f[:, I_REWARD_COUNT],
            f[:, I_REWARD_SUM],
            f[:, I_REWARD_SUMSQ] + f[:, I_REWARD_SUMSQ_RESIDUAL],
        ),
    ),
    "impressions": ("UInt64", _col("inference_count")),
    "clicks": ("UInt64", _col("clicks")),
    "ctr": ("Nullable(Float64)", RATIOS["ctr"]),
    "conversions": ("UInt64", _col("conversions")),
    "conversion_rate": ("Nullable(Float64)", RATIOS["conversion_rate"]),
    "dwell_mean": ("Nullable(Float64)", RATIOS["dwell_mean"]),
    "preference_count": ("UInt64", _col("preference_count")),
    "report_count": ("UInt64", _col("report_count")),
    "report_amount_sum": ("Float64", _col("report_amount_sum")),
    "inference_count": ("UInt64", _col("inference_count")),
    "confidence_mean": ("Nullable(Float64)", RATIOS["confidence_mean"]),
    "feedback_per_s": ("Float64", _per_second("feedback_count")),
    "inference_per_s": ("Float64", _per_second("inference_count")),
    "errors_per_s": ("Float64", lambda f, s: (f[:, I_LABELED] - f[:, I_CORRECT]) / s),
}
# Metrics computed elsewhere than from the main field vector.
LATENCY_METRICS = ("latency_p50", "latency_p95", "latency_p99")  # operators.sketch
HISTOGRAM_METRIC = "confidence_hist"  # Array(UInt64), bins of equal width over [0, 1]
MACRO_F1 = "macro_f1"  # mean per-class F1 over the classes seen (operators.families)

# The events a metric is measured on (its own denominator), as fields summed: what a
# rule's `min_samples` counts. A ratio's is its denominator; a count's, the count; a sum's
# or a rate per second's, the events summed or counted.
SAMPLE_FIELDS: dict[str, tuple[str, ...]] = {
    **{name: r.denominator for name, r in RATIOS.items()},
    **{name: (name,) for name in FEEDBACK_FIELDS + INFERENCE_FIELDS if name in METRICS},
    "reward_sum": ("reward_count",),
    "reward_stddev": ("reward_count",),
    "impressions": ("inference_count",),
    "report_amount_sum": ("report_count",),
    "feedback_per_s": ("feedback_count",),
    "inference_per_s": ("inference_count",),
    "errors_per_s": ("labeled_count",),
    MACRO_F1: ("labeled_count",),
    # Latency is read from the inferences: their count bounds the observations (those
    # without a latency are not counted apart).
    **{name: ("inference_count",) for name in LATENCY_METRICS},
}
# Column order of the `metrics` table after its key columns (migrations 0001, 0002).
_names = list(METRICS)
METRIC_COLUMNS = (
    *_names[: _names.index("error_rate") + 1],
    MACRO_F1,
    *_names[_names.index("error_rate") + 1 :],
    *LATENCY_METRICS,
    HISTOGRAM_METRIC,
)


def derive(fields: np.ndarray, window_seconds: np.ndarray | float) -> dict[str, np.ndarray]:
    """Every published metric for a matrix of field vectors (one row per cell)."""
    seconds = np.asarray(window_seconds, dtype=np.float64)
    return {name: derivation(fields, seconds) for name, (_, derivation) in METRICS.items()}
