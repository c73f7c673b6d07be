"""The ratio rule: numerator / denominator × scale `op` value on each selected cell (the
fraud example: report amount per $100k of volume above 0.5).

Both operands are published metrics of the same cell. An inference attribute's sum as
an operand is refused at config time (nothing aggregates attribute sums yet:
:class:`config.rules.Quantity`). The sample size is the denominator metric's own
(:data:`operators.metrics.SAMPLE_FIELDS`); a zero or missing denominator is inconclusive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from config.rules import RatioRule
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


class RatioEvaluator:
    """Stateless: each cell's verdict depends on that cell's row only."""

    state = None  # nothing to snapshot

    def __init__(self, rule: RatioRule) -> None:
        if rule.numerator.metric is None or rule.denominator.metric is None:
            raise ValueError(f"rule {rule.name}: a ratio of attribute sums is not supported")
        self.config = rule
        self.numerator: str = rule.numerator.metric
        self.denominator: str = rule.denominator.metric
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
        num = cell.metrics.get(self.numerator)
        den = cell.metrics.get(self.denominator)
        n = samples(self.denominator, cell.fields)
        label = f"{self.numerator} / {self.denominator} × {rule.scale:g}"
        value = None
        if num is None or not den or n < rule.min_samples:
            outcome = Outcome.INCONCLUSIVE
            reason = (
                f"{label}: {self.numerator} {number(num)}, {self.denominator} {number(den)} "
                f"({n} {sample_label(self.denominator)}, needs {max(rule.min_samples, 1)})"
            )
        else:
            value = num / den * rule.scale
            holds = self.compare(value, rule.value)
            outcome = Outcome.TRUE if holds else Outcome.FALSE
            reason = (
                f"{label} = {value:.4g} {'' if holds else 'not '}{rule.op} {rule.value:g} "
                f"({self.numerator} {num:.4g}, {self.denominator} {den:.4g})"
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
