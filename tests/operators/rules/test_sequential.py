"""The canary test by seeded simulation: its false-alarm rate under continuous monitoring,
its power, the samples it needs against a fixed-horizon test, and its sparse-data outcome.

Each simulation draws ≥ 1000 canaries at once (numpy, vectorized): each side's totals grow
in 60 batches of varying size, and the test is read after every batch, as the rules stage
reads it at every window emission. A canary "fires" if any look says `worse`.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.stats import norm

from operators.rules.sequential import (
    CanaryEvidence,
    CanaryTest,
    Direction,
    MetricKind,
    Outcome,
    Totals,
)

LOOKS = 60
CANARIES = 2000

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Run:
    """Cumulative totals of each side at each look: arrays of shape (canaries, looks)."""

    canary_n: Array
    canary_total: Array
    canary_squares: Array
    baseline_n: Array
    baseline_total: Array
    baseline_squares: Array


def batch_sizes(
    rng: np.random.Generator, mean_batch: float, share: float, canaries: int = CANARIES
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Feedback per look and side: the rate varies 0.2–1.8× from look to look, and each
    event goes to the canary with probability `share`."""
    sizes = rng.poisson(mean_batch * rng.uniform(0.2, 1.8, (canaries, LOOKS)))
    canary = rng.binomial(sizes, share)
    return canary, sizes - canary


def proportions(
    seed: int, p_canary: float, p_baseline: float, share: float = 0.5, mean_batch: float = 500
) -> Run:
    rng = np.random.default_rng(seed)
    n_c, n_b = batch_sizes(rng, mean_batch, share)
    k_c = np.cumsum(rng.binomial(n_c, p_canary), axis=1).astype(np.float64)
    k_b = np.cumsum(rng.binomial(n_b, p_baseline), axis=1).astype(np.float64)
    return Run(
        np.cumsum(n_c, axis=1).astype(np.float64),
        k_c,
        k_c,
        np.cumsum(n_b, axis=1).astype(np.float64),
        k_b,
        k_b,
    )


MEAN_CANARIES = 1000  # one draw per event: fewer canaries keep these runs fast


def lognormal_means(seed: int, canary_scale: float, mean_batch: float = 60) -> Run:
    """Latency-like observations (lognormal, skewed): one draw per feedback event, summed
    per batch; the canary's values are the baseline's × `canary_scale`."""
    rng = np.random.default_rng(seed)
    n_c, n_b = batch_sizes(rng, mean_batch, 0.5, MEAN_CANARIES)

    def side(counts: NDArray[np.int64], scale: float) -> tuple[Array, Array]:
        flat = counts.ravel()
        values = scale * rng.lognormal(mean=math.log(200.0), sigma=0.5, size=int(flat.sum()))
        ends = np.cumsum(flat)
        starts = ends - flat

        def batch_sum(x: Array) -> Array:
            cum = np.concatenate(([0.0], np.cumsum(x)))
            return (cum[ends] - cum[starts]).reshape(counts.shape)

        return (
            np.cumsum(batch_sum(values), axis=1),
            np.cumsum(batch_sum(values * values), axis=1),
        )

    sum_c, sq_c = side(n_c, canary_scale)
    sum_b, sq_b = side(n_b, 1.0)
    return Run(
        np.cumsum(n_c, axis=1).astype(np.float64),
        sum_c,
        sq_c,
        np.cumsum(n_b, axis=1).astype(np.float64),
        sum_b,
        sq_b,
    )


Decision = Callable[[CanaryTest, Run], NDArray[np.bool_]]


def anytime_decision(test: CanaryTest, run: Run) -> NDArray[np.bool_]:
    """`worse` at each look, as the test decides it (its own vectorized path)."""
    _, _, log_e, _ = test.evidence_arrays(
        run.canary_n,
        run.canary_total,
        run.canary_squares,
        run.baseline_n,
        run.baseline_total,
        run.baseline_squares,
    )
    return test.worse(run.canary_n, run.baseline_n, log_e)


