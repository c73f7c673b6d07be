"""The rule evaluators on synthetic cell windows: each type's true, false and
inconclusive cases, and the factory over the shipped example."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from config.rules import DriftRule, RatioRule, SpikeRule, ThresholdRule
from config.settings import SettingsError, load_settings
from operators.rules.evaluation import CellWindow
from operators.rules.evaluators import evaluator_for
from operators.rules.evaluators.drift import DriftEvaluator
from operators.rules.evaluators.ratio import RatioEvaluator
from operators.rules.evaluators.spike import SpikeEvaluator
from operators.rules.evaluators.threshold import ThresholdEvaluator
from operators.rules.lifecycle import Outcome
from tests.operators.rules.cell_windows import BINS, T0, M, cell, example_settings, rule_named


def threshold(**fields: object) -> ThresholdEvaluator:
    rule = ThresholdRule.model_validate(
        {"name": "floor", "type": "threshold", "window": "1m", "metric": "accuracy",
         "where": {"segment": "*"}, "op": "<", "value": 0.8, "min_samples": 30, **fields}
    )  # fmt: skip
    return ThresholdEvaluator(rule)


def test_threshold_true_false_and_inconclusive_per_cell_with_its_own_denominator() -> None:
    ev = threshold()
    cells = [
        cell(T0, {"labeled_count": 100, "correct_count": 70}, segment="eu"),
        cell(T0, {"labeled_count": 100, "correct_count": 90}, segment="us"),
        # 29 labels (the accuracy's own denominator), though 500 feedback events.
        cell(T0, {"labeled_count": 29, "correct_count": 0, "feedback_count": 500}, segment="ap"),
        cell(T0, {"feedback_count": 500}, segment="sa"),  # no labels: no accuracy
        cell(T0, {"labeled_count": 100, "correct_count": 0}),  # segment rollup: not read
        cell(T0, {"labeled_count": 100}, segment="eu", window="1h"),  # another window
    ]
    wanted = [c for c in cells if ev.wants(c.dims, c.window)]  # as the stage picks them
    assert len(wanted) == 4
    out = {dict(e.dims)["segment"]: e for e in ev.evaluate(wanted, T0 + M)}
    assert {k: e.outcome for k, e in out.items()} == {
        "eu": Outcome.TRUE, "us": Outcome.FALSE, "ap": Outcome.INCONCLUSIVE,
        "sa": Outcome.INCONCLUSIVE,
    }  # fmt: skip
    eu = out["eu"]
    assert (eu.value, eu.threshold, eu.samples, eu.event_time) == (0.7, 0.8, 100, T0 + M)
    assert (eu.window_start, eu.window_end) == (T0, T0 + M)
    assert eu.reason == "accuracy 0.7 < 0.8 (n=100 labeled_count)"
    assert out["ap"].samples == 29 and "too few samples (29 labeled_count, needs 30)" in (
        out["ap"].reason
    )
    assert "no value" in out["sa"].reason
    assert ev.wants({**cells[0].dims}, "1m") and not ev.wants({**cells[4].dims}, "1m")


def test_threshold_reads_early_rows_and_a_rate_by_both_thumbs() -> None:
    ev = threshold(metric="thumbs_down_rate", op=">", value=0.2, min_samples=10)
    early = cell(T0, {"thumbs_up": 6, "thumbs_down": 4}, final=False, segment="eu")
    (e,) = ev.evaluate([early], T0 + 30_000)
    assert (e.outcome, e.samples, e.value) == (Outcome.TRUE, 10, 0.4)


def ratio(**fields: object) -> RatioEvaluator:
    rule = RatioRule.model_validate(
        {"name": "fraud", "type": "ratio", "window": "1h",
         "numerator": {"metric": "report_amount_sum"}, "denominator": {"metric": "inference_count"},
         "scale": 1000, "op": ">", "value": 50, **fields}
    )  # fmt: skip
    return RatioEvaluator(rule)


def test_ratio_scales_and_compares_and_an_empty_denominator_is_inconclusive() -> None:
    ev = ratio(min_samples=100)
    h = 60 * M
    cells = [
        cell(T0, {"report_amount_sum": 600.0, "inference_count": 10_000}, window="1h", length=h),
        cell(T0, {"report_amount_sum": 400.0, "inference_count": 10_000}, window="1h", length=h,
             model_id="m2"),
        cell(T0, {"report_amount_sum": 400.0, "inference_count": 99}, window="1h", length=h,
             model_id="m3"),
        cell(T0, {"report_amount_sum": 400.0}, window="1h", length=h, model_id="m4"),
    ]  # fmt: skip
    out = {dict(e.dims)["model_id"]: e for e in ev.evaluate(cells, T0 + h)}
    assert out["m1"].outcome is Outcome.TRUE and out["m1"].value == pytest.approx(60.0)
    assert out["m2"].outcome is Outcome.FALSE and out["m2"].value == pytest.approx(40.0)
    assert out["m3"].outcome is Outcome.INCONCLUSIVE and out["m3"].samples == 99
    assert out["m4"].outcome is Outcome.INCONCLUSIVE and out["m4"].value is None
    assert "report_amount_sum / inference_count × 1000 = 60 > 50" in out["m1"].reason


def test_the_factory_builds_every_rule_of_the_shipped_example() -> None:
    settings = example_settings()
    evaluators = [evaluator_for(rule, settings) for rule in settings.rules]
    assert [e.rule for e in evaluators] == [rule.name for rule in settings.rules]
    assert isinstance(evaluators[1], ThresholdEvaluator)
    for evaluator in evaluators:
        assert evaluator.evaluate([], T0) == []
        pickle.loads(pickle.dumps(evaluator))
    floor = evaluator_for(rule_named(settings, "accuracy-floor"), settings)
    assert floor.wants({**cell(T0, model_version="v1", segment="eu", endpoint="x").dims}, "1m")


def spike(**fields: object) -> SpikeEvaluator:
    rule = SpikeRule.model_validate(
        {"name": "sp", "type": "spike", "window": "1m", "metric": "error_rate",
         "baseline_windows": 3, "change": 0.5, "min_samples": 50, **fields}
    )  # fmt: skip
    return SpikeEvaluator(rule)


def errors(labeled: int, wrong: int) -> dict[str, float]:
    return {"labeled_count": labeled, "correct_count": labeled - wrong}


def test_spike_against_the_trailing_final_windows_of_the_same_cell() -> None:
    ev = spike()
    seen = []
    for w, wrong in enumerate([10, 12, 8, 11, 30]):  # error rate 10 % ... then 30 %
        (e,) = ev.evaluate([cell(T0 + w * M, errors(100, wrong))], T0 + (w + 1) * M)
        seen.append(e.outcome)
    assert seen[:3] == [Outcome.INCONCLUSIVE] * 3  # the baseline is not full yet
    assert seen[3:] == [Outcome.FALSE, Outcome.TRUE]
    assert "baseline has 2 of 3 windows" in _last_reason(spike(), [10, 12])
    (e,) = ev.evaluate([cell(T0 + 5 * M, errors(100, 30), final=False)], T0 + 5 * M + 30_000)
    # The baseline is the windows of 10 %, 8 %... plus the 30 % one: (8 + 11 + 30) / 3 %.
    assert e.threshold == pytest.approx((0.08 + 0.11 + 0.30) / 3 * 1.5)
    assert e.baseline_samples == 300 and e.outcome is Outcome.TRUE
    # Early rows are compared, never absorbed: the next window's baseline is unchanged.
    (again,) = ev.evaluate([cell(T0 + 5 * M, errors(100, 30), final=False)], T0 + 5 * M + 40_000)
    assert again.threshold == e.threshold


def _last_reason(ev: SpikeEvaluator, wrongs: list[int]) -> str:
    e = None
    for w, wrong in enumerate([*wrongs, 50]):
        (e,) = ev.evaluate([cell(T0 + w * M, errors(100, wrong))], T0 + (w + 1) * M)
    assert e is not None
    return e.reason


def test_spike_direction_few_samples_and_a_zero_baseline() -> None:
    down = spike(direction="down", baseline_windows=1)
    down.evaluate([cell(T0, errors(100, 20))], T0 + M)
    (e,) = down.evaluate([cell(T0 + M, errors(100, 5))], T0 + 2 * M)
    assert e.outcome is Outcome.TRUE and "-75.0%" in e.reason
    (e,) = down.evaluate([cell(T0 + 2 * M, errors(40, 0))], T0 + 3 * M)
    assert e.outcome is Outcome.INCONCLUSIVE and "needs 50" in e.reason
    up = spike(baseline_windows=1)
    up.evaluate([cell(T0, errors(100, 0))], T0 + M)
    (e,) = up.evaluate([cell(T0 + M, errors(100, 1))], T0 + 2 * M)
    assert e.outcome is Outcome.TRUE  # from 0: any rise is a spike
    # A window below min_samples never enters the baseline.
    up = spike(baseline_windows=1)
    up.evaluate([cell(T0, errors(10, 9))], T0 + M)
    (e,) = up.evaluate([cell(T0 + M, errors(100, 1))], T0 + 2 * M)
    assert e.outcome is Outcome.INCONCLUSIVE


def test_spike_state_pickles_mid_stream() -> None:
    wrongs = [10, 12, 8, 11, 30, 9, 10, 40]
    calls = [[cell(T0 + w * M, errors(100, x))] for w, x in enumerate(wrongs)]
    whole = spike()
    expected = [whole.evaluate(c, T0 + (i + 1) * M) for i, c in enumerate(calls)]
    ev = spike()
    got = [ev.evaluate(c, T0 + (i + 1) * M) for i, c in enumerate(calls[:4])]
    ev = pickle.loads(pickle.dumps(ev))
    got += [ev.evaluate(c, T0 + (i + 5) * M) for i, c in enumerate(calls[4:])]
    assert got == expected


def drift(**fields: object) -> DriftEvaluator:
    rule = DriftRule.model_validate(
        {"name": "dr", "type": "drift", "window": "1h", "reference": {"kind": "trailing",
         "windows": 4}, **fields}
    )  # fmt: skip
    return DriftEvaluator(rule, BINS)


H = 60 * M
STABLE = np.array([1, 2, 4, 8, 10, 10, 8, 4, 2, 1], dtype=float)
SHIFTED = STABLE[::-1] * 0 + np.array([0, 0, 1, 1, 2, 4, 8, 10, 12, 12], dtype=float)


def hist_cell(rng: np.random.Generator, w: int, shape: np.ndarray, n: int = 2000) -> CellWindow:
    counts = tuple(int(x) for x in rng.multinomial(n, shape / shape.sum()))
    conf = {
        "confidence_count": n,
        "confidence_sum": n * float((np.arange(10) + 0.5) @ counts) / n / 10,
    }
    return cell(T0 + w * H, conf, length=H, window="1h", histogram=counts)


def test_drift_of_the_confidence_histogram_stationary_then_shifted() -> None:
    rng = np.random.default_rng(11)
    ev = drift()
    evaluations = []
    for w in range(30):
        shape = STABLE if w < 25 else SHIFTED
        evaluations += ev.evaluate([hist_cell(rng, w, shape)], T0 + (w + 1) * H)
    outcomes = [e.outcome for e in evaluations]
    e = evaluations[25]
    assert outcomes[0] is Outcome.INCONCLUSIVE  # no reference yet
    assert all(o is Outcome.FALSE for o in outcomes[1:25])  # stationary: no alert
    assert outcomes[25] is Outcome.TRUE  # the first shifted window
    assert e.evidence is not None and e.evidence["metric"] == "confidence_hist"
    assert [c["check"] for c in e.evidence["checks"]] == ["histogram"]
    assert {p["check"] for p in e.evidence["checks"][0]["parts"]} == {"psi", "chi2"}
    # Too few counts on the recent side: inconclusive, never drifted.
    (few,) = ev.evaluate([hist_cell(rng, 30, SHIFTED, n=50)], T0 + 31 * H)
    assert few.outcome is Outcome.INCONCLUSIVE and "too few samples" in few.reason


def test_drift_of_a_proportion_and_a_change_detector_on_its_series() -> None:
    rng = np.random.default_rng(4)
    ev = drift(metric="accuracy", psi=0.03, detector={"kind": "page_hinkley"}, min_samples=100)
    found = []
    for w in range(40):
        p = 0.9 if w < 25 else 0.8
        correct = int(rng.binomial(500, p))
        fields = {"labeled_count": 500, "correct_count": correct}
        es = ev.evaluate([cell(T0 + w * H, fields, length=H, window="1h")], T0 + (w + 1) * H)
        (e,) = es
        found.append(e.outcome)
    assert Outcome.TRUE not in found[:25]
    assert found[25] is Outcome.TRUE  # PSI and chi-square on the 2-bin histogram, at once
    # An early row with a detector only is not evaluated (the detector reads final rows).
    only_detector = drift(metric="reward_mean", psi=None, test=None,
                          detector={"kind": "page_hinkley"})  # fmt: skip
    early = cell(T0, {"reward_count": 10, "reward_sum": 5.0}, final=False, length=H, window="1h")
    assert only_detector.evaluate([early], T0 + M) == []


def test_a_detector_only_drift_rule_fires_after_a_shift_and_pickles_mid_stream() -> None:
    rng = np.random.default_rng(9)

    def calls() -> list[list]:
        out = []
        for w in range(60):
            mean = 0.5 if w < 40 else 0.3
            fields = {"reward_count": 400, "reward_sum": float(rng.normal(mean, 0.02) * 400)}
            out.append([cell(T0 + w * H, fields, length=H, window="1h")])
        return out

    stream = calls()
    rule = {"metric": "reward_mean", "psi": None, "test": None,
            "detector": {"kind": "page_hinkley"}}  # fmt: skip
    whole = drift(**rule)
    expected = [whole.evaluate(c, T0 + (i + 1) * H) for i, c in enumerate(stream)]
    outcomes = [e.outcome for es in expected for e in es]
    assert Outcome.TRUE not in outcomes[:40]
    assert Outcome.TRUE in outcomes[40:50]
    ev = drift(**rule)
    got = [ev.evaluate(c, T0 + (i + 1) * H) for i, c in enumerate(stream[:42])]
    ev = pickle.loads(pickle.dumps(ev))
    got += [ev.evaluate(c, T0 + (i + 43) * H) for i, c in enumerate(stream[42:])]
    assert got == expected


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('{name: c, type: canary, window: 1m, metric: rating_mean, canary: {deployment: canary}, '
         'baseline: {deployment: primary}, worse: lower}',
         "rules[0] (c): Value error, metric rating_mean: its sum of squares is not aggregated"),
        ('{name: c, type: canary, window: 1m, metric: latency_p95, canary: {deployment: canary}, '
         'baseline: {deployment: primary}, worse: higher}',
         "rules[0] (c): Value error, metric latency_p95: a canary compares a proportion or a mean"),
        ('{name: c, type: canary, window: 5m_30s, metric: ctr, canary: {deployment: canary}, '
         'baseline: {deployment: primary}, worse: lower}',
         "rules[0] (c).window: '5m_30s' is a sliding window: a canary adds windows up"),
        ('{name: r, type: ratio, window: 1h, numerator: {metric: report_amount_sum}, '
         'denominator: {attribute: amount}, op: ">", value: 1}',
         "rules[0] (r).denominator: Value error, attribute 'amount': sums of inference "
         "attributes are not aggregated yet"),
        ('{name: d, type: drift, window: 1h, metric: latency_p95, '
         'reference: {kind: trailing, windows: 3}}',
         "rules[0] (d): Value error, metric latency_p95 has no distribution per window"),
    ],
)  # fmt: skip
def test_rules_an_evaluator_cannot_read_are_refused_at_start(
    tmp_path: Path, rule: str, message: str
) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(f"rules:\n  - {rule}\n")
    with pytest.raises(SettingsError) as error:
        load_settings(file, environ={})
    assert message in str(error.value)


def test_a_spike_on_a_sliding_window_compares_with_windows_that_do_not_overlap_it() -> None:
    settings = example_settings()
    ev = evaluator_for(rule_named(settings, "latency-spike"), settings)
    assert isinstance(ev, SpikeEvaluator) and ev.keep == 10 + 10  # 5m every 30s: 10 overlap
    slide, length = 30_000, 5 * M
    fields = {"inference_count": 500}

    def at(k: int, p95: float) -> CellWindow:
        return cell(k * slide, fields, length=length, window="5m_30s",
                    metrics={"latency_p95": p95}, endpoint="predict")  # fmt: skip

    evaluations = []
    for k in range(30):  # 100 ms, then 300 ms from window 25 on
        evaluations += ev.evaluate([at(k, 100.0 if k < 25 else 300.0)], k * slide + length)
    by_start = {e.window_start // slide: e for e in evaluations}
    # Window 19 is the first with 10 windows (0..9) ending at or before its start.
    assert by_start[18].outcome is Outcome.INCONCLUSIVE
    assert by_start[19].outcome is Outcome.FALSE
    assert by_start[25].outcome is Outcome.TRUE and by_start[25].threshold == 150.0
    # Window 29's baseline (windows 10..19) holds no 300 ms window yet: still a spike.
    assert by_start[29].outcome is Outcome.TRUE and by_start[29].threshold == 150.0
