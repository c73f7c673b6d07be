"""The ``classes`` family: confusion counts (tp, fp, fn) of categorical labels; key = class.

A label joined to a prediction, both categorical (strings or integers), counts a tp of
its class when they are equal, else an fn of the label's class and an fp of the
predicted one. Its table holds per-class precision, recall and F1; each cell's
``metrics`` row gets the macro F1 over the classes seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators.batches import Categorical
from operators.cells import EXTRA_KEY_BITS
from operators.columnar.joined import JoinedColumns
from operators.families.base import Update
from operators.metrics import MACRO_F1, ratio

CLASSES = "classes"
TP, FP, FN = 0, 1, 2


@dataclass(frozen=True)
class ClassesFamily:
    name: str = CLASSES
    key: str = "class"
    width: int = 3
    table: str | None = "metrics_classes"

    def updates(self, batch: JoinedColumns) -> Iterator[Update]:
        feedback = batch.feedback
        rows = np.flatnonzero(feedback.class_true >= 0)
        if not len(rows):
            return
        true, predicted = feedback.class_true[rows], feedback.class_predicted[rows]
        hit = true == predicted
        # A hit is a tp of its class; a miss an fn of the true class and fp of the other.
        keys = np.concatenate((true, predicted[~hit]))
        values = np.zeros((len(keys), 3))
        values[: len(true), TP] = hit
        values[: len(true), FN] = ~hit
        values[len(true) :, FP] = 1.0
        rows = np.concatenate((rows, rows[~hit]))
        yield Update(
            feedback.slices[rows], feedback.cutoffs[rows], feedback.cells[rows], keys, values
        )

    def cell_metrics(
        self, keys: np.ndarray, values: np.ndarray, cells: np.ndarray
    ) -> dict[str, np.ndarray]:
        return {MACRO_F1: macro_f1(keys >> EXTRA_KEY_BITS, values, cells)}

    def key_columns(self, ids: np.ndarray, values: list[Any]) -> dict[str, Any]:
        return {"class": Categorical(ids, values)}

    def metrics(self, values: np.ndarray, seconds: np.ndarray) -> dict[str, np.ndarray]:
        return class_metrics(values)


def class_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per class: precision tp/(tp+fp), recall tp/(tp+fn), F1 2tp/(2tp+fp+fn)."""
    tp, fp, fn = counts[:, TP], counts[:, FP], counts[:, FN]
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": tp + fn,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


def macro_f1(cell_of_row: np.ndarray, counts: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes seen (tp + fp + fn > 0) of each cell; NaN for none.

    `cell_of_row[i]` is the cell of class row i; `cells` are the cells to report (sorted).
    """
    f1 = ratio(2 * counts[:, TP], 2 * counts[:, TP] + counts[:, FP] + counts[:, FN])
    seen = ~np.isnan(f1)
    f1, position = f1[seen], np.searchsorted(cells, cell_of_row[seen])
    inside = position < len(cells)
    inside[inside] = cells[position[inside]] == cell_of_row[seen][inside]
    f1, position = f1[inside], position[inside]
    # Class rows follow arrival order, which a restart may change; summing each cell's F1s
    # in ascending order makes the float total independent of it.
    order = np.lexsort((f1, position))
    total = np.bincount(position[order], weights=f1[order], minlength=len(cells))
    number = np.bincount(position, minlength=len(cells))
    return ratio(total, number.astype(np.float64))
