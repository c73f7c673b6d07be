"""The rule evaluators: one module per rule type, built from the configured rule.

:func:`evaluator_for` is the one place a configured rule becomes its
:class:`~operators.rules.evaluation.Evaluator`. Stateful evaluators (canary, drift,
spike) keep their state in a ``state`` attribute of plain picklable data; pass it back
as ``state=`` to resume from a snapshot (the evaluator pickles whole as well).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from config.rules import CanaryRule, RatioRule, ThresholdRule
from operators.rules.evaluation import Evaluator
from operators.rules.evaluators.threshold import ThresholdEvaluator

if TYPE_CHECKING:
    from config.rules import RuleBase
    from config.settings import Settings


def evaluator_for(rule: RuleBase, settings: Settings, state: Any = None) -> Evaluator:
    """The evaluator of one configured rule (`state`: a snapshot's, or None to start)."""
    if isinstance(rule, ThresholdRule):
        return ThresholdEvaluator(rule)
    if isinstance(rule, RatioRule):
        from operators.rules.evaluators.ratio import RatioEvaluator

        return RatioEvaluator(rule)
    if isinstance(rule, CanaryRule):
        from operators.rules.evaluators.canary import CanaryEvaluator

        return CanaryEvaluator(rule, settings.aggregation.grouping_set_tuples(), state)
    raise TypeError(f"no evaluator for rule {rule.name!r} of type {type(rule).__name__}")


__all__ = ["ThresholdEvaluator", "evaluator_for"]
