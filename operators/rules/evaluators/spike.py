"""The spike rule: a metric's relative change against the mean of its trailing baseline,
the previous `baseline_windows` FINAL windows of the same cell.

The baseline of a window starting at s is the last K final windows that end at or before
s (with a sliding window, those that do not overlap it: an overlapping one shares
events with the window it is compared to and would damp the spike). A final window
enters the baseline only with a value and at least `min_samples` events behind it (its
own denominator); early rows are compared but never enter it. Fewer than K baseline
windows, or a window below `min_samples`, is inconclusive. A baseline mean of 0 makes
any rise an infinite change (and no change when the value is 0 too).

State per cell: a ring of (start, end, value, samples) of at most K + (windows that
overlap one window) entries; plain data, picklable. A block of cells is judged at once:
each cell's baseline mean is read from its ring, the verdicts computed with numpy
(:func:`spike_outcomes`), and a reason is written only for the cells asked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from config.rules import SpikeRule
from operators.rules.columns import CellBlock
from operators.rules.evaluation import (
    FALSE,
    INCONCLUSIVE,
    OUTCOMES,
    TRUE,
    BlockVerdicts,
    CellWindow,
)
from operators.rules.evaluators.cell_rule import CellRule, evaluate_blocks, too_few, verdict
from operators.rules.evaluators.reading import samples
from operators.rules.lifecycle import Dims, Evaluation, Outcome

# (window start, window end, value, samples) of one final window
Point = tuple[int, int, float, int]


@dataclass(slots=True)
class SpikeState:
    rings: dict[Dims, list[Point]] = field(default_factory=dict)


class SpikeEvaluator(CellRule[SpikeRule]):
    def __init__(
        self, rule: SpikeRule, overlapping: int = 1, state: SpikeState | None = None
    ) -> None:
        """`overlapping`: how many consecutive windows of the rule's window share events
        (1 for tumbling; ceil(length / slide) for sliding)."""
        super().__init__(rule)
        self.keep = rule.baseline_windows + max(overlapping, 1)
        self.state: SpikeState = state if state is not None else SpikeState()

    def evaluate(self, cells: Sequence[CellWindow], event_time: int) -> list[Evaluation]:
        return evaluate_blocks(self, cells, event_time)

    def judge_block(self, block: CellBlock, event_time: int) -> BlockVerdicts:
        """Each cell against its ring's baseline before this window, then (a final row)
        the window joins the ring; the verdicts with numpy (:func:`spike_outcomes`)."""
        rule = self.config
        keys = block.keys
        value = block.metric(rule.metric)
        n = block.samples(rule.metric)
        values, counts = value.tolist(), n.tolist()
        start = block.window_start
        baselines: list[list[Point]] = []
        means = np.full(len(keys), np.nan)
        for i, key in enumerate(keys):
            ring = self.state.rings.setdefault(key, [])
            baseline = [p for p in ring if p[1] <= start][-rule.baseline_windows :] if ring else []
            baselines.append(baseline)
            if baseline:
                means[i] = sum(p[2] for p in baseline) / len(baseline)
            if block.final:
                self._absorb(ring, start, block.window_end, values[i], counts[i])
        full = np.array([len(b) >= rule.baseline_windows for b in baselines], dtype=bool)
        outcomes, change = spike_outcomes(rule, value, n, means, full)

        def evaluation(i: int) -> Evaluation:
            return self._record(
                keys[i], block.cell(i), event_time, OUTCOMES[outcomes[i]], baselines[i],
                float(means[i]), float(change[i]),
            )  # fmt: skip

        return BlockVerdicts(outcomes, evaluation)

    def _absorb(self, ring: list[Point], start: int, end: int, value: float, n: int) -> None:
        if ring and start <= ring[-1][0]:
            return  # a window already absorbed (a replay) or older
        if not math.isfinite(value) or n < max(self.config.min_samples, 1):
            return  # NaN (no value) is not finite either
        ring.append((start, end, value, n))
        del ring[: max(0, len(ring) - self.keep)]

    def _record(
        self,
        key: Dims,
        cell: CellWindow,
        event_time: int,
        outcome: Outcome,
        baseline: list[Point],
        mean: float,
        change: float,
    ) -> Evaluation:
        rule = self.config
        value = cell.metrics.get(rule.metric)
        n = samples(rule.metric, cell.fields)
        base_n = sum(p[3] for p in baseline) if baseline else None
        if value is None or n < rule.min_samples:
            reason = too_few(rule.metric, value, n, rule.min_samples)
            return verdict(cell, event_time, outcome, reason, dims=key,
                           value=value, samples=n, baseline_samples=base_n)  # fmt: skip
        if len(baseline) < rule.baseline_windows:
            reason = (
                f"{rule.metric} {value:.4g}: baseline has {len(baseline)} of "
                f"{rule.baseline_windows} windows"
            )
            return verdict(cell, event_time, outcome, reason, dims=key,
                           value=value, samples=n, baseline_samples=base_n)  # fmt: skip
        rising = rule.direction == "up" or (rule.direction == "both" and value >= mean)
        threshold = mean * (1 + rule.change) if rising else mean * (1 - rule.change)
        beyond = outcome is Outcome.TRUE
        reason = (
            f"{rule.metric} {value:.4g} against a mean of {mean:.4g} over "
            f"{len(baseline)} windows: {change:+.1%} "
            f"({'beyond' if beyond else 'within'} {rule.change:.0%} {rule.direction})"
        )
        return verdict(cell, event_time, outcome, reason, dims=key, value=value,
                       threshold=threshold, samples=n, baseline_samples=base_n)  # fmt: skip


def spike_outcomes(
    rule: SpikeRule, value: np.ndarray, n: np.ndarray, mean: np.ndarray, full: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The one definition of a spike verdict, per cell: INCONCLUSIVE without a value,
    under `min_samples` or without `baseline_windows` baseline windows; else TRUE when
    the relative change against the baseline mean is `change` or more in `direction`.
    Also the changes (for the reasons)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        change = (value - mean) / np.abs(mean)
    change = np.where(mean == 0, np.where(value == 0, 0.0, np.copysign(np.inf, value)), change)
    up = rule.direction in ("up", "both")
    down = rule.direction in ("down", "both")
    with np.errstate(invalid="ignore"):
        beyond = (up & (change >= rule.change)) | (down & (-change >= rule.change))
    known = ~np.isnan(value) & (n >= rule.min_samples) & full
    outcomes = np.where(known, np.where(beyond, TRUE, FALSE), INCONCLUSIVE).astype(np.int8)
    return outcomes, change
