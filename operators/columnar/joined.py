"""One batch's counted events as columns: what every metric family reads to update itself.

The partition stage decides, per event, whether it counts (deduplicated, joined or given
up on, not late for every window containing it) and with which *cutoff*: ``NO_CUTOFF``
when on time, else the emitted watermark it was late against
(:mod:`operators.slices`). What it counts then travels as these columns, one row per
counted inference and one per counted feedback, and the families
(:mod:`operators.families`) turn them into slice deltas in bulk. Columns rather than a
record per event, so the families' rules run once per batch, on time or late alike.

:class:`JoinedRecords` collects the rows as plain lists for today's row-wise stage;
:meth:`JoinedRecords.take` turns them into :class:`JoinedColumns`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

NONE = -1  # a keyed family's id column where the event has no key of that family


@dataclass(slots=True)
class InferenceSide:
    """Counted inferences: row i is one inference."""

    slices: np.ndarray  # int64 slice start (ms)
    cells: np.ndarray  # int64 partition-local cell id
    confidence: np.ndarray  # float64, NaN when absent
    latency: np.ndarray  # float64 ms, NaN when absent
    cutoffs: np.ndarray  # float64, NO_CUTOFF when on time

    def __len__(self) -> int:
        return len(self.slices)


@dataclass(slots=True)
class FeedbackSide:
    """Counted feedback: row i is one feedback event, joined or given up on.

    `numbers` is :func:`operators.metrics.feedback_numbers` (a report's amount for a
    report). Keyed columns hold ``NONE`` where the event has no key of that family:
    `class_true`/`class_predicted` for categorical labels joined to a prediction,
    `pairs` + `winners` (:data:`operators.families.WINNER_CODES`) for preferences,
    `categories` for reports.
    """

    slices: np.ndarray  # int64
    cells: np.ndarray  # int64
    kinds: np.ndarray  # int64 operators.metrics.KIND_CODES
    numbers: np.ndarray  # float64
    correct: np.ndarray  # bool: a label equal to its prediction
    unjoined: np.ndarray  # bool: gave up waiting for its inference
    class_true: np.ndarray  # int64 class id of the label
    class_predicted: np.ndarray  # int64 class id of the prediction
    pairs: np.ndarray  # int64 policy pair id
    winners: np.ndarray  # int64 winner code (0 where no pair)
    categories: np.ndarray  # int64 report category id
    cutoffs: np.ndarray  # float64, NO_CUTOFF when on time

    def __len__(self) -> int:
        return len(self.slices)


@dataclass(slots=True)
class JoinedColumns:
    """One batch's counted inferences and feedback."""

    inferences: InferenceSide
    feedback: FeedbackSide


@dataclass
class JoinedRecords:
    """Counted events of the batch being processed, as lists the hot path appends to."""

    inference_slices: list[int] = field(default_factory=list)
    inference_cells: list[int] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    latencies: list[float | None] = field(default_factory=list)
    inference_cutoffs: list[float] = field(default_factory=list)
    feedback_slices: list[int] = field(default_factory=list)
    feedback_cells: list[int] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    numbers: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    unjoined: list[bool] = field(default_factory=list)
    feedback_cutoffs: list[float] = field(default_factory=list)
    # Only feedback rows with a key of a keyed family (most have none):
    # (row, true, predicted, pair, winner, category), NONE where absent.
    keyed: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.inference_slices or self.feedback_slices)

    def take(self) -> JoinedColumns:
        """The rows as columns, leaving these lists empty."""
        inferences = InferenceSide(
            _same_or(self.inference_slices, np.int64),
            _ints(self.inference_cells),
            np.array(self.confidences, dtype=np.float64),  # None -> NaN
            np.array(self.latencies, dtype=np.float64),
            _same_or(self.inference_cutoffs, np.float64),
        )
        n = len(self.feedback_slices)
        keys = np.full((5, n), NONE, dtype=np.int64)
        keys[3] = 0  # winner code where there is no pair
        if self.keyed:
            width = len(self.keyed[0])
            flat = chain.from_iterable(self.keyed)
            keyed = np.fromiter(flat, np.int64, len(self.keyed) * width).reshape(-1, width)
            keys[:, keyed[:, 0]] = keyed[:, 1:].T
        feedback = FeedbackSide(
            _same_or(self.feedback_slices, np.int64),
            _ints(self.feedback_cells),
            _ints(self.kinds),
            np.fromiter(self.numbers, np.float64, n),
            np.fromiter(self.correct, np.bool_, n),
            np.fromiter(self.unjoined, np.bool_, n),
            keys[0], keys[1], keys[2], keys[3], keys[4],
            _same_or(self.feedback_cutoffs, np.float64),
        )  # fmt: skip
        for name in self.__dataclass_fields__:
            getattr(self, name).clear()
        return JoinedColumns(inferences, feedback)


# Python lists to arrays: np.fromiter with a count, and np.full for a column of one value
# (most batches' slices and cutoffs), cost less than np.array's discovery of the shape.


def _ints(values: list[int]) -> np.ndarray:
    return np.fromiter(values, np.int64, len(values))


def _same_or(values: list[Any], dtype: type[np.generic]) -> np.ndarray:
    if values and values.count(values[0]) == len(values):
        return np.full(len(values), values[0], dtype=dtype)
    return np.fromiter(values, dtype, len(values))
