"""Decode and validate a whole batch of raw lines at once.

Fast path: msgspec decodes each line straight into the event Structs of
:mod:`operators.events` (C speed, no intermediate dict), in one pass that also types a
feedback's `value`, turns an RFC 3339 `ts` into epoch ms and checks the range. A line
the Structs refuse for an unknown field is read again with its unknown fields moved into
`attributes` (:func:`move_unknown_fields`, the contract path's rule on the same parsed
object). Lines still refused go together through one pydantic ``TypeAdapter`` call over
the contract (:mod:`operators.contract`), which keeps unknown fields in `attributes` and
finds what is wrong with the rest (worded by :mod:`operators.reasons`). Configured extra
dims, which the contract cannot name, are checked for reserved values here. Invalid lines
never raise: they become :class:`~operators.batches.DeadLetter` with the reason and the
source position."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress
from operator import itemgetter
from typing import Any, cast

import msgspec
from pydantic import ValidationError

from operators.batches import DeadLetter
from operators.contract import EVENT_LIST_ADAPTER, FEEDBACK_FIELDS, INFERENCE_FIELDS
from operators.events import (
    EPOCH,
    ONE_MS,
    STRUCT_VALUES,
    VALUE_TYPES,
    Event,
    Feedback,
    Inference,
    epoch_ms,
)
from operators.limits import RESERVED_DIM_VALUES, reserved_reason
from operators.reasons import describe

_event_decoder = msgspec.json.Decoder(Event)
_value_decoders = {kind: msgspec.json.Decoder(t) for kind, t in VALUE_TYPES.items()}
_untyped = msgspec.json.Decoder()
_encode = msgspec.json.encode
_asdict = msgspec.structs.asdict
_first = itemgetter(0)
_FastErrors = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)
_UNKNOWN_FIELD = "Object contains unknown field"  # how msgspec starts that refusal
_KNOWN = {"inference": INFERENCE_FIELDS, "feedback": FEEDBACK_FIELDS}


@dataclass(slots=True)
class DecodedBatch:
    """Valid events in log order (`ts` in epoch ms), their offsets, and dead letters."""

    events: list[Event] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def _keep_unknown_fields(event: dict[str, Any], known: frozenset[str]) -> None:
    """Move fields the contract does not name into `attributes` (explicit ones win)."""
    unknown = event.keys() - known
    if not unknown:
        return
    attributes = dict(event.get("attributes") or {})
    for name in unknown:
        value = event.pop(name)
        if name not in attributes:
            attributes[name] = value if isinstance(value, str) else _encode(value).decode()
    event["attributes"] = attributes


def decode_fast(line: bytes) -> Event:
    """One line through the msgspec Structs; raises when they reject it."""
    event = _event_decoder.decode(line)
    if type(event) is Feedback:
        _type_value(event)
    if type(event.ts) is not int:
        event.ts = epoch_ms(cast(datetime, event.ts))
    return event


def move_unknown_fields(line: bytes) -> Event | None:
    """A line the Structs refused for an unknown field, read again by them with its
    unknown fields moved into `attributes` by the contract path's rule
    (:func:`_keep_unknown_fields`): ~3 µs where the contract's verdict costs ~12, on
    the same parsed object. None when the Structs still refuse it (another fault, or
    moved attributes over their limits, which the contract keeps): the contract has
    it then. The event is as the reader gives it (`value` raw, `ts` as sent)."""
    try:
        obj = _untyped.decode(line)
        tag = obj.get("type") if type(obj) is dict else None
        known = _KNOWN.get(tag) if type(tag) is str else None
        if known is None or type(obj.get("attributes", {})) is not dict:
            return None  # (the contract path reads a null or empty `attributes` as {})
        if obj.keys() <= known:  # no unknown field after all: the contract reads it
            return None
        _keep_unknown_fields(obj, known)
        event = _event_decoder.decode(_encode(obj))
    except _FastErrors:
        return None
    return event


def _moved(line: bytes) -> Event | None:
    """:func:`move_unknown_fields` with a feedback's `value` typed (None when its kind
    refuses it); `ts` is left as sent."""
    if (event := move_unknown_fields(line)) is None or type(event) is not Feedback:
        return event
    try:
        _type_value(event)
    except _FastErrors:
        return None
    return event


def _type_value(event: Feedback) -> None:
    """A feedback's raw `value` typed by its kind (a Struct value kept as a dict); raises
    when the kind's type refuses it. `BatchDecoder.decode` inlines this in its loop."""
    value = _value_decoders[event.kind].decode(event.value)
    event.value = _asdict(value) if event.kind in STRUCT_VALUES else value


