"""The threshold rule: `metric op value` on each selected cell, at every emission.

Early rows are evaluated like final ones (the lifecycle's `for` is measured on event
time, so a breach shows as soon as a window's running value crosses). A cell whose metric
has fewer than `min_samples` events behind it (its own denominator), or no value, is
inconclusive: a window with 3 labels says nothing about an accuracy floor.
"""

from __future__ import annotations

import numpy as np

from config.rules import ThresholdRule
from operators.rules.columns import CellBlock
from operators.rules.evaluators.cell_rule import ComparisonRule, known, too_few, verdict
from operators.rules.evaluators.reading import sample_label
from operators.rules.lifecycle import Evaluation, Outcome


class ThresholdEvaluator(ComparisonRule[ThresholdRule]):
    """Stateless: each cell's verdict depends on that cell's row only."""

    def quantity(self, block: CellBlock) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rule = self.config
        value = block.metric(rule.metric)
        n = block.samples(rule.metric)
        return value, n, ~np.isnan(value) & (n >= rule.min_samples)

    def record(
        self, block: CellBlock, i: int, event_time: int, outcome: Outcome, value: float, n: int
    ) -> Evaluation:
        rule = self.config
        if outcome is Outcome.INCONCLUSIVE:
            some = known(value)
            why = "no value" if some is None else "too few samples"
            reason = too_few(rule.metric, some, n, rule.min_samples, why)
            return verdict(block, i, event_time, outcome, reason, value=some,
                           threshold=rule.value, samples=n)  # fmt: skip
        detail = f"n={n} {sample_label(rule.metric)}"
        return self.compared(block, i, event_time, outcome, rule.metric, value, n, detail)
