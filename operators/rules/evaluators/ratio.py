"""The ratio rule: numerator / denominator × scale `op` value on each selected cell (the
fraud example: report amount per $100k of volume above 0.5).

Both operands are published metrics of the same cell. An inference attribute's sum as
an operand is refused at config time (nothing aggregates attribute sums yet:
:class:`config.rules.Quantity`). The sample size is the denominator metric's own
(:data:`operators.metrics.SAMPLE_FIELDS`); a zero or missing denominator is inconclusive.
"""

from __future__ import annotations

import numpy as np

from config.rules import RatioRule
from operators.rules.columns import CellBlock
from operators.rules.evaluators.cell_rule import ComparisonRule, known, verdict
from operators.rules.evaluators.reading import number, sample_label
from operators.rules.lifecycle import Evaluation, Outcome


class RatioEvaluator(ComparisonRule[RatioRule]):
    """Stateless: each cell's verdict depends on that cell's row only."""

    def __init__(self, rule: RatioRule) -> None:
        if rule.numerator.metric is None or rule.denominator.metric is None:
            raise ValueError(f"rule {rule.name}: a ratio of attribute sums is not supported")
        super().__init__(rule)
        self.numerator: str = rule.numerator.metric
        self.denominator: str = rule.denominator.metric

    @property
    def label(self) -> str:
        return f"{self.numerator} / {self.denominator} × {self.config.scale:g}"

    def quantity(self, block: CellBlock) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rule = self.config
        num = block.metric(self.numerator)
        den = block.metric(self.denominator)
        n = block.samples(self.denominator)
        known = ~np.isnan(num) & ~np.isnan(den) & (den != 0) & (n >= rule.min_samples)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = num / den * rule.scale
        return value, n, known

    def record(
        self, block: CellBlock, i: int, event_time: int, outcome: Outcome, value: float, n: int
    ) -> Evaluation:
        rule = self.config
        num = known(float(block.metric(self.numerator)[i]))
        den = known(float(block.metric(self.denominator)[i]))
        if outcome is Outcome.INCONCLUSIVE:
            reason = (
                f"{self.label}: {self.numerator} {number(num)}, {self.denominator} "
                f"{number(den)} ({n} {sample_label(self.denominator)}, needs "
                f"{max(rule.min_samples, 1)})"
            )
            return verdict(block, i, event_time, outcome, reason, threshold=rule.value,
                           samples=n)  # fmt: skip
        assert num is not None and den is not None
        detail = f"{self.numerator} {num:.4g}, {self.denominator} {den:.4g}"
        return self.compared(block, i, event_time, outcome, f"{self.label} =", value, n, detail)
