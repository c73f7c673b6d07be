"""Rows for the raw tables: `inferences`, `events`, `dead_letters`, `metrics_late`.

Column names match `connectors/migrations`; timestamps are epoch ms. Builders keep what
the stage hands over (its arrays and lists per sequence, or one tuple per row where it
works one event at a time) and build the columns once per batch: numbers, times and
flags as numpy arrays (NaN is null: the sink converts them without a Python object per
value), strings by a comprehension per event field, made Arrow arrays at once
(:mod:`operators.arrow`: here, not in the sink's writer thread); the dims of `inferences`
and `events` are dictionary codes of cell ids (:class:`~operators.cells.CellDims`), as
the merge stage's `metrics` rows are.
Every row carries the deterministic key that makes a replay harmless: `inferences` by
request_id (first wins: ``version`` falls with the source offset), `events` by event_id,
`dead_letters` by source position, `metrics_late` by (window, cell, event).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from operators.arrow import binaries, string_maps, strings
from operators.batches import Categorical, DeadLetter, NullableColumn, TableRows
from operators.cells import BASE_DIMS, Cell, format_extra_dims
from operators.columnar.join_buffer import InferenceColumns
from operators.events import Feedback, Inference
from operators.metrics import KIND_CODES

_encode = msgspec.json.encode
MAX_VERSION = (1 << 63) - 1

# Cell ids -> the dims columns of those cells (:meth:`operators.cells.CellDims.columns`).
DimColumns = Callable[[np.ndarray], dict[str, Categorical]]
_KINDS = list(KIND_CODES)  # by code: the `kind` column's categories
DEAD_LETTER_RAW_LIMIT = 1 << 20  # raw payloads above this are stored truncated


class InferenceRows:
    """Inferences: the stage hands over whole sequences (its accepted inferences, the
    join's columns of them, offsets and lateness); the table's columns are built at
    `take()`: the numbers, flags and the dims' cell ids from the stage's arrays (no list
    per value for the sink to convert), the strings by one comprehension per field."""

    __slots__ = ("columns", "events", "late", "offsets", "request_ids")

    def __init__(self) -> None:
        self.events: list[Inference] = []
        self.columns: list[InferenceColumns] = []
        self.request_ids: list[str] = []
        self.offsets: list[int] = []
        self.late: list[NDArray[np.bool_]] = []

    def extend(
        self, events: list[Inference], columns: InferenceColumns, request_ids: list[str],
        offsets: list[int], late: NDArray[np.bool_],
    ) -> None:  # fmt: skip
        """`columns`: the events' own (ts, cell ids, labels, confidence, latency);
        `request_ids` theirs, as the stage read them."""
        self.events += events
        self.columns.append(columns)
        self.request_ids += request_ids
        self.offsets += offsets
        self.late.append(late)

    def take(self, partition: int, dims: DimColumns) -> TableRows | None:
        events = self.events
        if not events:
            return None
        parts = self.columns
        # A comprehension per field: on msgspec Structs, ~2x faster than an attribute
        # getter map, and than astuple + a transposition at batches of thousands.
        attributes = [e.attributes for e in events]
        offsets = np.array(self.offsets, dtype=np.uint64)
        columns: dict[str, Any] = {
            "request_id": strings(self.request_ids),
            "ts": np.concatenate([c.ts for c in parts]),
        }
        columns.update(dims(np.concatenate([c.cells for c in parts])))
        columns.update(
            {
                "prediction": strings(np.concatenate([c.labels for c in parts])),
                "confidence": np.concatenate([c.confidences for c in parts]),  # NaN: null
                "latency_ms": np.concatenate([c.latencies for c in parts]),
                "attributes": string_maps(attributes),
                "late": np.concatenate(self.late).astype(np.uint8),
                "source_partition": np.full(len(events), partition, dtype=np.uint32),
                "source_offset": offsets,
                "version": np.uint64(MAX_VERSION) - offsets,
            }
        )
        self.__init__()  # type: ignore[misc]
        return TableRows("inferences", columns)


@dataclass(frozen=True)
class ReadValues:
    """What the stage read of counted feedback, per event: its `ts`, kind code
    (:data:`~operators.metrics.KIND_CODES`) and value, the value's number
    (:func:`operators.metrics.value_numbers`, NaN for none), its label (a label's value
    as labels compare, else None) and whether that label was correct (null: not
    compared)."""

    ts: NDArray[np.int64]
    codes: NDArray[np.int64]
    values: Sequence[Any]
    numbers: NDArray[np.float64]
    labels: NDArray[np.object_]
    correct: NullableColumn


class EventRows:
    """Enriched feedback: the event, joined to its inference's fields. The stage hands
    over what it counts as columns (:meth:`extend`); the table's columns are built at
    `take()`, as for InferenceRows. A missing number, confidence or latency is NaN in the
    arrays and null in the table (the sink converts NaN to null; valid values are finite);
    an unjoined event's `inference_ts` is null by the joined flags."""

    __slots__ = ("context", "events", "joined", "late", "offsets", "read")

    def __init__(self) -> None:
        self.events: list[Feedback] = []
        self.read: list[ReadValues] = []
        self.context: list[InferenceColumns] = []
        self.offsets: list[int] = []
        self.late: list[NDArray[np.bool_]] = []
        self.joined: list[NDArray[np.bool_]] = []

    def extend(
        self,
        events: list[Feedback],
        read: ReadValues,
        context: InferenceColumns,
        joined: NDArray[np.bool_],
        offsets: list[int],
        late: NDArray[np.bool_],
    ) -> None:
        """Counted feedback: `context` holds each event's inference columns, read where
        it `joined` (an unjoined event's are null: no label, NaN numbers)."""
        self.events += events
        self.read.append(read)
        self.context.append(context)
        self.offsets += offsets
        self.late.append(late)
        self.joined.append(joined)

    def take(self, partition: int, dims: DimColumns) -> TableRows | None:
        events = self.events
        if not events:
            return None
        n = len(events)
        read, context = self.read, self.context
        joined = np.concatenate(self.joined)
        columns: dict[str, Any] = {
            "event_id": strings([e.event_id for e in events]),
            "request_id": strings([e.request_id for e in events]),
            "ts": np.concatenate([r.ts for r in read]),
            "kind": Categorical(np.concatenate([r.codes for r in read]).astype(np.int32), _KINDS),
            "value": binaries(list(map(_encode, chain.from_iterable(r.values for r in read)))),
            "value_num": np.concatenate([r.numbers for r in read]),  # NaN: null
            "label": strings(np.concatenate([r.labels for r in read])),
            "correct": NullableColumn.joined([r.correct for r in read]),
            "user_id": strings([e.user_id for e in events]),
            "session_id": strings([e.session_id for e in events]),
            "attributes": string_maps([e.attributes for e in events]),
            "joined": joined.astype(np.uint8),
            "late": np.concatenate(self.late).astype(np.uint8),
            "inference_ts": NullableColumn(np.concatenate([c.ts for c in context]), joined),
        }
        columns.update(dims(np.concatenate([c.cells for c in context])))
        columns["prediction"] = strings(np.concatenate([c.labels for c in context]))
        columns["confidence"] = np.concatenate([c.confidences for c in context])
        columns["latency_ms"] = np.concatenate([c.latencies for c in context])
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

    TIMES = ("window_start", "window_end", "ts")

    def take(self) -> TableRows | None:
        if not self.rows:
            return None
        columns: dict[str, Any] = {
            name: np.array(values, dtype=np.int64) if name in self.TIMES else strings(values)
            for name, values in zip(self.NAMES, zip(*self.rows, strict=True), strict=True)
        }
        self.rows = []
        return TableRows("metrics_late", columns)
