"""The canary evaluator: evidence accumulated across windows (never an early row and the
final row of one window both), inconclusive without a baseline, the rollback evidence,
and a snapshot mid-stream that resumes with identical evaluations."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from config.rules import CanaryRule
from config.settings import load_settings
from operators.rules.evaluation import CellWindow
from operators.rules.evaluators.canary import CanaryEvaluator
from operators.rules.lifecycle import Evaluation, Outcome
from tests.operators.rules.cell_windows import T0, M, cell, example_settings, rule_named


def canary(**fields: object) -> CanaryEvaluator:
    rule = CanaryRule.model_validate(
        {"name": "cn", "type": "canary", "window": "1m", "metric": "thumbs_down_rate",
         "canary": {"deployment": "canary"}, "baseline": {"deployment": "primary"},
         "match": ["model_id"], "worse": "higher", "alpha": 0.01, **fields}
    )  # fmt: skip
    return CanaryEvaluator(rule)


def thumbs(n: int, down: int) -> dict[str, float]:
    return {"thumbs_up": n - down, "thumbs_down": down, "feedback_count": n}


def pair_cells(
    start: int, canary_down: tuple[int, int], baseline_down: tuple[int, int], final: bool = True
) -> list[CellWindow]:
    return [
        cell(start, thumbs(*canary_down), final=final, deployment="canary"),
        cell(start, thumbs(*baseline_down), final=final, deployment="primary"),
    ]


def only(evaluations: list[Evaluation]) -> Evaluation:
    (evaluation,) = evaluations
    return evaluation


def degraded_windows(seed: int, windows: int, n: int = 800) -> Iterator[list[CellWindow]]:
    """Thumbs-down 13 % on the canary against 10 % on the primary, n events per side."""
    rng = np.random.default_rng(seed)
    for w in range(windows):
        c, b = int(rng.binomial(n, 0.13)), int(rng.binomial(n, 0.10))
        yield pair_cells(T0 + w * M, (n, c), (n, b))


def test_evidence_accumulates_across_windows_until_the_degradation_shows() -> None:
    ev = canary()
    outcomes = []
    for w, cells in enumerate(degraded_windows(seed=7, windows=30)):
        e = only(ev.evaluate(cells, T0 + (w + 1) * M))
        outcomes.append(e.outcome)
        assert e.samples == 800 * (w + 1) and e.baseline_samples == 800 * (w + 1)
        if e.outcome is Outcome.TRUE:
            break
    assert outcomes[-1] is Outcome.TRUE
    first_true = len(outcomes) - 1
    assert first_true >= 2, "caught on one window's data: nothing to accumulate"
    assert all(o is Outcome.FALSE for o in outcomes[:-1])
    # No single window is enough on its own: window by window it is never worse.
    for w, cells in enumerate(degraded_windows(seed=7, windows=first_true + 1)):
        assert only(canary().evaluate(cells, T0 + (w + 1) * M)).outcome is not Outcome.TRUE


def test_an_early_row_and_the_final_row_of_one_window_count_once() -> None:
    ev = canary(min_samples=100)
    # Window 0: two early emissions (running values), then the final row.
    ev.evaluate(pair_cells(T0, (300, 30), (300, 30), final=False), T0 + 20_000)
    e = only(ev.evaluate(pair_cells(T0, (600, 60), (600, 60), final=False), T0 + 40_000))
    assert (e.samples, e.baseline_samples) == (600, 600)
    e = only(ev.evaluate(pair_cells(T0, (1000, 100), (1000, 100)), T0 + M + 5_000))
    assert (e.samples, e.baseline_samples) == (1000, 1000)
    # Window 1 early, window 0 folded once window 1's final arrives; a replayed final
    # row of window 0 (a resume) changes nothing.
    e = only(ev.evaluate(pair_cells(T0 + M, (500, 250), (400, 40), final=False), T0 + M + 30_000))
    assert (e.samples, e.baseline_samples) == (1500, 1400)
    e = only(ev.evaluate(pair_cells(T0 + M, (1000, 500), (1000, 100)), T0 + 2 * M + 5_000))
    assert (e.samples, e.baseline_samples) == (2000, 2000)
    assert ev.evaluate(pair_cells(T0, (1000, 100), (1000, 100)), T0 + 2 * M + 6_000) == []
    e = only(ev.evaluate(pair_cells(T0 + M, (1000, 500), (1000, 100)), T0 + 2 * M + 7_000))
    assert (e.samples, e.baseline_samples) == (2000, 2000)
    assert e.outcome is Outcome.TRUE  # 30 % against 10 % over 1000 events per side
    assert e.value == pytest.approx(600 / 2000)


def test_a_final_window_split_over_calls_and_an_early_row_after_it_are_not_added_twice() -> None:
    ev = canary(min_samples=100)
    ev.evaluate(pair_cells(T0, (400, 40), (400, 40), final=False), T0 + 30_000)
    canary_final, baseline_final = pair_cells(T0, (1000, 100), (900, 90))
    e = only(ev.evaluate([canary_final], T0 + M + 5_000))  # a slice with one side only
    assert (e.samples, e.baseline_samples) == (1000, 400)
    e = only(ev.evaluate([baseline_final], T0 + M + 5_000))
    assert (e.samples, e.baseline_samples) == (1000, 900)
    stale = pair_cells(T0, (400, 40), (400, 40), final=False)
    e = only(ev.evaluate(stale, T0 + M + 6_000))  # an early row never replaces the final
    assert (e.samples, e.baseline_samples) == (1000, 900)


def test_no_baseline_data_is_inconclusive_never_true() -> None:
    ev = canary()
    for w in range(5):
        cells = [cell(T0 + w * M, thumbs(10_000, 9_000), deployment="canary")]
        e = only(ev.evaluate(cells, T0 + (w + 1) * M))
        assert e.outcome is Outcome.INCONCLUSIVE
        assert "no baseline data" in e.reason and e.evidence is None
    # A model with a primary only has no canary to judge: nothing is evaluated.
    assert ev.evaluate([cell(T0, thumbs(100, 10), model_id="m2")], T0 + M) == []
    # Too few samples on one side: inconclusive too.
    e = only(canary().evaluate(pair_cells(T0, (50, 40), (5000, 500)), T0 + M))
    assert e.outcome is Outcome.INCONCLUSIVE and "canary has 50 samples" in e.reason


def test_evidence_counts_from_the_first_window_with_both_sides() -> None:
    ev = canary(min_samples=100)
    ev.evaluate([cell(T0, thumbs(1000, 900), deployment="canary")], T0 + M)
    ev.evaluate([cell(T0 + M, thumbs(1000, 900), deployment="canary")], T0 + 2 * M)
    e = only(ev.evaluate(pair_cells(T0 + 2 * M, (500, 50), (500, 50)), T0 + 3 * M))
    assert (e.samples, e.baseline_samples) == (500, 500)
    assert e.outcome is Outcome.FALSE


def version_cells(start: int, canary_versions: dict[str, int], baseline: dict[str, int]) -> list:
    return [
        *(cell(start, thumbs(n, n // 10), deployment="canary", model_version=v)
          for v, n in canary_versions.items()),
        *(cell(start, thumbs(n, n // 10), deployment="primary", model_version=v)
          for v, n in baseline.items()),
    ]  # fmt: skip


def test_worse_carries_the_rollback_evidence_with_both_versions() -> None:
    ev = canary(min_samples=100)
    assert ev.wants(version_cells(T0, {"v2": 1}, {})[0].dims, "1m")
    cells = pair_cells(T0, (2000, 600), (2000, 200)) + version_cells(T0, {"v2": 2000}, {"v1": 2000})
    e = only(ev.evaluate(cells, T0 + M))
    assert e.outcome is Outcome.TRUE
    assert dict(e.dims) == {"model_id": "m1", "deployment": "canary"}
    assert e.evidence is not None
    assert (e.evidence["from_version"], e.evidence["to_version"]) == ("v2", "v1")
    assert e.evidence["model_id"] == "m1" and e.evidence["metric"] == "thumbs_down_rate"
    assert e.evidence["canary_samples"] == 2000 and e.evidence["p_value"] < 0.01
    # A baseline that spans two versions: its version is None and the reason says so.
    ev = canary(min_samples=100)
    cells = pair_cells(T0, (2000, 600), (2000, 200)) + version_cells(
        T0, {"v2": 2000}, {"v1": 1000, "v0": 1000}
    )
    e = only(ev.evaluate(cells, T0 + M))
    assert e.evidence is not None and e.evidence["to_version"] is None
    assert e.evidence["from_version"] == "v2"
    assert "the baseline spans versions v0, v1" in e.reason


def test_a_snapshot_mid_stream_resumes_with_identical_evaluations() -> None:
    stream = list(degraded_windows(seed=3, windows=12))
    early = [pair_cells(T0 + w * M, (400, 52), (400, 40), final=False) for w in range(12)]
    calls = [c for w in range(12) for c in (early[w], stream[w])]
    whole = canary()
    expected = [whole.evaluate(c, T0 + i * 30_000) for i, c in enumerate(calls)]
    resumed = canary()
    got = [resumed.evaluate(c, T0 + i * 30_000) for i, c in enumerate(calls[:9])]
    resumed = pickle.loads(pickle.dumps(resumed))
    state = pickle.loads(pickle.dumps(resumed.state))
    from_state = CanaryEvaluator(resumed.config, state)
    rest = calls[9:]
    got_pickled = got + [resumed.evaluate(c, T0 + (9 + i) * 30_000) for i, c in enumerate(rest)]
    got_state = got + [from_state.evaluate(c, T0 + (9 + i) * 30_000) for i, c in enumerate(rest)]
    assert got_pickled == expected and got_state == expected
    assert any(e.outcome is Outcome.TRUE for es in expected for e in es)


def test_a_horizon_restarts_the_evidence() -> None:
    ev = canary(min_samples=100, horizon="3m")
    samples = []
    for w, cells in enumerate(degraded_windows(seed=1, windows=7, n=200)):
        samples.append(only(ev.evaluate(cells, T0 + (w + 1) * M)).samples)
    assert samples == [200, 400, 600, 200, 400, 600, 200]


def test_the_example_canary_rule_and_a_mean_metric() -> None:
    settings = example_settings()
    ev = CanaryEvaluator(rule_named(settings, "canary-thumbs-down"))
    assert only(ev.evaluate(pair_cells(T0, (5000, 1000), (5000, 500)), T0 + M)).outcome is (
        Outcome.TRUE
    )
    rewards = canary(metric="reward_mean", worse="lower", min_samples=100)
    rng = np.random.default_rng(5)

    def reward_fields(mean: float) -> dict[str, float]:
        x = rng.normal(mean, 1.0, 3000)
        return {"reward_count": x.size, "reward_sum": float(x.sum()),
                "reward_sumsq": float((x * x).sum())}  # fmt: skip

    cells = [cell(T0, reward_fields(0.5), deployment="canary"),
             cell(T0, reward_fields(1.0), deployment="primary")]  # fmt: skip
    e = only(rewards.evaluate(cells, T0 + M))
    assert e.outcome is Outcome.TRUE and e.value == pytest.approx(0.5, abs=0.1)


def test_the_stage_is_asked_for_each_sides_per_version_rows_which_are_optional(
    tmp_path: Path,
) -> None:
    settings = example_settings()
    rule = rule_named(settings, "canary-thumbs-down")
    assert rule.cells_read() == {
        "canary": {"deployment": "canary"},
        "baseline": {"deployment": "primary"},
        "canary_versions": {"deployment": "canary", "model_version": "*"},
        "baseline_versions": {"deployment": "primary", "model_version": "*"},
    }
    assert set(rule.required_reads()) == {"canary", "baseline"}
    # Without the per-version grouping set the rule still loads (its versions are None).
    file = tmp_path / "c.yaml"
    file.write_text(
        "aggregation: {grouping_sets: [[model_version, segment, endpoint], []]}\n"
        "rules:\n  - {name: c, type: canary, window: 1m, metric: ctr, worse: lower,\n"
        "     canary: {deployment: canary}, baseline: {deployment: primary}}\n"
    )
    (narrow,) = load_settings(file, environ={}).rules
    assert "canary_versions" in narrow.cells_read()
