"""Rows for the raw tables: `inferences`, `events`, `dead_letters`, `metrics_late`.

Column names match `connectors/migrations`; timestamps are epoch ms. Builders keep what
the stage hands over (whole lists, or one tuple per row where it works one event at a
time) and build the columns once per batch (a comprehension per event field, C-level
maps and transpositions for the rest); the
dims of `inferences` and `events` are dictionary codes of cell ids
(:class:`~operators.cells.CellDims`), as the merge stage's `metrics` rows are.
Every row carries the deterministic key that makes a replay harmless: `inferences` by
request_id (first wins: ``version`` falls with the source offset), `events` by event_id,
`dead_letters` by source position, `metrics_late` by (window, cell, event).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from operators.batches import Categorical, DeadLetter, TableRows
from operators.cells import BASE_DIMS, Cell, format_extra_dims
from operators.columnar.join_buffer import InferenceColumns
from operators.events import Feedback, Inference
from operators.metrics import as_label

_encode = msgspec.json.encode
MAX_VERSION = (1 << 63) - 1

# Cell ids -> the dims columns of those cells (:meth:`operators.cells.CellDims.columns`).
DimColumns = Callable[[np.ndarray], dict[str, Categorical]]
_UINT8 = {None: None, True: 1, False: 0}  # a Nullable(UInt8) from a bool or None
DEAD_LETTER_RAW_LIMIT = 1 << 20  # raw payloads above this are stored truncated


class InferenceRows:
    """Inferences: the stage hands over whole lists per sequence (its accepted inferences,
    their labels, cell ids, offsets and lateness); the columns are built at `take()`, by
    C-level maps and one transposition rather than a tuple or a value per event and
    column, the dims as dictionary codes of the cell ids."""

    __slots__ = ("cells", "events", "labels", "late", "offsets")

    def __init__(self) -> None:
        self.events: list[Inference] = []
        self.labels: list[str | None] = []  # the prediction as labels compare to it
        self.cells: list[int] = []
        self.offsets: list[int] = []
        self.late: list[bool] = []

    def extend(
        self,
        events: list[Inference],
        labels: list[str | None],
        cells: list[int],
        offsets: list[int],
        late: list[bool],
    ) -> None:
        self.events += events
        self.labels += labels
        self.cells += cells
        self.offsets += offsets
        self.late += late

    def take(self, partition: int, dims: DimColumns) -> TableRows | None:
        events = self.events
        if not events:
            return None
        # A comprehension per field: on msgspec Structs, ~2x faster than an attribute
        # getter map, and than astuple + a transposition at batches of thousands.
        request_id = [e.request_id for e in events]
        ts = [e.ts for e in events]
        confidence = [e.confidence for e in events]
        latency = [e.latency_ms for e in events]
        attributes = [e.attributes for e in events]
        offsets = np.array(self.offsets, dtype=np.uint64)
        columns: dict[str, Any] = {"request_id": request_id, "ts": ts}
        columns.update(dims(np.array(self.cells, dtype=np.int64)))
        columns.update(
            {
                "prediction": self.labels,
                "confidence": confidence,
                "latency_ms": latency,
                "attributes": attributes,
                "late": np.array(self.late, dtype=np.uint8),
                "source_partition": np.full(len(events), partition, dtype=np.uint32),
                "source_offset": offsets,
                "version": np.uint64(MAX_VERSION) - offsets,
            }
        )
        self.__init__()  # type: ignore[misc]
        return TableRows("inferences", columns)


def _value_num(kind: str, value: Any) -> float | None:
    if kind in ("rating", "reward", "dwell"):
        return float(value)
    if kind in ("thumbs", "click", "conversion"):
        return 1.0 if value else 0.0
    if kind == "label" and not isinstance(value, str):
        return float(value)
    if kind == "report":
        amount = value.get("amount")
        return None if amount is None else float(amount)
    return None


def _label(kind: str, value: Any) -> str | None:
    return as_label(value) if kind == "label" else None


class EventRows:
    """Enriched feedback: the event, joined to its inference's fields. The stage hands
    over what it counts as columns (:meth:`extend`); the table's columns are built at
    `take()`, as for InferenceRows. A missing confidence or latency is None, not NaN."""

    __slots__ = ("cells", "confidences", "correct", "events", "inference_ts", "joined",
                 "late", "latencies", "offsets", "predictions")  # fmt: skip

    def __init__(self) -> None:
        self.events: list[Feedback] = []
        self.inference_ts: list[int | None] = []
        self.predictions: list[str | None] = []
        self.confidences: list[float | None] = []
        self.latencies: list[float | None] = []
        self.cells: list[int] = []
        self.offsets: list[int] = []
        self.late: list[bool] = []
        self.correct: list[bool | None] = []
        self.joined: list[bool] = []

    def extend(
        self,
        events: list[Feedback],
        context: InferenceColumns,
        joined: NDArray[np.bool_],
        offsets: list[int],
        late: list[bool],
        correct: list[bool | None],
    ) -> None:
        """Counted feedback: `context` holds each event's inference columns, read where
        it `joined` (an unjoined event's inference fields are null)."""
        self.events += events
        ts, labels = context.ts.tolist(), context.labels.tolist()
        confidences = [None if c != c else c for c in context.confidences.tolist()]  # NaN
        latencies = [None if v != v else v for v in context.latencies.tolist()]
        if not joined.all():
            for j in np.flatnonzero(~joined).tolist():
                ts[j] = labels[j] = confidences[j] = latencies[j] = None
        self.inference_ts += ts
        self.predictions += labels
        self.confidences += confidences
        self.latencies += latencies
        self.cells += context.cells.tolist()
        self.offsets += offsets
        self.late += late
        self.correct += correct
        self.joined += joined.tolist()

    def take(self, partition: int, dims: DimColumns) -> TableRows | None:
        events = self.events
        if not events:
            return None
        n = len(events)
        kind = [e.kind for e in events]
        value = [e.value for e in events]
        columns: dict[str, Any] = {
            "event_id": [e.event_id for e in events],
            "request_id": [e.request_id for e in events],
            "ts": [e.ts for e in events],
            "kind": kind,
            "value": list(map(_encode, value)),
            "value_num": list(map(_value_num, kind, value)),
            "label": list(map(_label, kind, value)),
            "correct": list(map(_UINT8.get, self.correct)),
            "user_id": [e.user_id for e in events],
            "session_id": [e.session_id for e in events],
            "attributes": [e.attributes for e in events],
            "joined": np.fromiter(self.joined, dtype=np.uint8, count=n),
            "late": np.fromiter(self.late, dtype=np.uint8, count=n),
            "inference_ts": self.inference_ts,
        }
        columns.update(dims(np.fromiter(self.cells, dtype=np.int64, count=n)))
        columns["prediction"] = self.predictions
        columns["confidence"] = self.confidences
        columns["latency_ms"] = self.latencies
        columns["source_partition"] = np.full(n, partition, dtype=np.uint32)
        columns["source_offset"] = np.fromiter(self.offsets, dtype=np.uint64, count=n)
        self.__init__()  # type: ignore[misc]
        return TableRows("events", columns)


def dead_letter_rows(dead: list[DeadLetter]) -> TableRows:
    return TableRows(
        "dead_letters",
        {
            "topic": [d.topic for d in dead],
            "partition": [d.partition for d in dead],
            "offset": [d.offset for d in dead],
            "error": [d.error for d in dead],
            "reason": [d.reason for d in dead],
            "raw": [d.raw[:DEAD_LETTER_RAW_LIMIT] for d in dead],
            "raw_size": [len(d.raw) for d in dead],
        },
    )


class LateRows:
    """One row per late event × window it missed × grouping cell (`metrics_late`)."""

    NAMES = ("window", "window_start", "window_end", *BASE_DIMS, "extra_dims", "stream",
             "event_id", "ts")  # fmt: skip
    __slots__ = ("extra_dims", "rows")

    def __init__(self, extra_dims: tuple[str, ...]) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.extra_dims = extra_dims

    def add(
        self,
        window: str,
        start: int,
        end: int,
        cells: list[Cell],
        stream: str,
        event_id: str,
        ts: int,
    ) -> None:
        base = len(BASE_DIMS)
        for cell in cells:
            extra = format_extra_dims(self.extra_dims, cell[base:])
            self.rows.append((window, start, end, *cell[:base], extra, stream, event_id, ts))

    def take(self) -> TableRows | None:
        if not self.rows:
            return None
        columns = dict(zip(self.NAMES, map(list, zip(*self.rows, strict=True)), strict=True))
        self.rows = []
        return TableRows("metrics_late", columns)
