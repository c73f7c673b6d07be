"""Drift of a histogram against a reference: PSI and a chi-square test, and their verdict.

A drift rule compares the recent window's `confidence_hist` (counts in equal bins over
[0, 1]) of one cell with a reference histogram of the same cell (the trailing final
windows or a fixed period: :mod:`operators.rules.drift_reference`). Two checks, each
with a threshold:

* **PSI** (population stability index), a *magnitude*: ``Σ (p_i − q_i) · ln(p_i / q_i)``
  over the bins, p the recent proportions, q the reference's. A bin empty on one side
  would make it infinite; as is usual (e.g. the widely copied `population-stability-index`
  code and Evidently's PSI test) a zero proportion is replaced by ``epsilon`` (1e-4) before
  the logarithm, the other proportions are left as they are. The rule of thumb (Siddiqi,
  *Credit Risk Scorecards*, 2006; Yurdakul, *Statistical properties of the population
  stability index*, 2018): below 0.1 no real change, 0.1–0.2 (0.25 for some) moderate,
  above a significant shift; default threshold 0.2.
* **Chi-square test of homogeneity** on the 2 × bins table (recent, reference), a
  *significance*: bins with zero total are dropped (they carry no information and would
  divide by zero), ``dof = bins kept − 1``, no continuity correction. The statistic is
  the textbook Pearson sum computed with numpy (it is three lines, and this runs per cell
  at every emission); the p-value is scipy's chi-square survival function
  (`scipy.special.chdtrc`, what `scipy.stats.chi2.sf` calls). The tests check both
  against `scipy.stats.chi2_contingency(correction=False)`. Default level 0.01.

A proportion metric (accuracy, thumbs-down rate, CTR) has a distribution in a window
too: the Bernoulli one of its numerator and denominator, a 2-bin histogram
(:func:`proportion_counts`), so the same checks and reference apply; the chi-square test
is then the two-proportion test. PSI on two bins is small (0.9 → 0.8 is 0.08): for a
proportion use the test alone (``psi_threshold=None``) or a lower PSI threshold.

Each check is a fixed-sample comparison of one window: evaluated at every window, the
chi-square test alone rejects a stationary stream in about `alpha` of the windows (the
tests measure it). The combined verdict therefore asks for both by default (``require=
"both"``): a shift that is significant *and* material (at large counts the test flags
differences too small to matter; at small counts PSI is noisy). Fewer than `min_samples`
counts on either side gives `inconclusive`, never `drifted`.

scipy is imported when the first test runs (`scipy.special` takes ~0.6 s to import
here; the flow should not pay it when no drift rule is configured).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np

PSI_EPSILON = 1e-4  # a zero proportion becomes this before the logarithm (usual practice)
PSI_THRESHOLD = 0.2  # "significant shift" by the common rule of thumb
TEST_ALPHA = 0.01
MIN_SAMPLES = 200  # counts on each side below which a check is inconclusive


class DriftVerdict(StrEnum):
    DRIFTED = "drifted"
    STABLE = "stable"
    INCONCLUSIVE = "inconclusive"  # too few samples, no reference yet, no data


# Verdict codes of HistogramChecks.verdicts (int8): VERDICTS[code].
STABLE, DRIFTED, INCONCLUSIVE = 0, 1, 2
VERDICTS = (DriftVerdict.STABLE, DriftVerdict.DRIFTED, DriftVerdict.INCONCLUSIVE)
VERDICT_CODES = {verdict: code for code, verdict in enumerate(VERDICTS)}


@dataclass(frozen=True, slots=True)
class DriftResult:
    """The outcome of one drift check, with what a `Transition` and a `retrain` action's
    evidence need: the statistic against its threshold, both sample sizes and a reason."""

    check: str  # psi | chi2 | histogram (both) | page_hinkley | adwin
    verdict: DriftVerdict
    statistic: float | None  # PSI, chi-square, or the series value
    threshold: float | None  # the PSI threshold, the test's alpha, the detector's lambda/delta
    samples: int  # recent side: histogram counts, or points seen by a detector
    baseline_samples: int | None  # reference side (None for a series detector)
    reason: str
    p_value: float | None = None
    details: dict[str, float] = field(default_factory=dict)  # more numbers for the evidence
    parts: tuple[DriftResult, ...] = ()  # the checks a combined verdict was made of

    @property
    def drifted(self) -> bool:
        return self.verdict is DriftVerdict.DRIFTED

    def transition_fields(self) -> dict[str, Any]:
        """The fields of :class:`operators.rules.alerts.Transition` this result fills."""
        return {
            "value": self.statistic,
            "threshold": self.threshold,
            "samples": self.samples,
            "baseline_samples": self.baseline_samples,
            "reason": self.reason,
        }

    def evidence(self) -> dict[str, Any]:
        """Plain JSON-able data for a `retrain` :class:`~operators.rules.alerts.Action`."""
        out: dict[str, Any] = {
            "check": self.check,
            "verdict": self.verdict.value,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "samples": self.samples,
            "baseline_samples": self.baseline_samples,
            "reason": self.reason,
        }
        if self.p_value is not None:
            out["p_value"] = self.p_value
        out.update(self.details)
        if self.parts:
            out["parts"] = [part.evidence() for part in self.parts]
        return out


def _counts(name: str, values: Sequence[int] | np.ndarray) -> np.ndarray:
    counts = np.asarray(values, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d histogram, got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"{name} must hold finite counts ≥ 0")
    return counts


def _pair(
    recent: Sequence[int] | np.ndarray, reference: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r, q = _counts("recent", recent), _counts("reference", reference)
    if r.size != q.size:
        raise ValueError(f"recent has {r.size} bins, the reference {q.size}")
    return r, q


def psi(
    recent: Sequence[int] | np.ndarray,
    reference: Sequence[int] | np.ndarray,
    epsilon: float = PSI_EPSILON,
) -> float:
    """PSI of two histograms of counts over the same bins (zero proportions → epsilon)."""
    r, q = _pair(recent, reference)
    if r.sum() <= 0 or q.sum() <= 0:
        raise ValueError("PSI needs counts on both sides")
    return float(psi_rows(r[None, :], q[None, :], epsilon)[0])


def psi_rows(recent: np.ndarray, reference: np.ndarray, epsilon: float = PSI_EPSILON) -> np.ndarray:
    """PSI of each row of `recent` against the same row of `reference` (float64 counts
    [cells, bins]): the one computation of PSI (NaN where a side has no counts)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = recent / recent.sum(axis=1, keepdims=True)
        b = reference / reference.sum(axis=1, keepdims=True)
        p = np.where(p > 0, p, epsilon)
        b = np.where(b > 0, b, epsilon)
        return np.asarray(np.sum((p - b) * np.log(p / b), axis=1))