def decode_contract(obj: dict[str, Any]) -> Event:
    """One parsed object through the pydantic contract; raises ValidationError."""
    return _from_contract(EVENT_LIST_ADAPTER.validate_python([obj])[0])


def _from_contract(event: dict[str, Any]) -> Event:
    """A pydantic-validated event dict as the runtime Struct."""
    if event.pop("type") == "inference":
        _keep_unknown_fields(event, INFERENCE_FIELDS)
        return Inference(**event)
    _keep_unknown_fields(event, FEEDBACK_FIELDS)
    if event["kind"] == "report":
        event["value"] = {
            "category": event["value"]["category"],
            "amount": event["value"].get("amount"),
        }
    return Feedback(**event)


def _reserved_extra_dim(event: Event, names: tuple[str, ...]) -> str | None:
    """The reason when a configured extra dim (an attribute) holds a reserved value."""
    attributes = event.attributes
    for name in names:
        value = attributes.get(name)
        if value in RESERVED_DIM_VALUES:
            event_type = "inference" if type(event) is Inference else "feedback"
            return f"{event_type}.attributes.{name}: {reserved_reason(value)}, in an extra dim"
    return None


def _reasons_by_item(exc: ValidationError) -> dict[int, str]:
    """The contract's verdict per refused item, as text only.

    Its errors must not outlive this call: a validator's `ValueError` (in an error's
    `ctx`) holds its traceback, whose frames reach back through the caller's frames to
    Bytewax's, which hold the whole batch, its lines and events. Held in a local of
    `_contract_path` (a frame in that chain), they made a reference cycle: every batch
    with such a line stayed in memory until the collector's next pass over the older
    generations (~0.5 GiB more RSS with fewer collections)."""
    by_item: dict[int, list[Any]] = {}
    for err in exc.errors():
        by_item.setdefault(int(err["loc"][0]), []).append(err)
    return {k: describe(errors) for k, errors in by_item.items()}


