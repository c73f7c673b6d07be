"""Valid events in memory: msgspec Structs, decoded and validated in C.

These mirror the pydantic contract (:mod:`operators.contract`) field for field and are
never more permissive: :mod:`operators.decode` tries them first (about 1 µs an event)
and asks pydantic only about lines they reject — unknown fields (kept in `attributes`),
or invalid events (pydantic writes the dead-letter reason). A property test checks
that whatever these accept, the contract accepts the same way.

After decoding, `ts` is epoch milliseconds and a feedback's `value` is typed by its kind.
Bounds and reserved dim values are :mod:`operators.limits`'; here they are msgspec
`Meta` range constraints (checked in C) and a containment test of the dims in
`Inference.__post_init__` (and of a feedback's optional `tenant` in its own).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import msgspec
from msgspec import UNSET, Meta, UnsetType

from operators.limits import INT64_MAX, INT64_MIN, MAX_MAGNITUDE, MAX_TEXT, RESERVED_DIM_VALUES

Id = Annotated[str, Meta(min_length=1, max_length=128)]
Name = Annotated[str, Meta(min_length=1, max_length=256)]
Instant = Annotated[datetime, Meta(tz=True)]
if TYPE_CHECKING:
    # What the rest of the code sees: decode() normalizes both.
    Timestamp = int
    FeedbackValue = Any
else:
    Timestamp = int | Instant  # what msgspec accepts
    FeedbackValue = msgspec.Raw  # validated by kind in a second step
AttributeKey = Annotated[str, Meta(max_length=256)]
AttributeValue = Annotated[str, Meta(max_length=4096)]
# msgspec puts range constraints on one numeric type, so a bounded number is a union;
# ints stay ints, as in the contract. JSON has no NaN or Infinity: floats are finite.
Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
Scalar = Text | Int64 | float  # labels and predictions: compared and stored, never summed
Magnitude = (
    Annotated[int, Meta(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
    | Annotated[float, Meta(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
)
NonNegative = (
    Annotated[int, Meta(ge=0, le=MAX_MAGNITUDE)] | Annotated[float, Meta(ge=0, le=MAX_MAGNITUDE)]
)
Probability = Annotated[int, Meta(ge=0, le=1)] | Annotated[float, Meta(ge=0, le=1)]
Rating = Annotated[int, Meta(ge=1, le=5)] | Annotated[float, Meta(ge=1, le=5)]
_RESERVED = RESERVED_DIM_VALUES  # a frozenset: one hash lookup per value
Kind = Literal[
    "label", "thumbs", "rating", "reward", "click", "conversion", "dwell", "preference", "report"
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def epoch_ms(instant: datetime) -> int:
    """Exact epoch milliseconds (floor), without float rounding."""
    return (instant - EPOCH) // ONE_MS


def parse_instant(text: str) -> int:
    """An RFC 3339 timestamp with a zone, as epoch ms (the one parser both paths use)."""
    return epoch_ms(msgspec.convert(text, Instant))


class Inference(
    msgspec.Struct, tag_field="type", tag="inference", forbid_unknown_fields=True, gc=False
):
    request_id: Id
    ts: Timestamp
    model_id: Name
    model_version: Name
    endpoint: Name
    segment: Name = "default"
    tenant: Name = "default"
    prediction: Scalar | None = None
    confidence: Probability | None = None
    latency_ms: NonNegative | None = None
    deployment: Name = "primary"
    attributes: dict[AttributeKey, AttributeValue] = {}

    def __post_init__(self) -> None:
        # A ValueError makes msgspec reject the line: the contract then writes the reason.
        # Runs for every inference read: a set lookup per dim, no tuple built and no
        # loop, measured 0.1-0.3 µs an inference cheaper (scripts/bench_decode.py's lines).
        if (
            self.model_version in _RESERVED
            or self.segment in _RESERVED
            or self.endpoint in _RESERVED
            or self.model_id in _RESERVED
            or self.tenant in _RESERVED
            or self.deployment in _RESERVED
        ):
            raise ValueError("a dim value is reserved")


class Feedback(
    msgspec.Struct, tag_field="type", tag="feedback", forbid_unknown_fields=True, gc=False
):
    event_id: Id
    request_id: Id
    ts: Timestamp
    kind: Kind
    value: FeedbackValue  # raw JSON while decoding, then the value typed by `kind`
    user_id: Id
    session_id: Id | None = None
    # Optional: when given, the join checks it against the inference's (operators.join).
    # UNSET, not None: an explicit null is invalid, as in the contract.
    tenant: Name | UnsetType = UNSET
    attributes: dict[AttributeKey, AttributeValue] = {}

    def __post_init__(self) -> None:
        tenant = self.tenant
        if tenant is not UNSET and tenant in _RESERVED:
            raise ValueError("a dim value is reserved")


Event = Inference | Feedback


class Preference(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    winner: Literal["a", "b", "tie"]
    policy_a: Name
    policy_b: Name


class Report(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    category: Name
    amount: Magnitude | None = None


# The type of `value` for each kind.
VALUE_TYPES: dict[str, Any] = {
    "label": Scalar,
    "thumbs": bool,
    "rating": Rating,
    "reward": Magnitude,
    "click": bool,
    "conversion": bool,
    "dwell": NonNegative,
    "preference": Preference,
    "report": Report,
}
STRUCT_VALUES = ("preference", "report")  # kept as dicts on events


class _Stamp(msgspec.Struct):
    ts: Timestamp


_stamp_decoder = msgspec.json.Decoder(_Stamp)


def peek_ts(line: bytes) -> int | None:
    """The event time of a raw line (epoch ms), or None when it has no valid `ts`: for
    sources that keep their streams aligned in event time without decoding them."""
    try:
        ts = _stamp_decoder.decode(line).ts
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return ts if type(ts) is int else epoch_ms(cast(datetime, ts))
