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
from operators.cells import BASE_DIMS, Cell
from operators.events import Feedback, Inference
from operators.metrics import as_label

_encode = msgspec.json.encode
MAX_VERSION = (1 << 63) - 1
DEAD_LETTER_RAW_LIMIT = 1 << 20  # raw payloads above this are stored truncated


class _RowBuilder:
    TABLE = ""
    NAMES: tuple[str, ...] = ()
    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    def take(self) -> TableRows | None:
        if not self.rows:
            return None
        columns = dict(zip(self.NAMES, map(list, zip(*self.rows, strict=True)), strict=True))
        self.rows = []
        return TableRows(self.TABLE, columns)


class InferenceRows(_RowBuilder):
    TABLE = "inferences"
    NAMES = (
        "request_id", "ts", "tenant", "model_id", "model_version", "deployment", "segment",
        "endpoint", "prediction", "confidence", "latency_ms", "attributes", "late",
        "source_partition", "source_offset", "version",
    )  # fmt: skip
    __slots__ = ()

    def add(
        self, e: Inference, prediction: str | None, partition: int, offset: int, late: bool
    ) -> None:
        self.rows.append(
            (e.request_id, e.ts, e.tenant, e.model_id, e.model_version, e.deployment, e.segment,
             e.endpoint, prediction, e.confidence, e.latency_ms, e.attributes, 1 if late else 0,
             partition, offset, MAX_VERSION - offset)
        )  # fmt: skip


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


class EventRows(_RowBuilder):
    """Enriched feedback: the event, joined to its inference's fields."""

    TABLE = "events"
    NAMES = (
        "event_id", "request_id", "ts", "kind", "value", "value_num", "label", "correct",
        "user_id", "session_id", "attributes", "joined", "late", "inference_ts",
        *BASE_DIMS, "prediction", "confidence", "latency_ms", "source_partition", "source_offset",
    )  # fmt: skip
    __slots__ = ()

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
        kind, value = e.kind, e.value
        if context is None:
            inference_ts = prediction = confidence = latency = None
        else:
            inference_ts, _, prediction, confidence, latency = context
        label = as_label(value) if kind == "label" else None
        verdict = None if correct is None else int(correct)
        self.rows.append(
            (e.event_id, e.request_id, e.ts, kind, _encode(value).decode(), _value_num(kind, value),
             label, verdict, e.user_id, e.session_id, e.attributes, 0 if context is None else 1,
             1 if late else 0, inference_ts, *cell[:6], prediction, confidence, latency,
             partition, offset)
        )  # fmt: skip


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


class LateRows(_RowBuilder):
    """One row per late event × window it missed × grouping cell (`metrics_late`)."""

    TABLE = "metrics_late"
    NAMES = ("window", "window_start", "window_end", *BASE_DIMS, "extra_dims", "stream",
             "event_id", "ts")  # fmt: skip
    __slots__ = ("extra_dims",)

    def __init__(self, extra_dims: tuple[str, ...]) -> None:
        super().__init__()
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


def format_extra_dims(names: tuple[str, ...], values: tuple[str, ...] | Cell) -> str:
    """Extra dims as one sortable string, `name=value` joined by `;` ('' when none)."""
    return ";".join(f"{n}={v}" for n, v in zip(names, values, strict=True))
