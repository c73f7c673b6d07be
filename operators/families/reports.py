"""The ``reports`` family: fraud/abuse reports (count, amount sum); key = category.

The amount is the feedback's number (:func:`operators.metrics.feedback_numbers`: the
report's amount on the exact-sum grid, 0 when none)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators.batches import Categorical
from operators.columnar.joined import JoinedColumns
from operators.families.base import Update

REPORTS = "reports"
REPORT_COUNT, REPORT_AMOUNT = 0, 1


@dataclass(frozen=True)
class ReportsFamily:
    name: str = REPORTS
    key: str = "category"
    width: int = 2
    table: str | None = "metrics_reports"

    def updates(self, batch: JoinedColumns) -> Iterator[Update]:
        feedback = batch.feedback
        rows = np.flatnonzero(feedback.categories >= 0)
        if not len(rows):
            return
        values = np.zeros((len(rows), 2))
        values[:, REPORT_COUNT] = 1.0
        values[:, REPORT_AMOUNT] = feedback.numbers[rows]
        yield Update(
            feedback.slices[rows], feedback.cutoffs[rows], feedback.cells[rows],
            feedback.categories[rows], values,
        )  # fmt: skip

    def cell_metrics(
        self, keys: np.ndarray, values: np.ndarray, cells: np.ndarray
    ) -> dict[str, np.ndarray]:
        return {}

    def key_columns(self, ids: np.ndarray, values: list[Any]) -> dict[str, Any]:
        return {"category": Categorical(ids, values)}

    def metrics(self, values: np.ndarray, seconds: np.ndarray) -> dict[str, np.ndarray]:
        return report_metrics(values)


def report_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    return {"report_count": counts[:, REPORT_COUNT], "report_amount_sum": counts[:, REPORT_AMOUNT]}
