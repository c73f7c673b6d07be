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

    `numbers` is :func:`operators.metrics.feedback_number` (a report's amount for a
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
            np.array(self.inference_slices, dtype=np.int64),
            np.array(self.inference_cells, dtype=np.int64),
            np.array(self.confidences, dtype=np.float64),  # None -> NaN
            np.array(self.latencies, dtype=np.float64),
            np.array(self.inference_cutoffs, dtype=np.float64),
        )
        keys = np.full((5, len(self.feedback_slices)), NONE, dtype=np.int64)
        keys[3] = 0  # winner code where there is no pair
        if self.keyed:
            keyed = np.array(self.keyed, dtype=np.int64)
            keys[:, keyed[:, 0]] = keyed[:, 1:].T
        feedback = FeedbackSide(
            np.array(self.feedback_slices, dtype=np.int64),
            np.array(self.feedback_cells, dtype=np.int64),
            np.array(self.kinds, dtype=np.int64),
            np.array(self.numbers, dtype=np.float64),
            np.array(self.correct, dtype=np.bool_),
            np.array(self.unjoined, dtype=np.bool_),
            keys[0], keys[1], keys[2], keys[3], keys[4],
            np.array(self.feedback_cutoffs, dtype=np.float64),
        )  # fmt: skip
        for name in self.__dataclass_fields__:
            getattr(self, name).clear()
        return JoinedColumns(inferences, feedback)
