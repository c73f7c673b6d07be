"""What a rule reads and how it is asked: one window × cell of an emission, and the
evaluator protocol every rule type implements.

The rules stage turns each merge-stage emission (early or final rows of the `metrics`
table) into :class:`CellWindow` records for the cells some rule selects, and hands them to
each rule's evaluator with the emission's event time (the watermark). An evaluator
returns :class:`~operators.rules.lifecycle.Evaluation` records (condition true, false
or inconclusive per dims); the :class:`~operators.rules.lifecycle.Lifecycle` turns those
into transitions. Rules never see SQL column names: metrics and additive fields are
named as in :mod:`operators.metrics`.

An evaluator's state (a canary's accumulated evidence, a drift reference) is plain
picklable data: the stage stores it in its versioned snapshot state.

A :class:`BlockEvaluator` (threshold, ratio, drift) also judges a whole
:class:`~operators.rules.columns.CellBlock` with numpy: :class:`BlockVerdicts` hold each
cell's outcome as a code, and build the full :class:`Evaluation` (reason, evidence) only
for the cells the stage asks for: those whose outcome can change their alert (an alert
exists, or the condition holds). Its per-cell `evaluate` goes through the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from operators.rules.lifecycle import Evaluation, Outcome

if TYPE_CHECKING:
    from operators.rules.columns import CellBlock

# Outcome codes of BlockVerdicts.outcomes (int8): OUTCOMES[code], or NOT_EVALUATED.
FALSE, TRUE, INCONCLUSIVE, NOT_EVALUATED = 0, 1, 2, -1
OUTCOMES = (Outcome.FALSE, Outcome.TRUE, Outcome.INCONCLUSIVE)


@dataclass(frozen=True, slots=True)
class CellWindow:
    """One window × dims cell of one emission."""

    window: str  # the configured window's name
    window_start: int  # epoch ms
    window_end: int
    final: bool  # the final row (no later row replaces it), or an early running value
    # tenant, model_id, deployment, model_version, segment, endpoint and the configured
    # extra dims; "*" where the cell is a rollup over that dim.
    dims: Mapping[str, str]
    # Additive fields (counts and sums: operators.metrics.MainLayout names, histogram bins
    # excluded): what sequential tests and denominators read.
    fields: Mapping[str, float]
    # Published metrics (operators.metrics.METRIC_COLUMNS names except the histogram);
    # None where the metric is null (its denominator is 0).
    metrics: Mapping[str, float | None]
    histogram: tuple[int, ...]  # confidence_hist: counts in equal bins over [0, 1]
    # The cell's id (WindowMetrics.cell_ids: one per distinct dims for the flow's life):
    # what rules with per-cell state key it by.
    cell_id: int


class Evaluator(Protocol):
    """One configured rule's evaluation logic (threshold, canary, drift, ratio, spike)."""

    @property
    def rule(self) -> str:
        """The rule's name."""
        ...

    def wants(self, dims: Mapping[str, str], window: str) -> bool:
        """Whether a cell of this window can matter to the rule, cell by cell. The stage
        does not ask it: it picks the same cells with numpy from the rule's
        :meth:`config.rules.RuleBase.cells_read` (:mod:`operators.rules.cell_windows`);
        this is that decision for one cell (tests, tools)."""
        ...

    def evaluate(self, cells: Sequence[CellWindow], event_time: int) -> list[Evaluation]:
        """The rule's verdicts for one emission: `cells` are the wanted cells of that
        emission (one window, early or final rows), `event_time` the watermark."""
        ...


@dataclass(frozen=True, slots=True)
class BlockVerdicts:
    """A rule's verdicts on the cells of one block."""

    outcomes: np.ndarray  # int8 per cell: FALSE, TRUE, INCONCLUSIVE or NOT_EVALUATED
    evaluation: Callable[[int], Evaluation]  # the full record of cell i (evaluated)

    def evaluations(self, which: np.ndarray | None = None) -> list[Evaluation]:
        """The records of the evaluated cells among `which` (positions; None: all)."""
        if which is None:
            which = np.flatnonzero(self.outcomes != NOT_EVALUATED)
        else:
            which = which[self.outcomes[which] != NOT_EVALUATED]
        return [self.evaluation(i) for i in which.tolist()]


@runtime_checkable
class BlockEvaluator(Evaluator, Protocol):
    """An evaluator that judges a block of cells at once (see the module docstring)."""

    def judge_block(self, block: CellBlock, event_time: int) -> BlockVerdicts:
        """The verdicts on `block` at `event_time`, updating the rule's state (a drift
        reference absorbs final rows) exactly as `evaluate` on the same cells would."""
        ...


@runtime_checkable
class SidesEvaluator(Evaluator, Protocol):
    """An evaluator that reads a block with each of its reads' masks (a canary's sides),
    the stage's numpy decision, instead of deciding each cell's side itself."""

    def evaluate_block(
        self, block: CellBlock, selected: Sequence[np.ndarray], event_time: int
    ) -> list[Evaluation]:
        """`evaluate` of the block's cells; `selected`: per read of
        :meth:`config.rules.RuleBase.cells_read` (in order), a mask over the block."""
        ...


@runtime_checkable
class Forgetting(Protocol):
    """An evaluator that keeps per-cell state and forgets expired cells (drift, spike):
    the stage calls it with the lifecycle's expiry, at the same event times in a run and
    its replay, so that state does not grow with dims churn."""

    def forget_expired(self, now: int) -> int:
        """Forget the cells expired at event time `now`; how many."""
        ...
