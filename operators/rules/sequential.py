"""The canary rule's test: is the canary worse than its baseline, checked at every emission?

A canary rule re-reads its verdict every time a window emits, so the test must stay valid
under continuous monitoring. This is an anytime-valid sequential test on the two sides'
cumulative totals (the flow has aggregates, not single observations):

* The *excess* of the canary over what its baseline allows is
  D = s · (μ_canary − f · μ_baseline) − a, with s = +1 when `worse: higher` (−1 for
  `lower`), f = 1 + relative margin (1 − margin for `lower`) and a the absolute margin.
  The canary is worse iff D > 0; the null "not worse" is the composite D ≤ 0.
* Its estimate D̂ from the totals has variance V = σ²_c/n_c + f²·σ²_b/n_b (plug-in
  variances; for proportions p̃(1 − p̃) with p̃ = (k + ½)/(n + 1), so that 0 of n is not
  certainty). D̂/√V · √t, with t = n_c + n_b, is asymptotically a Brownian motion in t with
  drift ≤ 0 under the null (for a stable traffic split between the two sides).
* The evidence is the one-sided normal-mixture e-value of
  :mod:`operators.rules.confidence_sequences`: `worse` when it reaches 1/α, which is when
  the anytime-valid lower confidence bound of D passes 0. P(ever `worse` | D ≤ 0) ≤ α,
  however many looks, for ever (asymptotically: the CLT stands in for normality, hence a
  minimum sample per side). `not_worse` is the mirror statement (the upper bound is below
  0: the canary is shown to be within the margin), each at level α.
* Evidence accumulates from the test's origin (the first totals, or the totals at the last
  `restart`, for a caller that keeps a horizon), not window by window: the caller passes
  the cumulative totals of each side at every look, non-decreasing.

Sparse data has its own outcome: a side with fewer than `min_samples` (or no data, e.g. a
canary whose baseline has not reported) is `inconclusive`, never `worse`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

from operators.rules.confidence_sequences import boundary, log_e_value, mixture_rho


class Direction(StrEnum):
    """Which way is worse for the metric: thumbs-down and latency `higher`, accuracy `lower`."""

    HIGHER = "higher"
    LOWER = "lower"


class MetricKind(StrEnum):
    """Proportions (accuracy, error, thumbs-down, CTR, conversion) or means (reward,
    rating, latency): they differ only in how the variance is estimated."""

    PROPORTION = "proportion"
    MEAN = "mean"


class Outcome(StrEnum):
    WORSE = "worse"  # the canary is worse than the baseline by more than the margin
    NOT_WORSE = "not_worse"  # shown to be within the margin
    UNDECIDED = "undecided"  # keep watching
    INCONCLUSIVE = "inconclusive"  # no data or below the minimum sample on a side


@dataclass(frozen=True, slots=True)
class Totals:
    """One side's cumulative totals: count, sum and sum of squares of its observations."""

    n: int
    total: float = 0.0
    total_squares: float = 0.0

    @classmethod
    def proportion(cls, n: int, successes: int) -> Totals:
        """n trials with `successes` ones (a 0/1 value is its own square)."""
        if not 0 <= successes <= n:
            raise ValueError(f"proportion totals: successes {successes} not within 0..{n}")
        return cls(n, float(successes), float(successes))

    def since(self, origin: Totals) -> Totals:
        return Totals(
            self.n - origin.n, self.total - origin.total, self.total_squares - origin.total_squares
        )


_ZERO = Totals(0)


