"""What every evaluator reads off a :class:`~operators.rules.evaluation.CellWindow`: the
cells of its window and selector, a metric with its own sample size, a comparison.

The sample size of a metric is its own denominator (:data:`operators.metrics.SAMPLE_FIELDS`:
accuracy → labeled_count, thumbs_down_rate → thumbs_up + thumbs_down, ctr →
impressions), read from the cell's additive fields, so `min_samples` means the same for
every rule type.

`evaluate` trusts its cells to be wanted (the stage picks them by the rule's selectors
with numpy, the same decision as `wants`): no second selector pass per cell and rule on
the stage's path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping

from operators.metrics import SAMPLE_FIELDS
from operators.rules.evaluation import CellWindow
from operators.rules.selectors import Pattern, selects_cell

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def samples(metric: str, fields: Mapping[str, float]) -> int:
    """The events `metric` is measured on in one cell (its own denominator)."""
    return int(sum(fields.get(name, 0.0) for name in SAMPLE_FIELDS[metric]))


def sample_label(metric: str) -> str:
    """How a reason names the sample: ``thumbs_up+thumbs_down``."""
    return "+".join(SAMPLE_FIELDS[metric])


def in_order(cells: Iterable[CellWindow]) -> list[CellWindow]:
    """Cells by window start, early before final: within one call a later window's
    verdict is the last one the lifecycle sees for the same dims."""
    return sorted(cells, key=lambda cell: (cell.window_start, cell.final))


class CellFilter:
    """One rule's window and selector over cells (the `where` semantics of
    :func:`operators.rules.selectors.selects_cell`)."""

    __slots__ = ("where", "window")

    def __init__(self, window: str, where: Mapping[str, Pattern]) -> None:
        self.window = window
        self.where = dict(where)

    def wants(self, dims: Mapping[str, str], window: str) -> bool:
        return window == self.window and selects_cell(self.where, dims)


def number(value: float | None) -> str:
    return "no value" if value is None else f"{value:.4g}"
