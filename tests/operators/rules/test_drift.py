"""Drift checks: PSI and the chi-square test on histograms against a reference accumulated
from final windows, and the online change detector on a metric series.

Statistics by seeded simulation (fast): a stationary stream gives no alert (the test's
false-alarm rate within alpha plus simulation error), a shift is detected within a bounded
number of windows, state pickled mid-stream resumes with the same decisions.
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from typing import Literal

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from operators.rules.alerts import Action, AlertState, Severity, Transition
from operators.rules.change_detectors import DetectorSpec, SeriesChangeDetector
from operators.rules.drift import (
    DriftVerdict,
    HistogramDrift,
    chi2_homogeneity,
    proportion_counts,
    psi,
)
from operators.rules.drift_reference import (
    FixedPeriod,
    ReferenceHistogram,
    TrailingWindows,
)

MINUTE = 60_000
# A confidence histogram as models produce it: most mass in the top bins, sparse below.
CONFIDENCE = np.array([0.005, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.15, 0.25, 0.4])
# The same model less sure of itself: 30 % of the mass moved to the lower half.
SHIFTED = 0.7 * CONFIDENCE + 0.3 * np.array([0.2] * 5 + [0.0] * 5)


def windows(rng: np.random.Generator, p: np.ndarray, count: int, n: int) -> np.ndarray:
    return rng.multinomial(n, p, size=count)


# --- the statistics themselves ----------------------------------------------------------


def test_psi_formula_and_the_epsilon_for_empty_bins() -> None:
    recent, reference = [30, 70, 0], [50, 40, 10]
    p, q = np.array([0.3, 0.7, 1e-4]), np.array([0.5, 0.4, 0.1])
    assert psi(recent, reference) == pytest.approx(float(np.sum((p - q) * np.log(p / q))))
    assert psi(reference, reference) == 0.0
    assert psi(recent, reference, epsilon=1e-6) > psi(recent, reference)  # the epsilon is used
    with pytest.raises(ValueError, match="bins"):
        psi([1, 2], [1, 2, 3])


def test_chi2_equals_scipy_contingency_with_zero_total_bins_dropped() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        bins = int(rng.integers(2, 12))
        recent = rng.integers(0, 40, bins)
        reference = rng.integers(0, 200, bins)
        empty = rng.random(bins) < 0.2
        recent[empty] = 0
        reference[empty] = 0
        kept = (recent + reference) > 0
        statistic, dof, p_value = chi2_homogeneity(recent, reference)
        if kept.sum() < 2 or recent.sum() == 0:
            assert (statistic, p_value) == (0.0, 1.0)
            continue
        want = chi2_contingency(np.vstack((recent[kept], reference[kept])), correction=False)
        assert statistic == pytest.approx(want.statistic)
        assert p_value == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
        assert dof == want.dof


# --- histograms: no alert on a stationary stream, an alert after a shift ----------------


def test_stationary_stream_false_alarm_rate_within_alpha() -> None:
    """500 independent recent windows against a trailing reference of 5 windows, all from
    one distribution: the chi-square test rejects in at most alpha + 3 standard errors of
    them, PSI stays below its threshold and the combined verdict never says drifted."""
    rng = np.random.default_rng(11)
    check = HistogramDrift(psi_threshold=0.2, alpha=0.05, min_samples=100)
    repetitions, rejected, psi_values = 500, 0, list[float]()
    for _ in range(repetitions):
        reference = ReferenceHistogram(TrailingWindows(5), bins=10)
        for i, counts in enumerate(windows(rng, CONFIDENCE, 5, 500)):
            assert reference.absorb(i * MINUTE, (i + 1) * MINUTE, counts.tolist())
        ref = reference.reference_for(5 * MINUTE)
        assert ref is not None and ref.windows == 5 and ref.samples == 2500
        result = check.check(windows(rng, CONFIDENCE, 1, 500)[0], ref.counts)
        by_check = {part.check: part for part in result.parts}
        rejected += by_check["chi2"].drifted
        psi_values.append(by_check["psi"].statistic or 0.0)
        assert not result.drifted, result.reason
    alpha = 0.05
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / repetitions)
    assert rejected / repetitions <= bound, (rejected, bound)
    assert rejected > 0  # the test is not vacuous: it does reject at about its level
    assert max(psi_values) < 0.2


def test_shift_to_lower_confidence_alerts_at_the_first_shifted_window() -> None:
    """One cell's stream: 40 stationary windows, then the confidence mass moves to lower
    bins. No alert before the shift; drifted within two windows after it."""
    rng = np.random.default_rng(5)
    check = HistogramDrift()  # defaults: PSI 0.2, alpha 0.01, both
    reference = ReferenceHistogram(TrailingWindows(10), bins=10)
    verdicts = []
    for i in range(50):
        counts = windows(rng, SHIFTED if i >= 40 else CONFIDENCE, 1, 400)[0]
        ref = reference.reference_for(i * MINUTE)
        verdicts.append(check.check(counts, None if ref is None else ref.counts).verdict)
        reference.absorb(i * MINUTE, (i + 1) * MINUTE, counts.tolist())
    assert verdicts[0] is DriftVerdict.INCONCLUSIVE  # no reference yet
    assert DriftVerdict.DRIFTED not in verdicts[:40]
    assert DriftVerdict.DRIFTED in verdicts[40:42]


def test_fixed_period_reference_detects_the_shift_and_keeps_detecting_it() -> None:
    rng = np.random.default_rng(8)
    check = HistogramDrift()
    reference = ReferenceHistogram(FixedPeriod(0, 20 * MINUTE), bins=10)
    verdicts = []
    for i in range(40):
        counts = windows(rng, SHIFTED if i >= 30 else CONFIDENCE, 1, 400)[0]
        ref = reference.reference_for(i * MINUTE)
        assert (ref is None) == (i < 20)  # the period must be over before it is a reference
        verdicts.append(check.check(counts, None if ref is None else ref.counts).verdict)
        reference.absorb(i * MINUTE, (i + 1) * MINUTE, counts.tolist())
    ref = reference.reference_for(40 * MINUTE)
    assert ref is not None and (ref.windows, ref.start, ref.end) == (20, 0, 20 * MINUTE)
    assert DriftVerdict.DRIFTED not in verdicts[:30]
    assert verdicts[30:] == [DriftVerdict.DRIFTED] * 10  # a fixed reference does not adapt


def test_too_few_samples_is_inconclusive_even_for_a_large_shift() -> None:
    check = HistogramDrift(min_samples=200)
    low, high = [100, 50, 0, 0, 0, 0], [0, 0, 0, 0, 50, 100]
    small = check.check(low, high)  # 150 on each side: below the minimum
    assert small.verdict is DriftVerdict.INCONCLUSIVE
    assert all(part.verdict is DriftVerdict.INCONCLUSIVE for part in small.parts)
    assert "too few samples: 150 recent and 150 reference" in small.reason
    assert check.check([2 * c for c in low], high).verdict is DriftVerdict.INCONCLUSIVE
    assert check.check([2 * c for c in low], [2 * c for c in high]).drifted
    none = check.check(low, None)
    assert none.verdict is DriftVerdict.INCONCLUSIVE and none.reason == "no reference histogram yet"


def test_require_either_or_both() -> None:
    """Large counts make a small shift significant but not material: `both` stays
    stable, `either` drifts."""
    rng = np.random.default_rng(2)
    p = CONFIDENCE
    q = 0.97 * CONFIDENCE + 0.03 * np.array([0.0] * 9 + [1.0])
    recent, reference = rng.multinomial(200_000, q), rng.multinomial(200_000, p)
    both = HistogramDrift(require="both").check(recent, reference)
    either = HistogramDrift(require="either").check(recent, reference)
    by_check = {part.check: part for part in both.parts}
    assert by_check["chi2"].drifted and not by_check["psi"].drifted
    assert both.verdict is DriftVerdict.STABLE and either.drifted


def test_a_proportion_metric_drifts_as_its_two_bin_distribution() -> None:
    """Accuracy of 500 labels per window against 5 trailing windows, by the chi-square
    test alone: at most alpha + 3 standard errors of 500 stationary windows flagged; a drop
    0.9 → 0.85 flagged in most windows, 0.9 → 0.8 in every one."""
    rng = np.random.default_rng(4)
    check = HistogramDrift(psi_threshold=None, alpha=0.05)

    def flagged(rate: float, repetitions: int) -> int:
        count = 0
        for _ in range(repetitions):
            reference = ReferenceHistogram(TrailingWindows(5), bins=2)
            for i in range(5):
                counts = proportion_counts(rng.binomial(500, 0.9), 500)
                reference.absorb(i * MINUTE, (i + 1) * MINUTE, counts)
            ref = reference.reference_for(5 * MINUTE)
            assert ref is not None and ref.samples == 2500
            recent = proportion_counts(rng.binomial(500, rate), 500)
            count += check.check(recent, ref.counts).drifted
        return count

    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / 500)
    assert 0 < flagged(0.9, 500) / 500 <= bound
    assert flagged(0.85, 100) >= 80  # power about 0.9 by the normal approximation
    assert flagged(0.8, 100) == 100
    with pytest.raises(ValueError, match="successes"):
        proportion_counts(11, 10)


def test_settings_are_checked_naming_the_field() -> None:
    with pytest.raises(ValueError, match="psi_threshold"):
        HistogramDrift(psi_threshold=0)
    with pytest.raises(ValueError, match="alpha"):
        HistogramDrift(alpha=1.5)
    with pytest.raises(ValueError, match="psi_threshold or alpha"):
        HistogramDrift(psi_threshold=None, alpha=None)
    with pytest.raises(ValueError, match="min_samples"):
        HistogramDrift(min_samples=0)


# --- the reference accumulator ----------------------------------------------------------


def test_trailing_reference_is_a_bounded_ring_of_the_windows_before_the_recent_one() -> None:
    ref = ReferenceHistogram(TrailingWindows(3), bins=2)
    for i in range(100):
        assert ref.absorb(i * MINUTE, (i + 1) * MINUTE, [i, 1])
        assert len(ref.ring) <= 4
    got = ref.reference_for(100 * MINUTE)  # the next window: the last three
    assert got is not None and got.counts == (97 + 98 + 99, 3)
    assert (got.windows, got.start, got.end) == (3, 97 * MINUTE, 100 * MINUTE)
    # A sliding recent window overlapping the last absorbed one leaves that one out.
    got = ref.reference_for(99 * MINUTE + 30_000)
    assert got is not None and got.counts == (96 + 97 + 98, 3)
    assert ref.reference_for(0) is None


def test_reference_absorbs_no_overlap_and_no_replay() -> None:
    """Sliding windows (5 min by 1 min): only non-overlapping ones are summed, so no event
    is counted twice; a replayed final window changes nothing."""
    ref = ReferenceHistogram(TrailingWindows(100), bins=2)
    absorbed = [ref.absorb(s * MINUTE, (s + 5) * MINUTE, [1, 1]) for s in range(20)]
    assert absorbed == [s % 5 == 0 for s in range(20)]
    assert not ref.absorb(15 * MINUTE, 20 * MINUTE, [1, 1])  # replay
    got = ref.reference_for(20 * MINUTE)
    assert got is not None and got.counts == (4, 4) and got.windows == 4
    with pytest.raises(ValueError, match="3 bins"):
        ref.absorb(20 * MINUTE, 25 * MINUTE, [1, 1, 1])


def test_fixed_period_sums_only_the_windows_inside_it() -> None:
    ref = ReferenceHistogram(FixedPeriod(10 * MINUTE, 13 * MINUTE), bins=2)
    took = [ref.absorb(i * MINUTE, (i + 1) * MINUTE, [1, i]) for i in range(8, 16)]
    assert took == [False, False, True, True, True, False, False, False]
    assert ref.reference_for(12 * MINUTE) is None  # the period is not over yet
    got = ref.reference_for(13 * MINUTE)
    assert got is not None and got.counts == (3, 10 + 11 + 12) and got.windows == 3


def test_reference_state_pickles_and_resumes() -> None:
    ref = ReferenceHistogram(TrailingWindows(2), bins=3)
    ref.absorb(0, MINUTE, [1, 2, 3])
    copy = pickle.loads(pickle.dumps(ref))
    for target in (ref, copy):
        target.absorb(MINUTE, 2 * MINUTE, [4, 5, 6])
        target.absorb(MINUTE, 2 * MINUTE, [4, 5, 6])  # replayed after the restore
    assert copy.reference_for(2 * MINUTE) == ref.reference_for(2 * MINUTE)
    resumed = copy.reference_for(2 * MINUTE)
    assert resumed is not None and resumed.counts == (5, 7, 9)


# --- the change detector on a metric series ---------------------------------------------


def accuracy_series(rng: np.random.Generator, rates: list[float], n: int = 500) -> list[float]:
    """One accuracy per window: correct / labeled of `n` labeled events (Bernoulli)."""
    return [float(rng.binomial(n, rate) / n) for rate in rates]


def detections(spec: DetectorSpec, values: list[float]) -> list[int]:
    detector = SeriesChangeDetector(spec)
    results = [detector.update(i * MINUTE, value) for i, value in enumerate(values)]
    return [i for i, result in enumerate(results) if result is not None and result.drifted]


def test_page_hinkley_stays_quiet_on_a_stationary_series() -> None:
    """Documented: no detection in 100 stationary series of 500 windows (normal noise
    0.02 and Bernoulli accuracy of 500 labels per window)."""
    spec = DetectorSpec()
    for seed in range(100):
        rng = np.random.default_rng(seed)
        assert detections(spec, list(rng.normal(0.9, 0.02, 500))) == [], seed
        assert detections(spec, accuracy_series(rng, [0.9] * 500)) == [], seed


def test_page_hinkley_detects_a_step_within_fifteen_windows() -> None:
    spec = DetectorSpec()
    delays = []
    for seed in range(50):
        rng = np.random.default_rng(seed)
        found = detections(spec, list(rng.normal(0.9, 0.02, 50)) + list(rng.normal(0.85, 0.02, 50)))
        assert found and found[0] >= 50, (seed, found)
        delays.append(found[0] - 50)
        found = detections(spec, accuracy_series(rng, [0.9] * 50 + [0.85] * 50))
        assert found and 50 <= found[0] < 65, (seed, found)
    assert max(delays) < 15


def test_adwin_quiet_when_stationary_and_detects_a_large_step() -> None:
    """ADWIN with one point per window is slow (documented): 0.9 → 0.3 after ~29 windows."""
    spec = DetectorSpec(kind="adwin")
    for seed in range(30):
        rng = np.random.default_rng(seed)
        assert detections(spec, accuracy_series(rng, [0.9] * 300)) == [], seed
        found = detections(spec, accuracy_series(rng, [0.9] * 60 + [0.3] * 60))
        assert found and 60 <= found[0] < 92, (seed, found)


@pytest.mark.parametrize("kind", ["page_hinkley", "adwin"])
def test_detector_pickled_mid_stream_resumes_with_identical_decisions(
    kind: Literal["page_hinkley", "adwin"],
) -> None:
    rng = np.random.default_rng(21)
    step = 0.3 if kind == "adwin" else 0.85
    values = accuracy_series(rng, [0.9] * 60 + [step] * 60 + [0.9] * 60)
    detector = SeriesChangeDetector(DetectorSpec(kind=kind))
    first = [detector.update(i * MINUTE, v) for i, v in enumerate(values[:62])]
    restored = pickle.loads(pickle.dumps(detector))
    rest = [detector.update((62 + i) * MINUTE, v) for i, v in enumerate(values[62:])]
    again = [restored.update((62 + i) * MINUTE, v) for i, v in enumerate(values[62:])]
    assert rest == again
    assert any(r is not None and r.drifted for r in rest)  # the change came after the pickle
    assert not any(r is not None and r.drifted for r in first)


def test_detector_ignores_replayed_windows_and_missing_values() -> None:
    detector = SeriesChangeDetector(DetectorSpec(min_points=2))
    first = detector.update(0, 0.9)
    assert first is not None and first.verdict is DriftVerdict.INCONCLUSIVE
    assert detector.update(0, 0.1) is None  # the same window again: not a second point
    missing = detector.update(MINUTE, None)
    assert missing is not None and missing.verdict is DriftVerdict.INCONCLUSIVE
    assert missing.reason == "no value in this window"
    stable = detector.update(2 * MINUTE, 0.9)
    assert stable is not None and stable.verdict is DriftVerdict.STABLE and stable.samples == 2


def test_detector_spec_is_checked() -> None:
    with pytest.raises(ValueError, match="kind"):
        DetectorSpec(kind="cusum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="adwin has no threshold"):
        DetectorSpec(kind="adwin", threshold=1.0)
    with pytest.raises(ValueError, match="delta"):
        DetectorSpec(delta=0)


# --- what the caller builds from a result -----------------------------------------------


def test_a_result_fills_a_transition_and_a_retrain_action() -> None:
    result = HistogramDrift().check([0, 0, 10, 90, 300], [0, 0, 300, 90, 10])
    assert result.drifted
    transition = Transition(
        rule="confidence-drift", fingerprint="f", episode=1, state=AlertState.FIRING,
        previous=AlertState.PENDING, severity=Severity.WARNING, window="1m", window_start=0,
        window_end=MINUTE, event_time=MINUTE, dims=(("model_id", "m"),),
        **result.transition_fields(),
    )  # fmt: skip
    assert transition.value == result.statistic and transition.baseline_samples == 400
    assert "PSI" in transition.reason and "chi-square" in transition.reason
    action = Action("retrain", "confidence-drift", "f", 1, MINUTE, (("model_id", "m"),),
                    evidence=result.evidence())  # fmt: skip
    evidence = json.loads(json.dumps(action.evidence))
    assert [part["check"] for part in evidence["parts"]] == ["psi", "chi2"]
    assert evidence["parts"][1]["p_value"] < 0.01


def test_importing_the_drift_modules_does_not_import_river_or_scipy() -> None:
    """Both take seconds to import; the flow pays that only when a drift rule runs."""
    code = (
        "import sys, operators.rules.drift, operators.rules.change_detectors, "
        "operators.rules.drift_reference; "
        "print(sorted(m for m in ('river', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
