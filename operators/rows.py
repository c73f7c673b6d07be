"""Column-oriented rows for the raw tables: `inferences`, `events`, `dead_letters`,
`metrics_late`. Column names match `connectors/migrations`; timestamps are epoch ms.

Every row carries the deterministic key that makes a replay harmless:
`inferences` by request_id (first wins: ``version`` falls with the source offset),
`events` by event_id, `dead_letters` by source position, `metrics_late` by
(window, cell, event).
"""

from __future__ import annotations

from typing import Any

import msgspec

from operators.batches import DeadLetter, TableRows
from operators.cells import BASE_DIMS, Cell
from operators.join import InferenceContext
from operators.metrics import as_label

_encode = msgspec.json.encode
MAX_VERSION = (1 << 63) - 1
DEAD_LETTER_RAW_LIMIT = 1 << 20  # raw payloads above this are stored truncated


class InferenceRows:
    __slots__ = ("columns",)
    NAMES = (
        "request_id",
        "ts",
        "tenant",
        "model_id",
        "model_version",
        "deployment",
        "segment",
        "endpoint",
        "prediction",
        "confidence",
        "latency_ms",
        "attributes",
        "late",
        "source_partition",
        "source_offset",
        "version",
    )

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in self.NAMES}

    def add(self, event: dict[str, Any], partition: int, offset: int, late: bool) -> None:
        c = self.columns
        c["request_id"].append(event["request_id"])
        c["ts"].append(event["ts"])
        c["tenant"].append(event["tenant"])
        c["model_id"].append(event["model_id"])
        c["model_version"].append(event["model_version"])
        c["deployment"].append(event["deployment"])
        c["segment"].append(event["segment"])
        c["endpoint"].append(event["endpoint"])
        c["prediction"].append(as_label(event.get("prediction")))
        c["confidence"].append(event.get("confidence"))
        c["latency_ms"].append(event.get("latency_ms"))
        c["attributes"].append(event.get("attributes") or {})
        c["late"].append(1 if late else 0)
        c["source_partition"].append(partition)
        c["source_offset"].append(offset)
        c["version"].append(MAX_VERSION - offset)

    def take(self) -> TableRows | None:
        if not self.columns["request_id"]:
            return None
        rows = TableRows("inferences", self.columns)
        self.columns = {name: [] for name in self.NAMES}
        return rows


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
    """Enriched feedback: the event, joined to its inference's fields."""

    __slots__ = ("columns",)
    NAMES = (
        "event_id",
        "request_id",
        "ts",
        "kind",
        "value",
        "value_num",
        "label",
        "correct",
        "user_id",
        "session_id",
        "attributes",
        "joined",
        "late",
        "inference_ts",
        *BASE_DIMS,
        "prediction",
        "confidence",
        "latency_ms",
        "source_partition",
        "source_offset",
    )

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in self.NAMES}

    def add(
        self,
        event: dict[str, Any],
        context: InferenceContext | None,
        cell: Cell,
        partition: int,
        offset: int,
        late: bool,
        correct: bool | None,
    ) -> None:
        c = self.columns
        kind = event["kind"]
        value = event["value"]
        c["event_id"].append(event["event_id"])
        c["request_id"].append(event["request_id"])
        c["ts"].append(event["ts"])
        c["kind"].append(kind)
        c["value"].append(_encode(value).decode())
        c["value_num"].append(_value_num(kind, value))
        c["label"].append(as_label(value) if kind == "label" else None)
        c["correct"].append(None if correct is None else int(correct))
        c["user_id"].append(event["user_id"])
        c["session_id"].append(event.get("session_id"))
        c["attributes"].append(event.get("attributes") or {})
        c["joined"].append(0 if context is None else 1)
        c["late"].append(1 if late else 0)
        for i, name in enumerate(BASE_DIMS):
            c[name].append(cell[i])
        if context is None:
            c["inference_ts"].append(None)
            c["prediction"].append(None)
            c["confidence"].append(None)
            c["latency_ms"].append(None)
        else:
            c["inference_ts"].append(context.ts)
            c["prediction"].append(context.prediction)
            c["confidence"].append(context.confidence)
            c["latency_ms"].append(context.latency_ms)
        c["source_partition"].append(partition)
        c["source_offset"].append(offset)

    def take(self) -> TableRows | None:
        if not self.columns["event_id"]:
            return None
        rows = TableRows("events", self.columns)
        self.columns = {name: [] for name in self.NAMES}
        return rows


def dead_letter_rows(dead: list[DeadLetter]) -> TableRows:
    raws = [d.raw[:DEAD_LETTER_RAW_LIMIT] for d in dead]
    return TableRows(
        "dead_letters",
        {
            "topic": [d.topic for d in dead],
            "partition": [d.partition for d in dead],
            "offset": [d.offset for d in dead],
            "error": [d.error for d in dead],
            "reason": [d.reason for d in dead],
            "raw": raws,
            "raw_size": [len(d.raw) for d in dead],
        },
    )


class LateRows:
    """One row per late event × window it missed × grouping cell (`metrics_late`)."""

    __slots__ = ("columns", "extra_dims")

    def __init__(self, extra_dims: tuple[str, ...]) -> None:
        self.extra_dims = extra_dims
        self.columns = self._empty()

    def _empty(self) -> dict[str, list[Any]]:
        names = (
            "window",
            "window_start",
            "window_end",
            *BASE_DIMS,
            "extra_dims",
            "stream",
            "event_id",
            "ts",
        )
        return {name: [] for name in names}

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
        c = self.columns
        base = len(BASE_DIMS)
        for cell in cells:
            c["window"].append(window)
            c["window_start"].append(start)
            c["window_end"].append(end)
            for i, name in enumerate(BASE_DIMS):
                c[name].append(cell[i])
            c["extra_dims"].append(format_extra_dims(self.extra_dims, cell[base:]))
            c["stream"].append(stream)
            c["event_id"].append(event_id)
            c["ts"].append(ts)

    def take(self) -> TableRows | None:
        if not self.columns["window"]:
            return None
        rows = TableRows("metrics_late", self.columns)
        self.columns = self._empty()
        return rows


def format_extra_dims(names: tuple[str, ...], values: tuple[str, ...] | Cell) -> str:
    """Extra dims as one sortable string, `name=value` joined by `;` ('' when none)."""
    return ";".join(f"{n}={v}" for n, v in zip(names, values, strict=True))
