"""What the rule types that judge each selected cell on its own share (threshold, ratio,
spike, drift): the configured rule, its window and selector, and the verdict record.

Written once so that a rule type holds only its judgement: :class:`CellRule` gives the
`rule` name and `wants` of the :class:`~operators.rules.evaluation.Evaluator` protocol and
an `evaluate` that judges the cells in order; :func:`verdict` builds the
:class:`~operators.rules.lifecycle.Evaluation` of one cell. The canary compares pairs of
cells, not cells, and has its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from config.rules import RatioRule, RuleBase, ThresholdRule
from operators.rules.evaluation import CellWindow
from operators.rules.evaluators.reading import (
    COMPARISONS,
    CellFilter,
    in_order,
    number,
    sample_label,
)
from operators.rules.lifecycle import Dims, Evaluation, Outcome, dims_of

R = TypeVar("R", bound=RuleBase)
C = TypeVar("C", bound=ThresholdRule | RatioRule)


class CellRule(Generic[R]):
    """One configured rule read cell by cell; a subclass writes `judge` (or `evaluate`
    when it keeps state across a cell's windows)."""

    state: Any = None  # nothing to snapshot unless a subclass keeps some

    def __init__(self, rule: R) -> None:
        self.config = rule
        self.cells = CellFilter(rule.window, rule.where)

    @property
    def rule(self) -> str:
        return self.config.name

    def wants(self, dims: Mapping[str, str], window: str) -> bool:
        return self.cells.wants(dims, window)

    def evaluate(self, cells: Sequence[CellWindow], event_time: int) -> list[Evaluation]:
        return [self.judge(cell, event_time) for cell in in_order(cells)]

    def judge(self, cell: CellWindow, event_time: int) -> Evaluation:
        raise NotImplementedError(f"{type(self).__name__} judges in evaluate")


class ComparisonRule(CellRule[C]):
    """A rule whose condition is `quantity op value` on each cell (threshold, ratio)."""

    def __init__(self, rule: C) -> None:
        super().__init__(rule)
        self.compare = COMPARISONS[rule.op]

    def compared(
        self, cell: CellWindow, event_time: int, label: str, value: float, n: int, detail: str
    ) -> Evaluation:
        """The verdict on a quantity that has enough samples: `label` names it, `detail`
        says what it was measured on."""
        rule = self.config
        met = self.compare(value, rule.value)
        reason = f"{label} {value:.4g} {'' if met else 'not '}{rule.op} {rule.value:g} ({detail})"
        return verdict(cell, event_time, holds(met), reason, value=value,
                       threshold=rule.value, samples=n)  # fmt: skip


def verdict(
    cell: CellWindow,
    event_time: int,
    outcome: Outcome,
    reason: str,
    *,
    dims: Dims | None = None,
    value: float | None = None,
    threshold: float | None = None,
    samples: int = 0,
    baseline_samples: int | None = None,
    evidence: Mapping[str, Any] | None = None,
) -> Evaluation:
    """One cell's evaluation at `event_time` (its dims unless given, already sorted)."""
    return Evaluation(
        dims=dims_of(cell.dims) if dims is None else dims,
        outcome=outcome,
        event_time=event_time,
        window_start=cell.window_start,
        window_end=cell.window_end,
        value=value,
        threshold=threshold,
        samples=samples,
        baseline_samples=baseline_samples,
        reason=reason,
        evidence=evidence,
    )


def holds(condition: bool) -> Outcome:
    return Outcome.TRUE if condition else Outcome.FALSE


def too_few(metric: str, value: float | None, n: int, needs: int, why: str = "") -> str:
    """The reason of a cell whose metric has too few samples (or no value)."""
    why = why or "too few samples"
    return f"{metric} {number(value)}: {why} ({n} {sample_label(metric)}, needs {needs})"