def chi2_homogeneity(
    recent: Sequence[int] | np.ndarray, reference: Sequence[int] | np.ndarray
) -> tuple[float, int, float]:
    """(statistic, dof, p-value) of Pearson's test that both histograms come from one
    distribution; bins with zero total are dropped, one bin left gives (0, 0, 1)."""
    r, q = _pair(recent, reference)
    statistic, dof, p_value = chi2_rows(r[None, :], q[None, :])
    return float(statistic[0]), int(dof[0]), float(p_value[0])


def chi2_rows(
    recent: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`chi2_homogeneity` of each row pair (float64 counts [cells, bins])."""
    statistic, dof, valid = chi2_statistics(recent, reference)
    return statistic, dof, chi2_p_values(statistic, dof, valid)


def chi2_statistics(
    recent: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test's (statistic, dof, testable) per row pair: the one computation of the
    statistic. Per row, the 2 × bins table of the bins with a count on either side;
    expected counts from its margins; statistic 0 and not testable when fewer than 2 bins
    or a side without counts is left."""
    keep = (recent + reference) > 0
    dof = keep.sum(axis=1) - 1
    n = recent.sum(axis=1, keepdims=True)
    m = reference.sum(axis=1, keepdims=True)
    total = n + m
    column = recent + reference
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_r = n * column / total
        expected_q = m * column / total
        terms = (recent - expected_r) ** 2 / expected_r + (reference - expected_q) ** 2 / expected_q
    statistic = np.where(keep, terms, 0.0).sum(axis=1)
    valid = (dof >= 1) & (n[:, 0] > 0) & (m[:, 0] > 0)
    return np.where(valid, statistic, 0.0), np.maximum(dof, 0), valid


def chi2_p_values(statistic: np.ndarray, dof: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The p-values of :func:`chi2_statistics` (1 where not testable)."""
    p_value = np.ones(len(dof))
    if valid.any():
        from scipy.special import chdtrc  # lazily: see the module docstring

        p_value[valid] = chdtrc(dof[valid], statistic[valid])
    return p_value


def proportion_counts(successes: float, trials: float) -> tuple[int, int]:
    """A proportion metric (accuracy, thumbs-down rate, CTR, ...) as a 2-bin histogram
    (successes, failures) of its own numerator and denominator: its distribution in a
    window, which the same checks and the same reference compare."""
    if not 0 <= successes <= trials or not math.isfinite(trials):
        raise ValueError(f"a proportion needs 0 ≤ successes ≤ trials, got {successes}/{trials}")
    row = proportion_rows(np.array([successes], dtype=np.float64), np.array([trials]))[0]
    return int(row[0]), int(row[1])


def proportion_rows(successes: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """:func:`proportion_counts` of many cells (0 ≤ successes ≤ trials): int64
    [cells, 2] of (successes, failures), each count truncated to an integer."""
    hits = successes.astype(np.int64)
    return np.stack((hits, trials.astype(np.int64) - hits), axis=1)


@dataclass(frozen=True, slots=True)
class HistogramDrift:
    """The histogram checks of a drift rule and their thresholds (a rule's settings)."""

    psi_threshold: float | None = PSI_THRESHOLD  # None: PSI not checked
    alpha: float | None = TEST_ALPHA  # None: chi-square not checked
    min_samples: int = MIN_SAMPLES
    epsilon: float = PSI_EPSILON
    require: Literal["both", "either"] = "both"  # which checks must flag a drift

    def __post_init__(self) -> None:
        if self.psi_threshold is None and self.alpha is None:
            raise ValueError("HistogramDrift needs psi_threshold or alpha")
        if self.psi_threshold is not None and not self.psi_threshold > 0:
            raise ValueError(f"psi_threshold must be > 0, got {self.psi_threshold}")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be ≥ 1, got {self.min_samples}")
        if not 0 < self.epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {self.epsilon}")
        if self.require not in ("both", "either"):
            raise ValueError(f"require must be both or either, got {self.require!r}")

    def check(
        self, recent: Sequence[int] | np.ndarray, reference: Sequence[int] | np.ndarray | None
    ) -> DriftResult:
        """The verdict on the recent histogram against the reference (None: no reference
        yet, inconclusive), with each configured check as a part."""
        r = _counts("recent", recent)
        if reference is not None:
            r, q = _pair(recent, reference)
            return self.check_rows(r[None, :], [q]).result(0)
        return self.check_rows(r[None, :], [None]).result(0)

    def check_rows(
        self, recent: np.ndarray, references: Sequence[Sequence[int] | np.ndarray | None]
    ) -> HistogramChecks:
        """:meth:`check` of many cells at once: `recent` counts [cells, bins], one
        reference (or None) per cell. The verdicts are arrays; each cell's
        :class:`DriftResult` is built only when asked (:meth:`HistogramChecks.result`)."""
        r = np.asarray(recent, dtype=np.float64).reshape(len(references), -1)
        has = np.array([ref is not None for ref in references], dtype=bool)
        q = np.zeros_like(r)
        if has.any():
            q[has] = np.array([ref for ref in references if ref is not None], dtype=np.float64)
        return HistogramChecks(self, r, q, has)

    def check_counts(
        self, recent: np.ndarray, reference: np.ndarray, has: np.ndarray
    ) -> HistogramChecks:
        """:meth:`check_rows` with the references as one array [cells, bins] (float64;
        rows where `has` is False are ignored): what a rule's reference table gives."""
        r = np.asarray(recent, dtype=np.float64).reshape(len(has), -1)
        q = np.where(has[:, None], reference, 0.0)
        return HistogramChecks(self, r, q, has)

    def psi_check(
        self, recent: Sequence[int] | np.ndarray, reference: Sequence[int] | np.ndarray
    ) -> DriftResult:
        r, q = _pair(recent, reference)
        return self.check_rows(r[None, :], [q]).psi_result(0)

    def chi2_check(
        self, recent: Sequence[int] | np.ndarray, reference: Sequence[int] | np.ndarray
    ) -> DriftResult:
        r, q = _pair(recent, reference)
        return self.check_rows(r[None, :], [q]).chi2_result(0)


class HistogramChecks:
    """The checks of one :class:`HistogramDrift` on many cells: the statistics and
    verdicts as arrays (one numpy pass), and each cell's result on demand."""

    def __init__(
        self, rule: HistogramDrift, recent: np.ndarray, reference: np.ndarray, has: np.ndarray
    ) -> None:
        self.rule = rule
        self.has = has
        self.n = recent.sum(axis=1).astype(np.int64)
        self.m = reference.sum(axis=1).astype(np.int64)
        self.enough = has & (self.n >= rule.min_samples) & (self.m >= rule.min_samples)
        self.psi = self.statistic = self.dof = self.p_value = self.testable = None
        drifted = np.ones(len(has), dtype=bool) if rule.require == "both" else ~has
        if rule.psi_threshold is not None:
            self.psi = psi_rows(recent, reference, rule.epsilon)
            drifted = self.psi >= rule.psi_threshold
        if rule.alpha is not None:
            self.statistic, self.dof, self.testable = chi2_statistics(recent, reference)
            self.p_value = np.full(len(has), np.nan)
            # The p-value only where it decides the verdict (both: PSI drifted; either:
            # it did not), and for the cells whose result is asked: a window of stable
            # cells needs no p-value (nor scipy's import).
            decides = self.enough & (drifted if rule.require == "both" else ~drifted)
            if rule.psi_threshold is None:
                decides = self.enough
            significant = self._p_values(np.flatnonzero(decides)) < rule.alpha
            tested = np.zeros(len(has), dtype=bool)
            tested[np.flatnonzero(decides)] = significant
            if rule.psi_threshold is None:
                drifted = tested
            elif rule.require == "both":
                drifted = drifted & tested
            else:
                drifted = drifted | tested
        self.verdicts = np.where(
            self.enough, np.where(drifted, DRIFTED, STABLE), INCONCLUSIVE
        ).astype(np.int8)

    def _p_values(self, rows: np.ndarray) -> np.ndarray:
        """The p-values of these rows, computed once."""
        assert self.statistic is not None and self.dof is not None
        assert self.p_value is not None and self.testable is not None
        todo = rows[np.isnan(self.p_value[rows])]
        if len(todo):
            self.p_value[todo] = chi2_p_values(
                self.statistic[todo], self.dof[todo], self.testable[todo]
            )
        return self.p_value[rows]

    def result(self, i: int) -> DriftResult:
        """Cell i's combined result, with each configured check as a part."""
        rule = self.rule
        n = int(self.n[i])
        if not self.has[i]:
            return DriftResult(
                "histogram", DriftVerdict.INCONCLUSIVE, None, rule.psi_threshold, n, None,
                "no reference histogram yet",
            )  # fmt: skip
        parts = []
        if rule.psi_threshold is not None:
            parts.append(self.psi_result(i))
        if rule.alpha is not None:
            parts.append(self.chi2_result(i))
        verdict = VERDICTS[self.verdicts[i]]
        if verdict is DriftVerdict.INCONCLUSIVE:
            reason = parts[0].reason
        else:
            reason = "; ".join(part.reason for part in parts)
        first = parts[0]
        return DriftResult(
            "histogram", verdict, first.statistic, first.threshold, n, int(self.m[i]), reason,
            p_value=parts[-1].p_value, parts=tuple(parts),
        )  # fmt: skip

    def _too_few(self, check: str, i: int, threshold: float | None) -> DriftResult | None:
        if self.enough[i]:
            return None
        n, m, least = int(self.n[i]), int(self.m[i]), self.rule.min_samples
        return DriftResult(
            check, DriftVerdict.INCONCLUSIVE, None, threshold, n, m,
            f"too few samples: {n} recent and {m} reference, {least} needed on each side",
        )  # fmt: skip

    def psi_result(self, i: int) -> DriftResult:
        threshold = self.rule.psi_threshold
        threshold = threshold if threshold is not None else PSI_THRESHOLD
        if (few := self._too_few("psi", i, threshold)) is not None:
            return few
        assert self.psi is not None
        n, m, value = int(self.n[i]), int(self.m[i]), float(self.psi[i])
        drifted = value >= threshold
        word = "≥" if drifted else "<"
        return DriftResult(
            "psi", DriftVerdict.DRIFTED if drifted else DriftVerdict.STABLE, value, threshold,
            n, m, f"PSI {value:.3f} {word} {threshold:g} ({n} recent vs {m} reference)",
        )  # fmt: skip

    def chi2_result(self, i: int) -> DriftResult:
        alpha = self.rule.alpha if self.rule.alpha is not None else TEST_ALPHA
        if (few := self._too_few("chi2", i, alpha)) is not None:
            return few
        assert self.statistic is not None and self.dof is not None and self.p_value is not None
        n, m = int(self.n[i]), int(self.m[i])
        p_value = float(self._p_values(np.array([i]))[0])
        statistic, dof = float(self.statistic[i]), int(self.dof[i])
        drifted = p_value < alpha
        word = "<" if drifted else "≥"
        return DriftResult(
            "chi2", DriftVerdict.DRIFTED if drifted else DriftVerdict.STABLE, statistic, alpha,
            n, m, f"chi-square {statistic:.1f} on {dof} dof, p {_p(p_value)} {word} {alpha:g}",
            p_value=p_value, details={"dof": float(dof)},
        )  # fmt: skip


def _p(value: float) -> str:
    return f"{value:.3f}" if value >= 1e-3 or value == 0 else f"{value:.2e}"
