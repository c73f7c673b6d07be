"""The rules stage on synthetic window emissions: the lifecycle in event time (pending →
firing after `for` → resolved), the same transitions however the windows are batched,
snapshot/resume identity, muted transitions recorded but not notified, groups drained at
the end, and the numpy row selection agreeing with the selector rule."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from operators.batches import Categorical, TableRows
from operators.cells import BASE_DIMS, ROLLUP_DIMS
from operators.metrics import HISTOGRAM_METRIC, LATENCY_METRICS, MACRO_F1, MainLayout, derive
from operators.rules.alerts import Action, AlertState, Notification
from operators.rules.cell_windows import CellSelector
from operators.rules.evaluation import CellWindow
from operators.rules.lifecycle import Evaluation, Outcome, Policy, dims_of
from operators.rules.selectors import selects_cell
from operators.rules.silences import Silence
from operators.rules.stage import RulesConfig, RulesStage
from operators.snapshots import StateFormatError
from operators.stats import FlowStats
from operators.window_metrics import WindowMetrics
from tests.harness import _plain
from tests.operators.rules.cell_windows import cell_id

S, M = 1000, 60_000
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
LAYOUT = MainLayout(4)
WHERE = {"segment": "*"}  # each segment, rolled up over model_version and endpoint


class AccuracyBelow:
    """A tiny threshold evaluator: accuracy < floor on final rows, inconclusive under
    `min_samples` labels. It counts its looks (state a snapshot must keep)."""

    def __init__(self, name: str, floor: float, where: Mapping[str, Any], min_samples: int = 10):
        self.name, self.floor, self.where, self.min_samples = name, floor, dict(where), min_samples
        self.looks = 0
        self.seen: list[dict[str, str]] = []

    @property
    def rule(self) -> str:
        return self.name

    def wants(self, dims: Mapping[str, str], window: str) -> bool:
        return window == "1m" and selects_cell(self.where, dims)

    def evaluate(self, cells: Sequence[CellWindow], event_time: int) -> list[Evaluation]:
        self.looks += 1
        out = []
        for cell in cells:
            self.seen.append(dict(cell.dims))
            if not cell.final:
                continue
            value, n = cell.metrics["accuracy"], int(cell.fields["labeled_count"])
            if value is None or n < self.min_samples:
                outcome = Outcome.INCONCLUSIVE
            else:
                outcome = Outcome.TRUE if value < self.floor else Outcome.FALSE
            out.append(
                Evaluation(
                    dims_of({k: cell.dims[k] for k in ("model_id", "segment")}),
                    outcome,
                    event_time,
                    cell.window_start,
                    cell.window_end,
                    value=value,
                    threshold=self.floor,
                    samples=n,
                    reason=f"accuracy {value} (look {self.looks})",
                    evidence={"accuracy": value, "from_version": "v2", "to_version": "v1"},
                )
            )
        return out


def config(
    group_wait: int = 0,
    for_ms: int = 2 * M,
    silences: tuple[Silence, ...] = (),
    action: str | None = "scale",
) -> RulesConfig:
    return RulesConfig(
        evaluators=lambda: [AccuracyBelow("accuracy-floor", 0.8, WHERE)],
        reads=(("1m", (WHERE,)),),
        policies=(Policy("accuracy-floor", "1m", for_ms=for_ms, targets=("ops",), action=action),),
        rule_types={"accuracy-floor": "threshold"},
        silences=silences,
        group_wait_ms=group_wait,
        allowed_lateness=5 * S,
    )


def cell(segment: str, labeled: int, correct: int, **dims: str) -> tuple[dict[str, str], dict]:
    full = {"tenant": "t", "model_id": "m1", "deployment": "primary", "model_version": "*",
            "segment": segment, "endpoint": "*", **dims}  # fmt: skip
    return full, {"labeled_count": labeled, "correct_count": correct, "feedback_count": labeled}


def emission(
    windows: Sequence[tuple[int, list[tuple[dict[str, str], dict]]]],
    final: bool = True,
    watermark: float = math.inf,
) -> WindowMetrics:
    """`metrics` rows of 1m windows (start, cells) as the merge stage emits them."""
    rows = [(start, dims, values) for start, cells in windows for dims, values in cells]
    n = len(rows)
    fields = np.zeros((n, LAYOUT.width))
    for i, (_, _, values) in enumerate(rows):
        for name, value in values.items():
            fields[i, LAYOUT.index(name)] = value
    starts = np.array([r[0] for r in rows], dtype=np.int64)
    columns: dict[str, Any] = {
        "window": Categorical(np.zeros(n, dtype=np.int32), ["1m"]),
        "window_start": starts,
        "window_end": starts + M,
    }
    for name in (*BASE_DIMS, "extra_dims"):
        values = [r[1].get(name, "") for r in rows]
        categories = sorted(set(values))
        codes = np.array([categories.index(v) for v in values], dtype=np.int32)
        columns[name] = Categorical(codes, categories)
    columns["final"] = np.full(n, int(final), dtype=np.uint8)
    columns["version"] = np.zeros(n, dtype=np.uint64)
    columns.update(derive(fields, 60.0))
    columns[MACRO_F1] = np.full(n, np.nan)
    for name in LATENCY_METRICS:
        columns[name] = np.full(n, np.nan)
    columns[HISTOGRAM_METRIC] = fields[:, LAYOUT.first_bin :]
    return WindowMetrics("metrics", columns, final, watermark, LAYOUT.names, fields, cell_ids(rows))


def cell_ids(rows: Sequence[tuple[int, dict[str, str], dict]]) -> np.ndarray:
    """Each row's cell id, as the merge stage's CellIndex gives them (:func:`cell_id`)."""
    return np.array([cell_id(dims) for _, dims, _ in rows], dtype=np.int64)


def accuracies(*per_window: float) -> list[tuple[int, list[tuple[dict[str, str], dict]]]]:
    """1m windows from T0: segment `eu` with the given accuracies (100 labels), `us` at
    0.95 throughout, and rows no rule reads (a rollup row, another window's)."""
    return [
        (
            T0 + i * M,
            [
                cell("eu", 100, round(a * 100)),
                cell("us", 100, 95),
                cell("*", 200, 10),  # the segment rollup: `segment: "*"` must not read it
            ],
        )
        for i, a in enumerate(per_window)
    ]


def run(stage: RulesStage, emissions: Sequence[WindowMetrics], eof: bool = True) -> list[Any]:
    out: list[Any] = []
    for item in emissions:
        out.extend(stage.on_item(item)[0])
    if eof:
        out.extend(stage.on_eof()[0])
    return out


def alert_rows(out: Sequence[Any]) -> list[dict[str, Any]]:
    rows = []
    for item in out:
        if isinstance(item, TableRows):
            assert item.table == "alerts"
            names = list(item.columns)
            columns = [_plain(item.columns[n]) for n in names]
            rows.extend(dict(zip(names, r, strict=True)) for r in zip(*columns, strict=True))
    return rows


def test_an_alert_goes_pending_then_fires_after_for_then_resolves_in_event_time() -> None:
    stage = RulesStage(config(), FlowStats())
    windows = accuracies(0.5, 0.5, 0.5, 0.5, 0.95)
    out = run(stage, [emission([w]) for w in windows])
    rows = alert_rows(out)
    assert [(r["previous"], r["state"]) for r in rows] == [
        ("inactive", "pending"), ("pending", "firing"), ("firing", "resolved"),
    ]  # fmt: skip
    end = [start + M + 5 * S for start, _ in windows]  # final at end + allowed lateness
    assert [r["event_time"] for r in rows] == [end[0], end[2], end[4]]
    assert all(r["segment"] == "eu" and r["model_id"] == "m1" for r in rows)
    assert {r["episode"] for r in rows} == {end[0]}
    firing = rows[1]
    assert (firing["value"], firing["threshold"], firing["samples"]) == (0.5, 0.8, 100)
    assert (firing["action"], firing["notified"], firing["muted"]) == ("scale", 1, 0)
    assert rows[0]["notified"] == 0  # pending is recorded, not notified
    notified = [n for n in out if isinstance(n, Notification)]
    assert [[t.state for t in n.transitions] for n in notified] == [
        [AlertState.FIRING], [AlertState.RESOLVED],
    ]  # fmt: skip
    actions = [a for a in out if isinstance(a, Action)]
    assert len(actions) == 1
    assert (actions[0].kind, actions[0].from_version, actions[0].to_version) == (
        "scale",
        "v2",
        "v1",
    )
    assert actions[0].evidence == {"accuracy": 0.5, "from_version": "v2", "to_version": "v1"}
    evaluator = stage.evaluators[0]
    assert isinstance(evaluator, AccuracyBelow)
    assert all(d["segment"] in ("eu", "us") for d in evaluator.seen)  # never the rollup row
    assert len(evaluator.seen) == 2 * len(windows)


def test_the_same_windows_give_the_same_transitions_however_they_are_batched() -> None:
    """A live run emits a window per tick; a bounded replay emits many at once, at an
    infinite watermark, with early rows in between for the live one. The transitions
    (their event times included) must not depend on that."""
    windows = accuracies(0.5, 0.5, 0.5, 0.6, 0.95, 0.95, 0.4, 0.4, 0.4)
    live = []
    for window in windows:
        start = window[0]
        live.append(emission([window], final=False, watermark=start + 30 * S))
        live.append(emission([window], watermark=start + M + 7 * S))
    replay = [emission(windows[:4]), emission(windows[4:])]
    by_tick = alert_rows(run(RulesStage(config(), FlowStats()), live))
    at_once = alert_rows(run(RulesStage(config(), FlowStats()), replay))
    assert len(at_once) == 5  # two episodes: pending, firing, resolved; pending, firing
    looks = "reason"  # the test evaluator counts its looks: early rows add some
    assert [{**r, looks: ""} for r in by_tick] == [{**r, looks: ""} for r in at_once]


def test_a_stage_resumed_from_its_snapshot_goes_on_like_one_never_stopped() -> None:
    """Split where an alert is pending, a group is open and the evaluator has counted
    looks: every later output must be the same."""
    windows = accuracies(0.5, 0.5, 0.5, 0.5, 0.95, 0.5, 0.5, 0.5)
    emissions = [emission([w]) for w in windows]
    kept = RulesStage(config(group_wait=3 * M), FlowStats())
    before = run(kept, emissions[:3], eof=False)
    assert kept.lifecycle.alerts and kept.grouper.groups  # firing, its group still open
    data = kept.snapshot()
    assert data is not None and data.startswith(b"pulse-state rules_stage v3\n")
    resumed = RulesStage(config(group_wait=3 * M), FlowStats(), data)
    assert resumed.evaluators[0].looks == 3  # type: ignore[attr-defined]
    rest = [repr(x) for x in run(kept, emissions[3:])]
    assert [repr(x) for x in run(resumed, emissions[3:])] == rest
    assert any("Notification" in x for x in rest) and before


def test_a_resume_refuses_a_state_of_another_kind() -> None:
    with pytest.raises(StateFormatError, match="cannot resume the rules_stage"):
        RulesStage(config(), FlowStats(), b"pulse-state merge_stage v1\n" + b"x")


def test_muted_transitions_are_recorded_and_act_but_are_not_notified() -> None:
    silence = Silence.of({"segment": "eu"}, until=T0 + 3 * M)
    stage = RulesStage(config(for_ms=0, silences=(silence,)), FlowStats())
    out = run(stage, [emission([w]) for w in accuracies(0.5, 0.95, 0.5)])
    rows = alert_rows(out)
    assert [(r["state"], r["muted"], r["notified"]) for r in rows] == [
        ("firing", 1, 0),  # at T0 + 1m05s: silenced
        ("resolved", 1, 0),
        ("firing", 0, 1),  # at T0 + 3m05s: the silence has expired (event time)
    ]
    notified = [n for n in out if isinstance(n, Notification)]
    assert [t.state for n in notified for t in n.transitions] == [AlertState.FIRING]
    assert sum(isinstance(a, Action) for a in out) == 2  # one per episode, muted or not


def test_open_groups_are_drained_at_the_end_of_the_input() -> None:
    stage = RulesStage(config(group_wait=60 * M, for_ms=0), FlowStats())
    out = [x for w in accuracies(0.5, 0.5) for x in stage.on_item(emission([w]))[0]]
    assert not any(isinstance(x, Notification) for x in out)  # the group waits
    drained = stage.on_eof()[0]
    assert [type(x) for x in drained] == [Notification]


def test_early_rows_before_every_partition_was_heard_from_are_not_evaluated() -> None:
    stage = RulesStage(config(), FlowStats())
    stage.on_item(emission(accuracies(0.5), final=False, watermark=-math.inf))
    assert stage.evaluators[0].looks == 0  # type: ignore[attr-defined]
    stage.on_item(emission(accuracies(0.5), final=False, watermark=T0 + 20 * S))
    assert stage.evaluators[0].looks == 1  # type: ignore[attr-defined]
    assert stage.clock == T0 + 20 * S


def test_the_numpy_row_selection_agrees_with_the_selector_rule() -> None:
    rng = random.Random(7)
    values = {"tenant": ["a", "b"], "model_id": ["m1", "m2"], "deployment": ["primary", "canary"],
              "model_version": ["v1", "v2", "*"], "segment": ["eu", "us", "*"],
              "endpoint": ["/x", "*"]}  # fmt: skip
    selectors = [
        {}, {"segment": "*"}, {"segment": "eu", "model_version": "*"}, {"model_id": ["m2"]},
        {"deployment": "canary", "endpoint": "*", "segment": ["us", "eu"]}, {"region": "x"},
        {"region": ["x", "y"], "segment": "*"},
    ]  # fmt: skip
    selector = CellSelector([("1m", (s,)) for s in selectors] + [("5m", ({},))])
    for _ in range(5):  # dictionaries that grow, and one that is new
        cells = [({d: rng.choice(v) for d, v in values.items()}, {}) for _ in range(200)]
        for dims, _ in cells:
            dims["extra_dims"] = rng.choice(["", "region=x", "region=y", "region=z"])
        batch = emission([(T0, cells)])
        rows = np.arange(len(cells))
        masks = selector.masks(batch, "1m", rows)
        assert masks[-1] is None  # a rule of another window
        for s, mask in zip(selectors, masks, strict=False):
            expected = []
            for dims, _ in cells:
                full = {k: v for k, v in dims.items() if k != "extra_dims"}
                if dims["extra_dims"]:
                    full.update([dims["extra_dims"].split("=")])
                expected.append(selects_cell(s, full, ROLLUP_DIMS))
            assert mask is not None and mask.tolist() == expected, s


def _example_windows(n: int) -> list[tuple[int, list[tuple[dict[str, str], dict]]]]:
    """1m windows for the issue's example rules: a canary twice as often thumbed down as
    its primary (rollups and per-version rows), and a finest cell under the accuracy floor."""

    def thumbs(deployment: str, version: str, down: int) -> tuple[dict[str, str], dict]:
        dims = {"tenant": "t", "model_id": "m1", "deployment": deployment,
                "model_version": version, "segment": "*", "endpoint": "*"}  # fmt: skip
        return dims, {"thumbs_down": down, "thumbs_up": 300 - down, "feedback_count": 300}

    out = []
    for i in range(n):
        cells = [
            thumbs("canary", "*", 60), thumbs("canary", "v2", 60),
            thumbs("primary", "*", 30), thumbs("primary", "v1", 30),
            cell("eu", 40, 20, model_version="v1", endpoint="/x"),
        ]  # fmt: skip
        out.append((T0 + i * M, cells))
    return out


def test_the_real_evaluators_resume_from_a_snapshot_with_identical_transitions() -> None:
    """The issue's example rules with the evaluators of `evaluator_for` (the canary's
    evidence is state): split before the canary fires and while the accuracy alert is
    pending; the resumed stage must emit what the uninterrupted one does, the rollback
    included."""
    from operators.rules.evaluators import evaluator_for
    from tests.operators.rules.cell_windows import example_settings

    settings = example_settings()
    rules = RulesConfig.of(settings, lambda rule: evaluator_for(rule, settings))
    emissions = [emission([w]) for w in _example_windows(8)]
    kept = RulesStage(rules, FlowStats())
    before = alert_rows(run(kept, emissions[:1], eof=False))
    assert ("accuracy-floor", "pending") in {(r["rule"], r["state"]) for r in before}
    assert not any(r["state"] == "firing" for r in before)
    data = kept.snapshot()
    assert data is not None
    rest = run(kept, emissions[1:])
    resumed = run(RulesStage(rules, FlowStats(), data), emissions[1:])
    assert [repr(x) for x in resumed] == [repr(x) for x in rest]
    rollbacks = [a for a in rest if isinstance(a, Action)]
    assert [(a.kind, a.from_version, a.to_version) for a in rollbacks] == [("rollback", "v2", "v1")]
    fired = {(r["rule"], r["state"]) for r in alert_rows(rest)}
    assert {("canary-thumbs-down", "firing"), ("accuracy-floor", "firing")} <= fired


def test_the_order_of_a_windows_rows_does_not_change_the_outputs() -> None:
    """The merge stage lists a window's cells in the order partitions' deltas reached it,
    which differs between a run and its replay; a grouped notification's key lists its
    transitions in order, so the outputs must not follow the rows. Both evaluator paths:
    the test evaluator (cell records) and the real ones (blocks, canary sides)."""
    from operators.rules.evaluators import evaluator_for
    from tests.operators.rules.cell_windows import example_settings

    settings = example_settings()
    failing = [cell(f"s{i:02}", 100, 50) for i in range(12)]  # the test evaluator's
    failing += [cell(f"s{i:02}", 100, 50, model_version="v1", endpoint="/x") for i in range(12)]
    windows = [(start, [*cells, *failing]) for start, cells in _example_windows(3)]
    real = RulesConfig.of(settings, lambda rule: evaluator_for(rule, settings))
    grouped = []
    for rules in (config(for_ms=0, group_wait=2 * M), real):
        outputs = []
        for seed in range(4):
            shuffled = [(s, random.Random(seed).sample(c, len(c))) for s, c in windows]
            out = run(RulesStage(rules, FlowStats()), [emission([w]) for w in shuffled])
            outputs.append(
                (alert_rows(out), [repr(x) for x in out if not isinstance(x, TableRows)])
            )
            notified = [x for x in out if isinstance(x, Notification)]
            grouped.append(max(len(n.transitions) for n in notified))
        assert sum(r["state"] == "firing" for r in outputs[0][0]) >= 12  # many in one window
        assert all(o == outputs[0] for o in outputs[1:])
    assert grouped[0] >= 12  # the test evaluator's firings in one request (the real
    # rules: the canary inhibits the others)
