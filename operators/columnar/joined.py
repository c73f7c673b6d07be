"""One batch's counted events as columns: what every metric family reads to update itself.

The partition stage decides, per event, whether it counts (deduplicated, joined or given
up on, not late for every window containing it) and with which *cutoff*: ``NO_CUTOFF``
when on time, else the emitted watermark it was late against
(:mod:`operators.slices`). What it counts then travels as these columns, one row per
counted inference and one per counted feedback, and the families
(:mod:`operators.families`) turn them into slice deltas in bulk. Columns rather than a
record per event, so the families' rules run once per batch, on time or late alike.

:class:`JoinedRecords` collects the stage's columns call by call;
:meth:`JoinedRecords.take` joins them into one :class:`JoinedColumns`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

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

    DTYPES: ClassVar = (np.int64, np.int64, np.float64, np.float64, np.float64)

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

    DTYPES: ClassVar = (np.int64, np.int64, np.int64, np.float64, np.bool_, np.bool_,
                        np.int64, np.int64, np.int64, np.int64, np.int64, np.float64)  # fmt: skip

    def __len__(self) -> int:
        return len(self.slices)


@dataclass(slots=True)
class JoinedColumns:
    """One batch's counted inferences and feedback."""

    inferences: InferenceSide
    feedback: FeedbackSide


@dataclass
class JoinedRecords:
    """Counted events of the batch being processed: the columns of each call that
    counted some, joined at :meth:`take` (no Python value per event and column)."""

    inferences: list[InferenceSide] = field(default_factory=list)
    feedback: list[FeedbackSide] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.inferences or self.feedback)

    def take(self) -> JoinedColumns:
        """The rows as one set of columns, leaving these lists empty."""
        joined = JoinedColumns(
            InferenceSide(*_joined(self.inferences or [_empty(InferenceSide)])),
            FeedbackSide(*_joined(self.feedback or [_empty(FeedbackSide)])),
        )
        self.inferences, self.feedback = [], []
        return joined


def _empty(side: type[Any]) -> Any:
    """A side of no rows, each column of its type."""
    return side(*(np.empty(0, dtype) for dtype in side.DTYPES))


def _joined(parts: list[Any]) -> list[np.ndarray]:
    """Each field of `parts` (sides of the same kind) concatenated."""
    if len(parts) == 1:
        return [getattr(parts[0], f.name) for f in fields(parts[0])]
    return [np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(parts[0])]
