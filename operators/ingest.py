"""An ingestion request's body as event lines, each with its verdict (pure logic).

Splitting (:func:`split_body`): one JSON object, a JSON array, or NDJSON (one event per
line; also any body that is not one JSON value). msgspec reads an array's elements as
raw bytes, so an event keeps its exact text (numbers are not re-encoded); a
pretty-printed element is only compacted to one line (``msgspec.json.format``).

Validation (:class:`IngestValidator`) is the flow's own: every line goes through
:class:`operators.decode.BatchDecoder` with the flow's limits, so an item is accepted
here exactly when the flow would decode it, and a rejected item carries the dead letter's
code and the contract's field paths and rules (:func:`operators.reasons.explain`). On
top, the API adds two rules the log cannot know: the endpoint's event type, and the
tenant of the API key (a key bound to a tenant may not send another tenant's events; an
event without a `tenant` gets the key's written in). The API cannot know which tenant a
feedback's `request_id` belongs to: the tenant written into feedback is checked by the
flow at the join (:func:`operators.join.tenant_refusal`), where feedback on another
tenant's inference becomes a dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from pydantic import ValidationError

from operators.batches import DeadLetter
from operators.contract import EVENT_LIST_ADAPTER
from operators.decode import BatchDecoder
from operators.reasons import TENANT, explain

EventType = Literal["inference", "feedback"]
EVENT_TYPES: tuple[EventType, EventType] = ("inference", "feedback")
WRONG_TYPE = "wrong_type"
WHOLE_ITEM = ""  # the path of an error about the item as a whole
_untyped = msgspec.json.Decoder()
_raw_items = msgspec.json.Decoder(list[msgspec.Raw])
_raw_value = msgspec.json.Decoder(msgspec.Raw)


def split_body(body: bytes, ndjson: bool) -> list[bytes]:
    """The items of a request body, one line each (blank NDJSON lines are skipped)."""
    if not ndjson:
        stripped = body.strip()
        try:
            try:
                return [_one_line(bytes(raw)) for raw in _raw_items.decode(stripped)]
            except msgspec.ValidationError:  # one JSON value, not an array: one event
                return [_one_line(bytes(_raw_value.decode(stripped)))]
        except (msgspec.DecodeError, RecursionError):
            pass  # not one JSON value: NDJSON
    lines = (line.strip() for line in body.split(b"\n"))
    return [line for line in lines if line]


def _one_line(raw: bytes) -> bytes:
    if b"\n" in raw or b"\r" in raw:
        return msgspec.json.format(raw, indent=0)
    return raw


@dataclass(frozen=True, slots=True)
class ItemError:
    """What is wrong with an item: a dead-letter code (or wrong_type / tenant), the field
    path in the contract's words ("" for the item as a whole) and the rule it breaks."""

    code: str
    path: str
    reason: str


@dataclass(slots=True)
class ItemResult:
    index: int  # position in the request (an NDJSON body counts its non-blank lines)
    event_id: str | None  # feedback's event_id, an inference's request_id (when readable)
    errors: list[ItemError] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.errors


@dataclass(slots=True)
class IngestBatch:
    """Every item's verdict, in request order, and the accepted items' lines."""

    results: list[ItemResult]
    lines: list[bytes]  # accepted, in request order, as they go into the event log

    @property
    def accepted(self) -> int:
        return len(self.lines)

    @property
    def rejected(self) -> int:
        return len(self.results) - len(self.lines)

    @property
    def only_tenant_rejections(self) -> bool:
        """Nothing accepted and every item rejected for its tenant alone (a 403)."""
        return (
            not self.lines
            and bool(self.results)
            and all(e.code == TENANT for r in self.results for e in r.errors)
        )


class IngestValidator:
    """Validates items as the flow decodes them (one per service: the flow's limits)."""

    def __init__(self, decoder: BatchDecoder) -> None:
        self.decoder = decoder

    def validate(self, items: list[bytes], expected: EventType, tenant: str | None) -> IngestBatch:
        """`tenant`: the API key's tenant (None: a key for every tenant)."""
        results: list[ItemResult] = []
        lines: list[bytes] = []  # to decode, and their item indexes
        indexes: list[int] = []
        for index, raw in enumerate(items):
            obj = _parsed(raw)
            result = ItemResult(index, _event_id(obj))
            results.append(result)
            if obj is None:
                lines.append(raw)  # the decoder words what is wrong
                indexes.append(index)
                continue
            kind = obj.get("type")
            if kind in EVENT_TYPES and kind != expected:
                reason = f'this endpoint takes "{expected}" events only, not "{kind}"'
                result.errors.append(ItemError(WRONG_TYPE, "type", reason))
                continue
            claimed = obj.get("tenant")
            if tenant is not None and isinstance(claimed, str) and claimed != tenant:
                path = f"{expected}.tenant"
                reason = f"this key may only send events of tenant {tenant!r}"
                result.errors.append(ItemError(TENANT, path, reason))
            elif tenant is not None and "tenant" not in obj:
                raw = _with_tenant(raw, tenant)
            lines.append(raw)
            indexes.append(index)
        decoded = self.decoder.decode("api", 0, lines, indexes)
        for dead in decoded.dead_letters:
            results[dead.offset].errors.extend(_errors(dead))
        accepted: set[int] = set()
        for index in decoded.offsets:
            if results[index].accepted:
                accepted.add(index)
        kept = [line for line, index in zip(lines, indexes, strict=True) if index in accepted]
        return IngestBatch(results, kept)


def _parsed(raw: bytes) -> dict[str, Any] | None:
    """The item as a dict, None when it is not a JSON object."""
    try:
        obj = _untyped.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    return obj if type(obj) is dict else None


def _event_id(obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    value = obj.get("event_id") if obj.get("type") != "inference" else obj.get("request_id")
    return value if isinstance(value, str) else None


def _with_tenant(raw: bytes, tenant: str) -> bytes:
    """The object with `tenant` as its first field (the rest of its text unchanged)."""
    rest = raw[1:]
    head = b'{"tenant":' + msgspec.json.encode(tenant)
    return head + (rest if rest.lstrip().startswith(b"}") else b"," + rest)


def _errors(dead: DeadLetter) -> list[ItemError]:
    """A dead letter as field errors: the contract's paths and rules, one by one."""
    if dead.error == "invalid":
        obj = _parsed(dead.raw)
        try:
            EVENT_LIST_ADAPTER.validate_python([obj])
        except ValidationError as exc:
            return [ItemError("invalid", p, r) for p, r in explain(exc.errors()).items()]
        # Valid for the contract: a reserved value in a configured extra dim, whose
        # reason starts with its path (an attribute name, which has no ": ").
        path, _, reason = dead.reason.partition(": ")
        return [ItemError("invalid", path, reason)]
    if dead.error == "ts_out_of_range":
        obj = _parsed(dead.raw) or {}
        return [ItemError(dead.error, f"{obj.get('type')}.ts", dead.reason)]
    return [ItemError(dead.error, WHOLE_ITEM, dead.reason)]
