"""The threshold rule: `metric op value` on each selected cell, at every emission.

Early rows are evaluated like final ones (the lifecycle's `for` is measured on event
time, so a breach shows as soon as a window's running value crosses). A cell whose metric
has fewer than `min_samples` events behind it (its own denominator), or no value, is
inconclusive: a window with 3 labels says nothing about an accuracy floor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from config.rules import ThresholdRule
from operators.rules.evaluation import CellWindow
from operators.rules.evaluators.reading import (
    COMPARISONS,
    CellFilter,
    in_order,
    number,
    sample_label,
    samples,
)
from operators.rules.lifecycle import Evaluation, Outcome, dims_of


class ThresholdEvaluator:
    """Stateless: each cell's verdict depends on that cell's row only."""

    state = None  # nothing to snapshot

    def __init__(self, rule: ThresholdRule) -> None:
        self.config = rule
        self.cells = CellFilter(rule.window, rule.where)
        self.compare = COMPARISONS[rule.op]

    @property
    def rule(self) -> str:
        return self.config.name

    def wants(self, dims: Mapping[str, str], window: str) -> bool:
        return self.cells.wants(dims, window)

    def evaluate(self, cells: Sequence[CellWindow], event_time: int) -> list[Evaluation]:
        return [self.judge(cell, event_time) for cell in in_order(cells)]

    def judge(self, cell: CellWindow, event_time: int) -> Evaluation:
        rule = self.config
        value = cell.metrics.get(rule.metric)
        n = samples(rule.metric, cell.fields)
        if value is None or n < rule.min_samples:
            outcome = Outcome.INCONCLUSIVE
            why = "no value" if value is None else "too few samples"
            reason = (
                f"{rule.metric} {number(value)}: {why} "
                f"({n} {sample_label(rule.metric)}, needs {rule.min_samples})"
            )
        else:
            holds = self.compare(value, rule.value)
            outcome = Outcome.TRUE if holds else Outcome.FALSE
            reason = (
                f"{rule.metric} {value:.4g} {'' if holds else 'not '}{rule.op} {rule.value:g} "
                f"(n={n} {sample_label(rule.metric)})"
            )
        return Evaluation(
            dims=dims_of(cell.dims),
            outcome=outcome,
            event_time=event_time,
            window_start=cell.window_start,
            window_end=cell.window_end,
            value=value,
            threshold=rule.value,
            samples=n,
            reason=reason,
        )