class BatchDecoder:
    """Turns raw lines into validated events; one instance per partition stage."""

    def __init__(
        self, max_event_bytes: int, min_ts: int, max_ts: int, extra_dims: tuple[str, ...] = ()
    ) -> None:
        self.max_event_bytes = max_event_bytes
        self.min_ts = min_ts
        self.max_ts = max_ts
        self.extra_dims = extra_dims  # attributes that are dims: no reserved values

    def decode(
        self, topic: str, partition: int, lines: list[bytes], offsets: list[int]
    ) -> DecodedBatch:
        """One pass over the lines: each read, finished (`value`, `ts`) and checked (the
        `ts` range, the extra dims) where it is, with no per-line function call — at
        about 1 µs a line of Python around msgspec's reader, every step here is a
        noticeable share. Dead letters keep their order: oversize, then the contract's
        verdicts, then range and extra-dim refusals by line."""
        out = DecodedBatch()
        dead = out.dead_letters
        decoded: list[Event | None] = [None] * len(lines)
        slow: list[int] = []  # lines for the contract's verdict
        later: list[tuple[int, DeadLetter]] = []  # range and extra-dim refusals, by line
        limit, min_ts, max_ts = self.max_event_bytes, self.min_ts, self.max_ts
        extra_dims = self.extra_dims
        read, values, epoch, ms = _event_decoder.decode, _value_decoders, EPOCH, ONE_MS
        i = -1
        for line in lines:
            i += 1
            if len(line) > limit:
                dead.append(
                    DeadLetter(topic, partition, offsets[i], line, "oversize",
                               f"event of {len(line)} bytes exceeds max_event_bytes={limit}")
                )  # fmt: skip
                continue
            try:
                event = read(line)
            except _FastErrors as exc:
                moved = _moved(line) if str(exc).startswith(_UNKNOWN_FIELD) else None
                if moved is None:
                    slow.append(i)
                    continue
                event = moved
            else:
                if type(event) is Feedback:
                    kind = event.kind
                    try:
                        value = values[kind].decode(event.value)
                    except _FastErrors:
                        slow.append(i)
                        continue
                    event.value = _asdict(value) if kind in STRUCT_VALUES else value
            ts: Any = event.ts
            if type(ts) is not int:  # an RFC 3339 instant: epoch_ms, inlined
                event.ts = ts = (ts - epoch) // ms
            if not min_ts <= ts < max_ts:
                later.append((i, self._out_of_range(topic, partition, offsets[i], line, ts)))
            elif extra_dims and (reason := _reserved_extra_dim(event, extra_dims)) is not None:
                later.append((i, DeadLetter(topic, partition, offsets[i], line, "invalid", reason)))
            else:
                decoded[i] = event
        if slow:
            self._contract_path(slow, decoded, topic, partition, lines, offsets, dead)
            for i in slow:  # the contract's events, checked as the others
                if (judged := decoded[i]) is None:
                    continue
                if not min_ts <= judged.ts < max_ts:
                    later.append(
                        (i, self._out_of_range(topic, partition, offsets[i], lines[i], judged.ts))
                    )
                    decoded[i] = None
                elif extra_dims and (reason := _reserved_extra_dim(judged, extra_dims)) is not None:
                    later.append(
                        (i, DeadLetter(topic, partition, offsets[i], lines[i], "invalid", reason))
                    )
                    decoded[i] = None
            later.sort(key=_first)
        dead.extend([letter for _, letter in later])
        kept = [event is not None for event in decoded]
        out.events = cast(list[Event], list(compress(decoded, kept)))
        out.offsets = list(compress(offsets, kept))
        return out

    def _out_of_range(
        self, topic: str, partition: int, offset: int, line: bytes, ts: int
    ) -> DeadLetter:
        reason = f"ts {ts} is outside [{self.min_ts}, {self.max_ts}) epoch ms"
        return DeadLetter(topic, partition, offset, line, "ts_out_of_range", reason)

    @staticmethod
    def _contract_path(
        indexes: list[int],
        decoded: list[Event | None],
        topic: str,
        partition: int,
        lines: list[bytes],
        offsets: list[int],
        dead: list[DeadLetter],
    ) -> None:
        """Parse, then validate all rejected lines with one TypeAdapter call."""
        objects: list[Any] = []
        positions: list[int] = []
        for i in indexes:
            try:
                obj = _untyped.decode(lines[i])
            except (msgspec.DecodeError, RecursionError) as exc:
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                dead.append(
                    DeadLetter(topic, partition, offsets[i], lines[i], "malformed_json", reason)
                )
                continue
            if type(obj) is not dict:
                dead.append(
                    DeadLetter(topic, partition, offsets[i], lines[i], "not_object",
                               f"expected a JSON object, got {type(obj).__name__}")
                )  # fmt: skip
                continue
            objects.append(obj)
            positions.append(i)
        try:
            valid = EVENT_LIST_ADAPTER.validate_python(objects)
        except ValidationError as exc:
            reasons = _reasons_by_item(exc)
            for k, reason in reasons.items():
                i = positions[k]
                dead.append(DeadLetter(topic, partition, offsets[i], lines[i], "invalid", reason))
            keep = [k for k in range(len(objects)) if k not in reasons]
            valid = EVENT_LIST_ADAPTER.validate_python([objects[k] for k in keep])
            positions = [positions[k] for k in keep]
        for event, i in zip(valid, positions, strict=True):
            decoded[i] = _from_contract(event)
