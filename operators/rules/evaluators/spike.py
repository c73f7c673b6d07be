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
overlap one window) entries; plain data, picklable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from config.rules import SpikeRule
from operators.rules.evaluation import CellWindow
from operators.rules.evaluators.cell_rule import CellRule, holds, too_few, verdict
from operators.rules.evaluators.reading import in_order, samples
from operators.rules.lifecycle import Dims, Evaluation, Outcome, dims_of

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
        out = []
        for cell in in_order(cells):
            key = dims_of(cell.dims)
            ring = self.state.rings.setdefault(key, [])
            out.append(self._judge(key, ring, cell, event_time))
            if cell.final:
                self._absorb(ring, cell)
        return out

    def _absorb(self, ring: list[Point], cell: CellWindow) -> None:
        if ring and cell.window_start <= ring[-1][0]:
            return  # a window already absorbed (a replay) or older
        value = cell.metrics.get(self.config.metric)
        n = samples(self.config.metric, cell.fields)
        if value is None or not math.isfinite(value) or n < max(self.config.min_samples, 1):
            return
        ring.append((cell.window_start, cell.window_end, value, n))
        del ring[: max(0, len(ring) - self.keep)]

    def _judge(self, key: Dims, ring: list[Point], cell: CellWindow, event_time: int) -> Evaluation:
        rule = self.config
        value = cell.metrics.get(rule.metric)
        n = samples(rule.metric, cell.fields)
        baseline = [p for p in ring if p[1] <= cell.window_start][-rule.baseline_windows :]
        base_n = sum(p[3] for p in baseline) if baseline else None
        if value is None or n < rule.min_samples:
            reason = too_few(rule.metric, value, n, rule.min_samples)
            return verdict(cell, event_time, Outcome.INCONCLUSIVE, reason, dims=key,
                           value=value, samples=n, baseline_samples=base_n)  # fmt: skip
        if not baseline or len(baseline) < rule.baseline_windows:
            reason = (
                f"{rule.metric} {value:.4g}: baseline has {len(baseline)} of "
                f"{rule.baseline_windows} windows"
            )
            return verdict(cell, event_time, Outcome.INCONCLUSIVE, reason, dims=key,
                           value=value, samples=n, baseline_samples=base_n)  # fmt: skip
        mean = sum(p[2] for p in baseline) / len(baseline)
        change = _relative_change(value, mean)
        up = rule.direction in ("up", "both") and change >= rule.change
        down = rule.direction in ("down", "both") and -change >= rule.change
        rising = rule.direction == "up" or (rule.direction == "both" and value >= mean)
        threshold = mean * (1 + rule.change) if rising else mean * (1 - rule.change)
        reason = (
            f"{rule.metric} {value:.4g} against a mean of {mean:.4g} over "
            f"{len(baseline)} windows: {change:+.1%} "
            f"({'beyond' if up or down else 'within'} {rule.change:.0%} {rule.direction})"
        )
        return verdict(cell, event_time, holds(up or down), reason, dims=key, value=value,
                       threshold=threshold, samples=n, baseline_samples=base_n)  # fmt: skip


def _relative_change(value: float, mean: float) -> float:
    if mean == 0:
        return 0.0 if value == 0 else math.copysign(math.inf, value)
    return (value - mean) / abs(mean)