def fixed_horizon_decision(test: CanaryTest, run: Run) -> NDArray[np.bool_]:
    """What the issue forbids: a fixed-horizon one-sided z-test re-read at every look."""
    estimate, std_error, _, _ = test.evidence_arrays(
        run.canary_n,
        run.canary_total,
        run.canary_squares,
        run.baseline_n,
        run.baseline_total,
        run.baseline_squares,
    )
    enough = (run.canary_n >= test.min_samples) & (run.baseline_n >= test.min_samples)
    return enough & (estimate > norm.ppf(1 - test.alpha) * std_error)


@dataclass(frozen=True)
class Alarms:
    rate: float  # share of canaries with a `worse` at some look
    stop_n: Array  # events (both sides) at the first `worse`; inf when none


def alarms(test: CanaryTest, run: Run, decide: Decision = anytime_decision) -> Alarms:
    worse = decide(test, run)
    fired = worse.any(axis=1)
    first = worse.argmax(axis=1)
    total = run.canary_n + run.baseline_n
    stop_n = np.where(fired, total[np.arange(len(first)), first], np.inf)
    return Alarms(float(fired.mean()), stop_n)


def false_alarm_bound(alpha: float, canaries: int = CANARIES) -> float:
    """α plus three standard errors of a rate estimated from `canaries` runs."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / canaries)


# --- validity under continuous monitoring ------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "share", "mean_batch"),
    [(0.05, 0.5, 500), (0.05, 0.1, 2000), (0.01, 0.5, 500), (0.05, 0.5, 60)],
    ids=["alpha5-even", "alpha5-canary10pct", "alpha1-even", "alpha5-sparse"],
)
def test_no_difference_rarely_fires_at_any_look(alpha: float, share: float, mean_batch: float):
    test = CanaryTest(MetricKind.PROPORTION, Direction.HIGHER, alpha=alpha)
    run = proportions(seed=11, p_canary=0.10, p_baseline=0.10, share=share, mean_batch=mean_batch)
    rate = alarms(test, run).rate
    assert rate <= false_alarm_bound(alpha), f"false alarms {rate:.3%} > α={alpha}"


def test_the_margin_edge_rarely_fires():
    """The composite null's edge: the canary exactly at baseline × (1 + margin)."""
    test = CanaryTest(MetricKind.PROPORTION, alpha=0.05, relative_margin=0.2)
    run = proportions(seed=12, p_canary=0.12, p_baseline=0.10)
    assert alarms(test, run).rate <= false_alarm_bound(0.05)


def test_the_simulation_catches_a_fixed_horizon_test_checked_at_every_look():
    """The check above has teeth: the same canaries, read by a fixed-horizon z-test at
    every look, alarm far above α."""
    test = CanaryTest(MetricKind.PROPORTION, alpha=0.05)
    run = proportions(seed=11, p_canary=0.10, p_baseline=0.10)
    rate = alarms(test, run, fixed_horizon_decision).rate
    assert rate > 2 * false_alarm_bound(0.05), rate


def test_means_no_difference_rarely_fires_and_a_slower_canary_is_caught():
    test = CanaryTest(MetricKind.MEAN, Direction.HIGHER, alpha=0.05)
    same = alarms(test, lognormal_means(seed=13, canary_scale=1.0)).rate
    assert same <= false_alarm_bound(0.05, MEAN_CANARIES), same
    slower = alarms(test, lognormal_means(seed=14, canary_scale=1.10)).rate
    assert slower >= 0.9, slower


def test_a_lower_reward_is_worse_and_a_higher_one_is_not():
    """`worse: lower` on a mean: a canary whose reward falls 10 % fires, one whose reward
    rises 10 % never does (the test is one-sided)."""
    test = CanaryTest(MetricKind.MEAN, Direction.LOWER, alpha=0.05)
    assert alarms(test, lognormal_means(seed=15, canary_scale=0.90)).rate >= 0.9
    assert alarms(test, lognormal_means(seed=16, canary_scale=1.10)).rate == 0.0


# --- power and the samples it needs -------------------------------------------------


def fixed_horizon_total(
    p_baseline: float, p_canary: float, alpha: float, power: float, share: float
) -> float:
    """Events (both sides; a `share` of them the canary's) that a one-sided two-sample
    z-test needs for `power` at level `alpha` (the closed form)."""
    z = norm.ppf(1 - alpha) + norm.ppf(power)
    variance = p_canary * (1 - p_canary) / share + p_baseline * (1 - p_baseline) / (1 - share)
    return z * z * variance / (p_canary - p_baseline) ** 2


