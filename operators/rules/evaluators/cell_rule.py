"""What the rule types that judge each selected cell on its own share (threshold, ratio,
spike, drift): the configured rule, its window and selector, and the verdict record;
and what the block rules share (threshold and ratio: `quantity op value`).

Written once so that a rule type holds only its judgement: :class:`CellRule` gives the
`rule` name and `wants` of the :class:`~operators.rules.evaluation.Evaluator` protocol and
an `evaluate` that judges the cells in order; :func:`verdict` builds the
:class:`~operators.rules.lifecycle.Evaluation` of one cell. The canary compares pairs of
cells, not cells, and has its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from config.rules import RatioRule, RuleBase, ThresholdRule
from operators.rules.columns import CellBlock, CellList
from operators.rules.evaluation import (
    FALSE,
    INCONCLUSIVE,
    OUTCOMES,
    TRUE,
    BlockEvaluator,
    BlockVerdicts,
    CellWindow,
)
from operators.rules.evaluators.reading import (
    COMPARISONS,
    CellFilter,
    in_order,
    number,
    sample_label,
)
from operators.rules.lifecycle import Dims, Evaluation, Outcome

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
    """A rule whose condition is `quantity op value` on each cell (threshold, ratio),
    judged a block at a time: :meth:`quantity` gives the arrays, :func:`compared_outcomes`
    the verdicts, :meth:`record` one cell's full evaluation (only for the cells asked)."""

    def __init__(self, rule: C) -> None:
        super().__init__(rule)
        self.compare = COMPARISONS[rule.op]

    def quantity(self, block: CellBlock) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(value, samples, known) per cell: known is False where the cell is
        inconclusive (no value, too few samples)."""
        raise NotImplementedError

    def record(
        self, block: CellBlock, i: int, event_time: int, outcome: Outcome, value: float, n: int
    ) -> Evaluation:
        """The evaluation of cell `i` of `block` whose verdict is `outcome` (`value`, `n`:
        its row of :meth:`quantity`)."""
        raise NotImplementedError

    def judge_block(self, block: CellBlock, event_time: int) -> BlockVerdicts:
        value, n, known = self.quantity(block)
        outcomes = compared_outcomes(self.compare, value, self.config.value, known)

        def evaluation(i: int) -> Evaluation:
            outcome = OUTCOMES[outcomes[i]]
            return self.record(block, i, event_time, outcome, float(value[i]), int(n[i]))

        return BlockVerdicts(outcomes, evaluation)

    def evaluate(self, cells: Sequence[CellWindow], event_time: int) -> list[Evaluation]:
        return evaluate_blocks(self, cells, event_time)

    def compared(
        self, block: CellBlock, i: int, event_time: int, outcome: Outcome, label: str,
        value: float, n: int, detail: str,
    ) -> Evaluation:  # fmt: skip
        """The record of a cell with enough samples: `label` names the quantity, `detail`
        says what it was measured on."""
        rule = self.config
        met = outcome is Outcome.TRUE
        reason = f"{label} {value:.4g} {'' if met else 'not '}{rule.op} {rule.value:g} ({detail})"
        return verdict(block, i, event_time, outcome, reason, value=value,
                       threshold=rule.value, samples=n)  # fmt: skip


def compared_outcomes(
    compare: Callable[[Any, Any], Any], value: np.ndarray, limit: float, known: np.ndarray
) -> np.ndarray:
    """The one definition of a comparison rule's verdict, per cell: INCONCLUSIVE where not
    known, else TRUE where `value op limit` holds, FALSE where it does not."""
    with np.errstate(invalid="ignore"):
        met = np.asarray(compare(value, limit), dtype=bool)
    return np.where(known, np.where(met, TRUE, FALSE), INCONCLUSIVE).astype(np.int8)


def evaluate_blocks(
    evaluator: BlockEvaluator, cells: Sequence[CellWindow], event_time: int
) -> list[Evaluation]:
    """The per-cell `evaluate` of a block rule: the cells in order (:func:`in_order`), one
    block per run of the same window, start and finality, judged as the stage judges."""
    out: list[Evaluation] = []
    for block in CellList.runs(in_order(cells)):
        out.extend(evaluator.judge_block(block, event_time).evaluations())
    return out


def verdict(
    block: CellBlock,
    i: int,
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
    """Cell `i` of `block`'s evaluation at `event_time` (its dims unless given). Read off
    the block, never a :class:`CellWindow` record: the stage builds none for its blocks."""
    return Evaluation(
        dims=block.keys[i] if dims is None else dims,
        outcome=outcome,
        event_time=event_time,
        window_start=block.window_start,
        window_end=block.window_end,
        value=value,
        threshold=threshold,
        samples=samples,
        baseline_samples=baseline_samples,
        reason=reason,
        evidence=evidence,
    )


def known(value: float) -> float | None:
    """A metric read off a block column as a record holds it: None for NaN (no value)."""
    return None if value != value else value


def holds(condition: bool) -> Outcome:
    return Outcome.TRUE if condition else Outcome.FALSE


def too_few(metric: str, value: float | None, n: int, needs: int, why: str = "") -> str:
    """The reason of a cell whose metric has too few samples (or no value)."""
    why = why or "too few samples"
    return f"{metric} {number(value)}: {why} ({n} {sample_label(metric)}, needs {needs})"
