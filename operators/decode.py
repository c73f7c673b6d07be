"""Decode and validate a whole batch of raw lines at once.

msgspec parses each line (it is the fastest JSON parser here and rejects NaN, Infinity
and invalid UTF-8), then one pydantic ``TypeAdapter`` call validates the whole batch
against :mod:`operators.contract`. Invalid lines never raise: they become
:class:`~operators.batches.DeadLetter` with the reason and the source position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from pydantic import ValidationError

from operators.batches import DeadLetter
from operators.contract import (
    EVENT_LIST_ADAPTER,
    FEEDBACK_FIELDS,
    INFERENCE_DEFAULTS,
    INFERENCE_FIELDS,
)

_json_decode = msgspec.json.decode
_json_encode = msgspec.json.encode
MAX_REASON_ERRORS = 3


@dataclass(slots=True)
class DecodedBatch:
    """Valid events in log order (dicts in the contract's shape, `ts` as epoch ms, with
    their source offsets) and dead letters."""

    events: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def _describe(errors: list[Any]) -> str:
    parts = []
    for err in errors[:MAX_REASON_ERRORS]:
        # Drop the union tags pydantic puts in the location (e.g. feedback.rating.value.int).
        loc = ".".join(str(p) for p in err["loc"][1:]) or "event"
        parts.append(f"{loc}: {err['msg']}")
    more = len(errors) - MAX_REASON_ERRORS
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _keep_unknown_fields(event: dict[str, Any], known: frozenset[str]) -> None:
    """Move fields the contract does not name into `attributes` (explicit ones win)."""
    unknown = event.keys() - known
    if not unknown:
        return
    attributes = dict(event.get("attributes") or {})
    for name in unknown:
        value = event.pop(name)
        if name not in attributes:
            attributes[name] = value if isinstance(value, str) else _json_encode(value).decode()
    event["attributes"] = attributes


class BatchDecoder:
    """Turns raw lines into validated events; one instance per partition stage."""

    def __init__(self, max_event_bytes: int, min_ts: int, max_ts: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.min_ts = min_ts
        self.max_ts = max_ts

    def decode(
        self, topic: str, partition: int, lines: list[bytes], offsets: list[int]
    ) -> DecodedBatch:
        out = DecodedBatch()
        dead = out.dead_letters
        objects: list[Any] = []
        positions: list[int] = []  # index into `lines` of each object
        limit = self.max_event_bytes
        for i, line in enumerate(lines):
            if len(line) > limit:
                dead.append(
                    DeadLetter(
                        topic,
                        partition,
                        offsets[i],
                        line,
                        "oversize",
                        f"event of {len(line)} bytes exceeds max_event_bytes={limit}",
                    )
                )
                continue
            try:
                obj = _json_decode(line)
            except (msgspec.DecodeError, RecursionError) as exc:
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                dead.append(
                    DeadLetter(topic, partition, offsets[i], line, "malformed_json", reason)
                )
                continue
            if type(obj) is not dict:
                dead.append(
                    DeadLetter(
                        topic,
                        partition,
                        offsets[i],
                        line,
                        "not_object",
                        f"expected a JSON object, got {type(obj).__name__}",
                    )
                )
                continue
            objects.append(obj)
            positions.append(i)

        valid, valid_positions = self._validate(
            objects, positions, topic, partition, lines, offsets, dead
        )
        min_ts, max_ts = self.min_ts, self.max_ts
        for event, i in zip(valid, valid_positions, strict=True):
            ts = event["ts"]
            if not min_ts <= ts < max_ts:
                dead.append(
                    DeadLetter(
                        topic,
                        partition,
                        offsets[i],
                        lines[i],
                        "ts_out_of_range",
                        f"ts {ts} is outside [{min_ts}, {max_ts}) epoch ms",
                    )
                )
                continue
            if event["type"] == "inference":
                for name, default in INFERENCE_DEFAULTS.items():
                    if name not in event:
                        event[name] = default
                _keep_unknown_fields(event, INFERENCE_FIELDS)
            else:
                _keep_unknown_fields(event, FEEDBACK_FIELDS)
            out.events.append(event)
            out.offsets.append(offsets[i])
        return out

    @staticmethod
    def _validate(
        objects: list[Any],
        positions: list[int],
        topic: str,
        partition: int,
        lines: list[bytes],
        offsets: list[int],
        dead: list[DeadLetter],
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """One adapter call for the batch; on errors, set the bad ones aside and redo."""
        try:
            return EVENT_LIST_ADAPTER.validate_python(objects), positions
        except ValidationError as exc:
            by_item: dict[int, list[Any]] = {}
            for err in exc.errors():
                by_item.setdefault(int(err["loc"][0]), []).append(err)
        for index, errors in by_item.items():
            i = positions[index]
            dead.append(
                DeadLetter(topic, partition, offsets[i], lines[i], "invalid", _describe(errors))
            )
        keep = [k for k in range(len(objects)) if k not in by_item]
        good = EVENT_LIST_ADAPTER.validate_python([objects[k] for k in keep])
        return good, [positions[k] for k in keep]
