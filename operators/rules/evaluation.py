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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from operators.rules.lifecycle import Evaluation


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
