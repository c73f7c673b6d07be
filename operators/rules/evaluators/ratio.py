"""The ratio rule: numerator / denominator × scale `op` value on each selected cell (the
fraud example: report amount per $100k of volume above 0.5).

Both operands are published metrics of the same cell. An inference attribute's sum as
an operand is refused at config time (nothing aggregates attribute sums yet:
:class:`config.rules.Quantity`). The sample size is the denominator metric's own
(:data:`operators.metrics.SAMPLE_FIELDS`); a zero or missing denominator is inconclusive.
"""

from __future__ import annotations

from config.rules import RatioRule
from operators.rules.evaluation import CellWindow
from operators.rules.evaluators.cell_rule import ComparisonRule, verdict
from operators.rules.evaluators.reading import number, sample_label, samples
from operators.rules.lifecycle import Evaluation, Outcome


class RatioEvaluator(ComparisonRule[RatioRule]):
    """Stateless: each cell's verdict depends on that cell's row only."""

    def __init__(self, rule: RatioRule) -> None:
        if rule.numerator.metric is None or rule.denominator.metric is None:
            raise ValueError(f"rule {rule.name}: a ratio of attribute sums is not supported")
        super().__init__(rule)
        self.numerator: str = rule.numerator.metric
        self.denominator: str = rule.denominator.metric

    def judge(self, cell: CellWindow, event_time: int) -> Evaluation:
        rule = self.config
        num = cell.metrics.get(self.numerator)
        den = cell.metrics.get(self.denominator)
        n = samples(self.denominator, cell.fields)
        label = f"{self.numerator} / {self.denominator} × {rule.scale:g}"
        if num is None or not den or n < rule.min_samples:
            reason = (
                f"{label}: {self.numerator} {number(num)}, {self.denominator} {number(den)} "
                f"({n} {sample_label(self.denominator)}, needs {max(rule.min_samples, 1)})"
            )
            return verdict(cell, event_time, Outcome.INCONCLUSIVE, reason,
                           threshold=rule.value, samples=n)  # fmt: skip
        value = num / den * rule.scale
        detail = f"{self.numerator} {num:.4g}, {self.denominator} {den:.4g}"
        return self.compared(cell, event_time, f"{label} =", value, n, detail)