@pytest.mark.parametrize(("alpha", "share"), [(0.01, 0.5), (0.05, 0.5), (0.01, 0.1)])
def test_a_15pct_rise_of_thumbs_down_at_10pct_is_detected_and_its_cost(alpha, share, capsys):
    """Detected in ≥ 80 % of canaries within 3× the fixed-horizon sample; the figures
    printed here are the ones in docs/canary-test.md."""
    test = CanaryTest(MetricKind.PROPORTION, Direction.HIGHER, alpha=alpha)
    fixed = fixed_horizon_total(0.10, 0.115, alpha, 0.80, share)
    run = proportions(
        seed=21, p_canary=0.115, p_baseline=0.10, share=share, mean_batch=5 * fixed / LOOKS
    )
    result = alarms(test, run)
    budget = 3 * fixed
    detected = float(np.mean(result.stop_n <= budget))
    median, p80 = np.quantile(result.stop_n, [0.5, 0.8])
    caught = np.isfinite(result.stop_n)
    mean = float(np.mean(result.stop_n[caught]))
    with capsys.disabled():
        print(
            f"\n15% rise at 10% base, alpha={alpha}, canary share {share:.0%}: fixed-horizon "
            f"z-test (80% power) needs {fixed:,.0f} events; the anytime test stops at median "
            f"{median:,.0f}, 80th percentile {p80:,.0f}, mean {mean:,.0f} over the "
            f"{caught.mean():.1%} caught in the run (~{5 * fixed:,.0f}) ({detected:.1%} within "
            f"{budget:,.0f})"
        )
    assert detected >= 0.8
    assert p80 <= 2 * fixed  # the price of looking at every emission stays bounded


# --- the scalar path the rules stage calls -------------------------------------------


def test_looking_one_canary_at_a_time_agrees_with_the_simulation():
    """`look` (state, one canary, one look at a time) decides what the vectorized path
    decided, so the simulations above test what the stage runs."""
    test = CanaryTest(MetricKind.PROPORTION, alpha=0.05)
    run = proportions(seed=31, p_canary=0.11, p_baseline=0.10, mean_batch=300)
    expected = anytime_decision(test, run)
    for i in range(40):
        evidence = test.start()
        for j in range(LOOKS):
            evidence, verdict = test.look(
                evidence,
                Totals.proportion(int(run.canary_n[i, j]), int(run.canary_total[i, j])),
                Totals.proportion(int(run.baseline_n[i, j]), int(run.baseline_total[i, j])),
            )
            assert (verdict.outcome is Outcome.WORSE) == bool(expected[i, j]), (i, j, verdict)
            if verdict.outcome is Outcome.WORSE:
                assert verdict.lower is not None and verdict.lower > 0
            elif verdict.lower is not None:
                assert verdict.lower <= 1e-9
    assert expected[:40].any() and not expected[:40].all()  # both outcomes were exercised


def test_a_worse_verdict_carries_what_a_transition_needs():
    test = CanaryTest(MetricKind.PROPORTION, alpha=0.01, relative_margin=0.1)
    evidence, verdict = test.look(
        test.start(), Totals.proportion(20_000, 3_000), Totals.proportion(20_000, 2_000)
    )
    assert verdict.outcome is Outcome.WORSE
    assert verdict.value == pytest.approx(0.15)
    assert verdict.baseline_value == pytest.approx(0.10)
    assert verdict.threshold == pytest.approx(0.11)
    assert verdict.estimate == pytest.approx(0.04)
    assert verdict.lower is not None and verdict.upper is not None
    assert 0 < verdict.lower < 0.04 < verdict.upper
    assert verdict.p_value is not None and verdict.p_value < 0.01
    assert (verdict.canary_samples, verdict.baseline_samples) == (20_000, 20_000)
    assert "canary 0.15 (n=20000) vs baseline 0.1 (n=20000)" in verdict.reason
    assert pickle.loads(pickle.dumps(evidence)) == evidence
    assert len(pickle.dumps(evidence)) < 400


