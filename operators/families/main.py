"""The ``main`` family: the catalogue's counters and sums (:mod:`operators.metrics`).

No extra key: one vector per cell, the ``metrics`` table's row. Its fields and their
published metrics are defined in :mod:`operators.metrics`; this object applies them. Its
updates carry the fields as sparse :class:`~operators.field_entries.Entries` (most are 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators.columnar.joined import JoinedColumns
from operators.families.base import Update, no_key
from operators.metrics import (
    HISTOGRAM_METRIC,
    MainLayout,
    derive,
    feedback_entries,
    inference_entries,
)

MAIN = "main"


@dataclass(frozen=True)
class MainFamily:
    """Counters and sums per cell; its width follows the confidence histogram's bins."""

    layout: MainLayout
    name: str = MAIN
    key: str = ""
    table: str | None = "metrics"

    @property
    def width(self) -> int:
        return self.layout.width

    def updates(self, batch: JoinedColumns) -> Iterator[Update]:
        inferences, feedback = batch.inferences, batch.feedback
        if len(inferences):
            fields = inference_entries(
                inferences.confidence, self.width, self.layout.confidence_bins
            )
            yield Update(
                inferences.slices, inferences.cutoffs, inferences.cells,
                no_key(len(inferences)), fields,
            )  # fmt: skip
        if len(feedback):
            fields = feedback_entries(
                feedback.kinds, feedback.numbers, feedback.correct, feedback.unjoined, self.width
            )
            yield Update(
                feedback.slices, feedback.cutoffs, feedback.cells, no_key(len(feedback)), fields
            )

    def cell_metrics(
        self, keys: np.ndarray, values: np.ndarray, cells: np.ndarray
    ) -> dict[str, np.ndarray]:
        return {}  # its vector is the row itself: see metrics()

    def key_columns(self, ids: np.ndarray, values: list[Any]) -> dict[str, Any]:
        return {}

    def metrics(self, values: np.ndarray, seconds: np.ndarray) -> dict[str, np.ndarray]:
        first_bin = self.layout.first_bin
        return {
            **derive(values, seconds),
            HISTOGRAM_METRIC: values[:, first_bin : first_bin + self.layout.confidence_bins],
        }
