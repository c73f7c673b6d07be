"""Rows for the raw tables: `inferences`, `events`, `dead_letters`, `metrics_late`.

Column names match `connectors/migrations`; timestamps are epoch ms. Builders append one
tuple per row (cheaper than a list append per column) and transpose once per batch.
Every row carries the deterministic key that makes a replay harmless: `inferences` by
request_id (first wins: ``version`` falls with the source offset), `events` by event_id,
`dead_letters` by source position, `metrics_late` by (window, cell, event).
"""

from __future__ import annotations

from typing import Any

import msgspec

from operators.batches import DeadLetter, TableRows
from operators.cells import BASE_DIMS, Cell, format_extra_dims
from operators.events import Feedback, Inference
from operators.metrics import as_label

_encode = msgspec.json.encode
MAX_VERSION = (1 << 63) - 1
DEAD_LETTER_RAW_LIMIT = 1 << 20  # raw payloads above this are stored truncated


class InferenceRows:
    """Inferences: a small record per row now, the columns at `take()` (one comprehension
    per column beats building a wide tuple per event on the hot path)."""

    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: list[tuple[Inference, str | None, int, int, bool]] = []

    def add(
        self, e: Inference, prediction: str | None, partition: int, offset: int, late: bool
    ) -> None:
        self.records.append((e, prediction, partition, offset, late))

    def take(self) -> TableRows | None:
        records = self.records
        if not records:
            return None
        self.records = []
        events = [r[0] for r in records]
        offsets = [r[3] for r in records]
        return TableRows(
            "inferences",
            {
                "request_id": [e.request_id for e in events],
                "ts": [e.ts for e in events],
                "tenant": [e.tenant for e in events],
                "model_id": [e.model_id for e in events],
                "model_version": [e.model_version for e in events],
                "deployment": [e.deployment for e in events],
                "segment": [e.segment for e in events],
                "endpoint": [e.endpoint for e in events],
                "prediction": [r[1] for r in records],
                "confidence": [e.confidence for e in events],
                "latency_ms": [e.latency_ms for e in events],
                "attributes": [e.attributes for e in events],
                "late": [1 if r[4] else 0 for r in records],
                "source_partition": [r[2] for r in records],
                "source_offset": offsets,
                "version": [MAX_VERSION - o for o in offsets],
            },
        )


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


class EventRows:
    """Enriched feedback: the event, joined to its inference's fields (see InferenceRows)."""

    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: list[tuple[Feedback, Any, Cell, int, int, bool, bool | None]] = []

    def add(
        self,
        e: Feedback,
        context: tuple[Any, ...] | None,
        cell: Cell,
        partition: int,
        offset: int,
        late: bool,
        correct: bool | None,
    ) -> None:
        self.records.append((e, context, cell, partition, offset, late, correct))

    def take(self) -> TableRows | None:
        records = self.records
        if not records:
            return None
        self.records = []
        events = [r[0] for r in records]
        contexts = [r[1] for r in records]
        cells = [r[2] for r in records]
        columns: dict[str, list[Any]] = {
            "event_id": [e.event_id for e in events],
            "request_id": [e.request_id for e in events],
            "ts": [e.ts for e in events],
            "kind": [e.kind for e in events],
            "value": [_encode(e.value) for e in events],
            "value_num": [_value_num(e.kind, e.value) for e in events],
            "label": [as_label(e.value) if e.kind == "label" else None for e in events],
            "correct": [None if r[6] is None else int(r[6]) for r in records],
            "user_id": [e.user_id for e in events],
            "session_id": [e.session_id for e in events],
            "attributes": [e.attributes for e in events],
            "joined": [0 if c is None else 1 for c in contexts],
            "late": [1 if r[5] else 0 for r in records],
            "inference_ts": [None if c is None else c[0] for c in contexts],
        }
        for i, name in enumerate(BASE_DIMS):
            columns[name] = [cell[i] for cell in cells]
        columns["prediction"] = [None if c is None else c[2] for c in contexts]
        columns["confidence"] = [None if c is None else c[3] for c in contexts]
        columns["latency_ms"] = [None if c is None else c[4] for c in contexts]
        columns["source_partition"] = [r[3] for r in records]
        columns["source_offset"] = [r[4] for r in records]
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