def test_a_canary_shown_within_its_margin_is_not_worse():
    test = CanaryTest(MetricKind.PROPORTION, alpha=0.05, relative_margin=0.2)
    _, verdict = test.look(
        test.start(), Totals.proportion(50_000, 5_000), Totals.proportion(50_000, 5_000)
    )
    assert verdict.outcome is Outcome.NOT_WORSE
    assert verdict.upper is not None and verdict.upper < 0


# --- sparse and missing data ---------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "baseline", "why"),
    [
        (Totals.proportion(5_000, 2_500), Totals(0), "baseline has no data"),
        (Totals(0), Totals.proportion(5_000, 100), "canary has no data"),
        (Totals.proportion(99, 99), Totals.proportion(5_000, 0), "canary has 99 samples"),
    ],
)
def test_no_baseline_or_too_few_samples_is_inconclusive_not_failed(canary, baseline, why):
    """Even a canary whose every answer got thumbs-down is not `worse` without a baseline."""
    test = CanaryTest(MetricKind.PROPORTION, alpha=0.05, min_samples=100)
    _, verdict = test.look(test.start(), canary, baseline)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert why in verdict.reason
    assert (verdict.canary_samples, verdict.baseline_samples) == (canary.n, baseline.n)
    assert verdict.lower is None and verdict.p_value is None


def test_constant_values_on_both_sides_are_inconclusive():
    test = CanaryTest(MetricKind.MEAN, alpha=0.05)
    _, verdict = test.look(test.start(), Totals(500, 500.0, 500.0), Totals(500, 500.0, 500.0))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "varies" in verdict.reason


# --- evidence accumulates, from an origin the caller can move ------------------------


def test_evidence_accumulates_across_looks_not_window_by_window():
    """Sixty windows of 400 events each, each alone far too small to decide, add up."""
    test = CanaryTest(MetricKind.PROPORTION, alpha=0.01)
    evidence = test.start()
    outcomes = []
    for look in range(1, 61):
        n = 200 * look
        evidence, verdict = test.look(
            evidence, Totals.proportion(n, 26 * n // 200), Totals.proportion(n, 20 * n // 200)
        )
        outcomes.append(verdict.outcome)
    single = test.verdict(Totals.proportion(200, 26), Totals.proportion(200, 20))
    assert single.outcome is Outcome.UNDECIDED
    assert outcomes[0] is Outcome.UNDECIDED and outcomes[-1] is Outcome.WORSE
    assert evidence.looks == 60


def test_restart_counts_evidence_from_the_last_totals():
    test = CanaryTest(MetricKind.PROPORTION, alpha=0.01)
    evidence, verdict = test.look(
        test.start(), Totals.proportion(20_000, 3_000), Totals.proportion(20_000, 2_000)
    )
    assert verdict.outcome is Outcome.WORSE
    evidence = evidence.restart()
    evidence, verdict = test.look(
        evidence, Totals.proportion(20_050, 3_005), Totals.proportion(20_050, 2_005)
    )
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert (verdict.canary_samples, verdict.baseline_samples) == (50, 50)


# --- bad input gets a clear error ------------------------------------------------------


def test_totals_that_go_back_are_refused_naming_the_side():
    test = CanaryTest(MetricKind.PROPORTION)
    evidence, _ = test.look(test.start(), Totals.proportion(500, 50), Totals.proportion(500, 50))
    with pytest.raises(ValueError, match="baseline totals went back: n 400 after 500"):
        test.look(evidence, Totals.proportion(600, 60), Totals.proportion(400, 40))
    with pytest.raises(ValueError, match=r"successes 7 not within 0\.\.5"):
        Totals.proportion(5, 7)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 0.7}, "alpha"),
        ({"relative_margin": -0.1}, "margin"),
        ({"relative_margin": 1.0, "direction": Direction.LOWER}, "margin"),
        ({"absolute_margin": math.inf}, "absolute_margin"),
        ({"min_samples": 1}, "min_samples"),
        ({"tightest_at": 0}, "tightest_at"),
    ],
)
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        CanaryTest(MetricKind.PROPORTION, **kwargs)


def test_the_state_is_plain_data():
    evidence = CanaryEvidence(looks=3)
    assert pickle.loads(pickle.dumps(evidence)) == evidence
