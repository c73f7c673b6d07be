"""The rule evaluators: one module per rule type, built from the configured rule.

:func:`evaluator_for` is the one place a configured rule becomes its
:class:`~operators.rules.evaluation.Evaluator`. Stateful evaluators (canary, drift,
spike) keep their state in a ``state`` attribute of plain picklable data (None for the
stateless threshold and ratio); pass it back as ``state=`` to resume from a snapshot
(the evaluator pickles whole as well). Settings give what the rule alone does not: the
histogram's bins, a sliding window's overlap (a spike's baseline), how long a drift or
spike rule remembers a cell that stopped appearing (`alerting.resolved_retention` past
the span of its reference or baseline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from config.rules import CanaryRule, DriftRule, RatioRule, SpikeRule, ThresholdRule
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
    if isinstance(rule, SpikeRule):
        from operators.rules.evaluators.spike import SpikeEvaluator

        return SpikeEvaluator(
            rule, _overlapping(settings, rule.window), state, settings.alerting.resolved_retention
        )
    if isinstance(rule, CanaryRule):
        from operators.rules.evaluators.canary import CanaryEvaluator

        return CanaryEvaluator(rule, state)
    if isinstance(rule, DriftRule):
        from operators.rules.evaluators.drift import DriftEvaluator

        return DriftEvaluator(
            rule, settings.aggregation.confidence_bins, state, settings.alerting.resolved_retention
        )
    raise TypeError(f"no evaluator for rule {rule.name!r} of type {type(rule).__name__}")


def _overlapping(settings: Settings, name: str) -> int:
    """How many consecutive windows of `name` share events: ceil(length / slide)."""
    window = next(w for w in settings.windows if w.name == name)
    if window.kind != "sliding" or not window.length or not window.slide:
        return 1
    return -(-window.length // window.slide)


__all__ = ["ThresholdEvaluator", "evaluator_for"]
