"""The threshold rule: `metric op value` on each selected cell, at every emission.

Early rows are evaluated like final ones (the lifecycle's `for` is measured on event
time, so a breach shows as soon as a window's running value crosses). A cell whose metric
has fewer than `min_samples` events behind it (its own denominator), or no value, is
inconclusive: a window with 3 labels says nothing about an accuracy floor.
"""

from __future__ import annotations

from config.rules import ThresholdRule
from operators.rules.evaluation import CellWindow
from operators.rules.evaluators.cell_rule import ComparisonRule, too_few, verdict
from operators.rules.evaluators.reading import sample_label, samples
from operators.rules.lifecycle import Evaluation, Outcome


class ThresholdEvaluator(ComparisonRule[ThresholdRule]):
    """Stateless: each cell's verdict depends on that cell's row only."""

    def judge(self, cell: CellWindow, event_time: int) -> Evaluation:
        rule = self.config
        value = cell.metrics.get(rule.metric)
        n = samples(rule.metric, cell.fields)
        if value is None or n < rule.min_samples:
            why = "no value" if value is None else "too few samples"
            reason = too_few(rule.metric, value, n, rule.min_samples, why)
            return verdict(cell, event_time, Outcome.INCONCLUSIVE, reason, value=value,
                           threshold=rule.value, samples=n)  # fmt: skip
        detail = f"n={n} {sample_label(rule.metric)}"
        return self.compared(cell, event_time, rule.metric, value, n, detail)