@dataclass(frozen=True, slots=True)
class CanaryEvidence:
    """The test's state between looks: plain, small and picklable (it sits in a snapshot)."""

    canary_origin: Totals = _ZERO
    baseline_origin: Totals = _ZERO
    canary_last: Totals = _ZERO
    baseline_last: Totals = _ZERO
    looks: int = 0

    def restart(self) -> CanaryEvidence:
        """Count evidence from the last totals on (a caller's horizon, a new canary)."""
        return CanaryEvidence(
            self.canary_last, self.baseline_last, self.canary_last, self.baseline_last
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """One look's outcome with what a `Transition` needs: `value` (the canary's metric)
    against `threshold` (what the baseline allows), both sample sizes and a `reason`."""

    outcome: Outcome
    canary_samples: int
    baseline_samples: int
    value: float | None  # the canary's metric since the origin
    baseline_value: float | None
    threshold: float | None  # f · baseline ± a: the value the canary must cross to be worse
    estimate: float | None  # D̂: the canary's excess over the threshold
    lower: float | None  # anytime-valid confidence bounds of the excess D (level α each)
    upper: float | None
    log_e_value: float | None  # evidence for `worse`; it fires at log(1/α)
    p_value: float | None  # anytime-valid p-value for `worse`: min(1, 1/e)
    reason: str


@dataclass(frozen=True, slots=True)
class CanaryTest:
    """The parameters of one canary rule's test (the caller's, from the rule's config).

    `relative_margin: 0.1` with `worse: higher` means worse than baseline × 1.1 (with
    `lower`, below baseline × 0.9); `absolute_margin` adds a fixed amount in the metric's
    units. `min_samples` applies to each side. `tightest_at` is the total number of
    observations (both sides) at which the boundary is tuned to be tightest: near the
    sample a fixed-horizon test would need (see docs/canary-test.md)."""

    kind: MetricKind
    direction: Direction = Direction.HIGHER
    alpha: float = 0.05
    relative_margin: float = 0.0
    absolute_margin: float = 0.0
    min_samples: int = 100
    tightest_at: int = 20_000

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha: {self.alpha} is not within (0, 0.5)")
        if not (math.isfinite(self.relative_margin) and self.relative_margin >= 0.0):
            raise ValueError(f"margin: {self.relative_margin} is not a finite number >= 0")
        if self.direction is Direction.LOWER and self.relative_margin >= 1.0:
            raise ValueError(f"margin: {self.relative_margin} must be below 1 with worse: lower")
        if not (math.isfinite(self.absolute_margin) and self.absolute_margin >= 0.0):
            raise ValueError(f"absolute_margin: {self.absolute_margin} is not a finite number >= 0")
        if self.min_samples < 2:
            raise ValueError(f"min_samples: {self.min_samples} is below 2")
        if self.tightest_at < 1:
            raise ValueError(f"tightest_at: {self.tightest_at} is below 1")

    @property
    def sign(self) -> float:
        return 1.0 if self.direction is Direction.HIGHER else -1.0

    @property
    def factor(self) -> float:
        """f: the baseline multiplier the canary is compared against."""
        return 1.0 + self.sign * self.relative_margin

    @property
    def rho(self) -> float:
        return mixture_rho(self.alpha, float(self.tightest_at))

    def start(self) -> CanaryEvidence:
        return CanaryEvidence()

    def look(
        self, evidence: CanaryEvidence, canary: Totals, baseline: Totals
    ) -> tuple[CanaryEvidence, Verdict]:
        """Both sides' cumulative totals now → the new evidence and this look's verdict."""
        _check_cumulative("canary", evidence.canary_last, canary, self.kind)
        _check_cumulative("baseline", evidence.baseline_last, baseline, self.kind)
        evidence = replace(
            evidence, canary_last=canary, baseline_last=baseline, looks=evidence.looks + 1
        )
        return evidence, self.verdict(
            canary.since(evidence.canary_origin), baseline.since(evidence.baseline_origin)
        )

    def verdict(self, canary: Totals, baseline: Totals) -> Verdict:
        """The verdict on the evidence since the origin (what `look` computes)."""
        n_c, n_b = canary.n, baseline.n
        short = [
            f"{side} has {'no data' if n == 0 else f'{n} samples'}"
            for side, n in (("canary", n_c), ("baseline", n_b))
            if n < self.min_samples
        ]
        if short:
            return self._inconclusive(
                canary, baseline, f"{' and '.join(short)} (needs {self.min_samples} each)"
            )
        estimate, std_error, log_e_up, log_e_down = self.evidence_arrays(
            n_c, canary.total, canary.total_squares, n_b, baseline.total, baseline.total_squares
        )
        if not float(std_error) > 0.0:
            return self._inconclusive(canary, baseline, "neither side varies (no spread to test)")
        d_hat, se = float(estimate), float(std_error)
        t = float(n_c + n_b)
        margin = boundary(t, self.rho, self.alpha) / math.sqrt(t) * se
        lower, upper = d_hat - margin, d_hat + margin
        log_e = float(log_e_up)
        if bool(self.worse(n_c, n_b, log_e)):
            outcome = Outcome.WORSE
        elif float(log_e_down) >= self.log_threshold:
            outcome = Outcome.NOT_WORSE
        else:
            outcome = Outcome.UNDECIDED
        value, base_value = canary.total / n_c, baseline.total / n_b
        threshold = self._threshold(base_value)
        return Verdict(
            outcome=outcome,
            canary_samples=n_c,
            baseline_samples=n_b,
            value=value,
            baseline_value=base_value,
            threshold=threshold,
            estimate=d_hat,
            lower=lower,
            upper=upper,
            log_e_value=log_e,
            p_value=min(1.0, math.exp(-log_e)),
            reason=(
                f"canary {value:.4g} (n={n_c}) vs baseline {base_value:.4g} (n={n_b}), "
                f"worse if {self.direction.value} than {threshold:.4g}: {outcome.value} "
                f"(excess {d_hat:+.4g}, {1 - self.alpha:.0%} anytime bounds "
                f"[{lower:+.4g}, {upper:+.4g}])"
            ),
        )

    @property
    def log_threshold(self) -> float:
        """The evidence needed: e ≥ 1/α."""
        return math.log(1.0 / self.alpha)

    def worse(
        self, canary_n: ArrayLike, baseline_n: ArrayLike, log_e_up: ArrayLike
    ) -> NDArray[np.bool_]:
        """The decision, vectorized like `evidence_arrays` (a simulation reads it per look)."""
        return np.asarray(
            (np.asarray(canary_n) >= self.min_samples)
            & (np.asarray(baseline_n) >= self.min_samples)
            & (np.asarray(log_e_up) >= self.log_threshold)
        )

    def evidence_arrays(
        self,
        canary_n: ArrayLike,
        canary_total: ArrayLike,
        canary_squares: ArrayLike,
        baseline_n: ArrayLike,
        baseline_total: ArrayLike,
        baseline_squares: ArrayLike,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Vectorized core (scalars from `verdict`, arrays from simulations): the excess
        estimate D̂, its standard error √V, and the log e-values for `worse` and for
        `not_worse`. Sides must have at least 2 observations."""
        n_c = np.asarray(canary_n, dtype=np.float64)
        n_b = np.asarray(baseline_n, dtype=np.float64)
        # A simulation's early looks have sides below 2 (nan here); `worse` ignores them.
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_c, var_c = self._moments(n_c, canary_total, canary_squares)
            mean_b, var_b = self._moments(n_b, baseline_total, baseline_squares)
            f = self.factor
            estimate = self.sign * (mean_c - f * mean_b) - self.absolute_margin
            std_error = np.sqrt(var_c / n_c + f * f * var_b / n_b)
            t = n_c + n_b
            s = np.where(std_error > 0.0, estimate / std_error, 0.0) * np.sqrt(t)
        return estimate, std_error, log_e_value(s, t, self.rho), log_e_value(-s, t, self.rho)

    def _moments(
        self, n: NDArray[np.float64], total: ArrayLike, squares: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        total_arr = np.asarray(total, dtype=np.float64)
        mean = total_arr / n
        if self.kind is MetricKind.PROPORTION:
            shrunk = (total_arr + 0.5) / (n + 1.0)
            return mean, shrunk * (1.0 - shrunk)
        squares_arr = np.asarray(squares, dtype=np.float64)
        variance = np.maximum((squares_arr - total_arr * mean) / (n - 1.0), 0.0)
        return mean, variance

    def _threshold(self, baseline_value: float) -> float:
        return self.factor * baseline_value + self.sign * self.absolute_margin

    def _inconclusive(self, canary: Totals, baseline: Totals, why: str) -> Verdict:
        value = canary.total / canary.n if canary.n else None
        base_value = baseline.total / baseline.n if baseline.n else None
        return Verdict(
            outcome=Outcome.INCONCLUSIVE,
            canary_samples=canary.n,
            baseline_samples=baseline.n,
            value=value,
            baseline_value=base_value,
            threshold=None if base_value is None else self._threshold(base_value),
            estimate=None,
            lower=None,
            upper=None,
            log_e_value=None,
            p_value=None,
            reason=f"inconclusive: {why}",
        )


def _check_cumulative(side: str, last: Totals, now: Totals, kind: MetricKind) -> None:
    """Totals are cumulative: a count that goes back is a caller's bug, named here."""
    if not all(math.isfinite(x) for x in (now.total, now.total_squares)):
        raise ValueError(f"{side} totals: not finite ({now})")
    if now.n < last.n:
        raise ValueError(f"{side} totals went back: n {now.n} after {last.n} (must be cumulative)")
    if kind is MetricKind.PROPORTION:
        if not 0.0 <= now.total <= now.n:
            raise ValueError(f"{side} totals: {now.total} successes not within 0..{now.n}")
        if now.total < last.total:
            raise ValueError(f"{side} totals went back: {now.total} successes after {last.total}")
