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
    p = r / r.sum()
    b = q / q.sum()
    p = np.where(p > 0, p, epsilon)
    b = np.where(b > 0, b, epsilon)
    return float(np.sum((p - b) * np.log(p / b)))


def chi2_homogeneity(
    recent: Sequence[int] | np.ndarray, reference: Sequence[int] | np.ndarray
) -> tuple[float, int, float]:
    """(statistic, dof, p-value) of Pearson's test that both histograms come from one
    distribution; bins with zero total are dropped, one bin left gives (0, 0, 1)."""
    r, q = _pair(recent, reference)
    keep = (r + q) > 0
    table = np.vstack((r[keep], q[keep]))
    dof = int(table.shape[1]) - 1
    n = table.sum()
    if dof < 1 or table[0].sum() <= 0 or table[1].sum() <= 0:
        return 0.0, max(dof, 0), 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    statistic = float(((table - expected) ** 2 / expected).sum())
    from scipy.special import chdtrc  # lazily: see the module docstring

    return statistic, dof, float(chdtrc(dof, statistic))


def proportion_counts(successes: float, trials: float) -> tuple[int, int]:
    """A proportion metric (accuracy, thumbs-down rate, CTR, ...) as a 2-bin histogram
    (successes, failures) of its own numerator and denominator: its distribution in a
    window, which the same checks and the same reference compare."""
    if not 0 <= successes <= trials or not math.isfinite(trials):
        raise ValueError(f"a proportion needs 0 ≤ successes ≤ trials, got {successes}/{trials}")
    return int(successes), int(trials) - int(successes)


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
        n = int(_counts("recent", recent).sum())
        if reference is None:
            return DriftResult(
                "histogram", DriftVerdict.INCONCLUSIVE, None, self.psi_threshold, n, None,
                "no reference histogram yet",
            )  # fmt: skip
        m = int(_pair(recent, reference)[1].sum())
        parts = []
        if self.psi_threshold is not None:
            parts.append(self.psi_check(recent, reference))
        if self.alpha is not None:
            parts.append(self.chi2_check(recent, reference))
        undecided = [part for part in parts if part.verdict is DriftVerdict.INCONCLUSIVE]
        flags = [part.drifted for part in parts]
        if undecided:
            verdict, reason = DriftVerdict.INCONCLUSIVE, undecided[0].reason
        else:
            drifted = all(flags) if self.require == "both" else any(flags)
            verdict = DriftVerdict.DRIFTED if drifted else DriftVerdict.STABLE
            reason = "; ".join(part.reason for part in parts)
        first = parts[0]
        return DriftResult(
            "histogram", verdict, first.statistic, first.threshold, n, m, reason,
            p_value=parts[-1].p_value, parts=tuple(parts),
        )  # fmt: skip

    def _too_few(self, check: str, n: int, m: int, threshold: float | None) -> DriftResult | None:
        if n >= self.min_samples and m >= self.min_samples:
            return None
        return DriftResult(
            check, DriftVerdict.INCONCLUSIVE, None, threshold, n, m,
            f"too few samples: {n} recent and {m} reference, "
            f"{self.min_samples} needed on each side",
        )  # fmt: skip

    def psi_check(
        self, recent: Sequence[int] | np.ndarray, reference: Sequence[int] | np.ndarray
    ) -> DriftResult:
        threshold = self.psi_threshold if self.psi_threshold is not None else PSI_THRESHOLD
        r, q = _pair(recent, reference)
        n, m = int(r.sum()), int(q.sum())
        if (few := self._too_few("psi", n, m, threshold)) is not None:
            return few
        value = psi(r, q, self.epsilon)
        drifted = value >= threshold
        word = "≥" if drifted else "<"
        return DriftResult(
            "psi", DriftVerdict.DRIFTED if drifted else DriftVerdict.STABLE, value, threshold,
            n, m, f"PSI {value:.3f} {word} {threshold:g} ({n} recent vs {m} reference)",
        )  # fmt: skip

    def chi2_check(
        self, recent: Sequence[int] | np.ndarray, reference: Sequence[int] | np.ndarray
    ) -> DriftResult:
        alpha = self.alpha if self.alpha is not None else TEST_ALPHA
        r, q = _pair(recent, reference)
        n, m = int(r.sum()), int(q.sum())
        if (few := self._too_few("chi2", n, m, alpha)) is not None:
            return few
        statistic, dof, p_value = chi2_homogeneity(r, q)
        drifted = p_value < alpha
        word = "<" if drifted else "≥"
        return DriftResult(
            "chi2", DriftVerdict.DRIFTED if drifted else DriftVerdict.STABLE, statistic, alpha,
            n, m, f"chi-square {statistic:.1f} on {dof} dof, p {_p(p_value)} {word} {alpha:g}",
            p_value=p_value, details={"dof": float(dof)},
        )  # fmt: skip


def _p(value: float) -> str:
    return f"{value:.3f}" if value >= 1e-3 or value == 0 else f"{value:.2e}"
