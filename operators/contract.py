"""Event contract v1: the JSON objects producers send, as pydantic v2 models.

The models are pydantic ``TypedDict``s rather than ``BaseModel``s: validating a batch of
dicts with one ``TypeAdapter`` measured ~490k events/s here against ~98k/s for the same
schema as ``BaseModel`` (no model instances are built), and the hot path wants plain dicts.
``pulse schema`` writes the JSON Schema generated from these models to
``config/event-schema.json``.

Unknown top-level fields are allowed by the models and moved into ``attributes`` by
:mod:`operators.decode`; everything else invalid is a dead letter. Numeric bounds and
reserved dim values come from :mod:`operators.limits` (why these bounds: there);
:data:`FIELD_RULES` says each field's rule in words, for dead-letter reasons.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

import msgspec
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    WithJsonSchema,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from operators.events import parse_instant
from operators.limits import (
    DIMS,
    INT64_MAX,
    INT64_MIN,
    MAX_MAGNITUDE,
    MAX_MAGNITUDE_TEXT,
    MAX_TEXT,
    RESERVED_DIM_VALUES,
    reserved_reason,
)

CONTRACT_VERSION = 1
FEEDBACK_KINDS = (
    "label",
    "thumbs",
    "rating",
    "reward",
    "click",
    "conversion",
    "dwell",
    "preference",
    "report",
)


def _epoch_ms(value: int | str) -> int:
    """RFC 3339 with a zone, or epoch milliseconds, as epoch milliseconds."""
    if isinstance(value, int):
        return value
    try:
        return parse_instant(value)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not an RFC 3339 timestamp with a zone ({exc})") from None


def _not_reserved(value: str) -> str:
    if value in RESERVED_DIM_VALUES:
        raise ValueError(reserved_reason(value))
    return value


Timestamp = Annotated[
    StrictInt | StrictStr,
    AfterValidator(_epoch_ms),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time", "description": "RFC 3339 with zone"},
                {"type": "integer", "description": "epoch milliseconds"},
            ]
        }
    ),
]
Id = Annotated[StrictStr, Field(min_length=1, max_length=128)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Dim = Annotated[
    Name,
    AfterValidator(_not_reserved),
    Field(json_schema_extra={"not": {"enum": sorted(RESERVED_DIM_VALUES)}}),
]


def _float_only(value: Any) -> Any:
    # pydantic's strict float still takes ints: an int out of its own range would pass
    # as a float, where the msgspec fast path (and the aggregates) reject it.
    if type(value) is not float:
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


# Constraints go on StrictFloat itself (not around the validator), so that the JSON
# Schema shows them as minimum/maximum.
_FLOAT_ONLY = BeforeValidator(_float_only)
Float = Annotated[StrictFloat, Field(allow_inf_nan=False), _FLOAT_ONLY]
# A bounded number: ints stay ints (JSON has no NaN or Infinity).
Magnitude = (
    Annotated[StrictInt, Field(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
    | Annotated[StrictFloat, Field(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE), _FLOAT_ONLY]
)
NonNegative = (
    Annotated[StrictInt, Field(ge=0, le=MAX_MAGNITUDE)]
    | Annotated[StrictFloat, Field(ge=0, le=MAX_MAGNITUDE), _FLOAT_ONLY]
)
Probability = (
    Annotated[StrictInt, Field(ge=0, le=1)] | Annotated[StrictFloat, Field(ge=0, le=1), _FLOAT_ONLY]
)
Rating = (
    Annotated[StrictInt, Field(ge=1, le=5)] | Annotated[StrictFloat, Field(ge=1, le=5), _FLOAT_ONLY]
)
# Labels and predictions: compared and stored, never summed.
Scalar = (
    Annotated[StrictStr, Field(max_length=MAX_TEXT)]
    | Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
    | Float
)
Attributes = dict[
    Annotated[StrictStr, Field(max_length=256)], Annotated[StrictStr, Field(max_length=4096)]
]

_EVENT_CONFIG = ConfigDict(extra="allow", allow_inf_nan=False, str_max_length=MAX_TEXT)
_STRICT_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


@with_config(_EVENT_CONFIG)
class Inference(TypedDict):
    """One model output, keyed by `request_id`."""

    type: Literal["inference"]
    request_id: Id
    ts: Timestamp
    model_id: Dim
    model_version: Dim
    endpoint: Dim
    segment: NotRequired[Dim]
    tenant: NotRequired[Dim]
    prediction: NotRequired[Scalar | None]
    confidence: NotRequired[Probability | None]
    latency_ms: NotRequired[NonNegative | None]
    deployment: NotRequired[Dim]
    attributes: NotRequired[Attributes]


@with_config(_STRICT_CONFIG)
class Preference(TypedDict):
    winner: Literal["a", "b", "tie"]
    policy_a: Name
    policy_b: Name


@with_config(_STRICT_CONFIG)
class Report(TypedDict):
    category: Name
    amount: NotRequired[Magnitude | None]


@with_config(_EVENT_CONFIG)
class _FeedbackCommon(TypedDict):
    type: Literal["feedback"]
    event_id: Id
    request_id: Id
    ts: Timestamp
    user_id: Id
    session_id: NotRequired[Id | None]
    tenant: NotRequired[Dim]  # checked against its inference's tenant at the join
    attributes: NotRequired[Attributes]


@with_config(_EVENT_CONFIG)
class LabelFeedback(_FeedbackCommon):
    """The true label; `correct` when it equals the prediction (as trimmed strings)."""

    kind: Literal["label"]
    value: Scalar


@with_config(_EVENT_CONFIG)
class ThumbsFeedback(_FeedbackCommon):
    """true = thumbs up."""

    kind: Literal["thumbs"]
    value: StrictBool


@with_config(_EVENT_CONFIG)
class RatingFeedback(_FeedbackCommon):
    kind: Literal["rating"]
    value: Rating


@with_config(_EVENT_CONFIG)
class RewardFeedback(_FeedbackCommon):
    kind: Literal["reward"]
    value: Magnitude


@with_config(_EVENT_CONFIG)
class ClickFeedback(_FeedbackCommon):
    kind: Literal["click"]
    value: StrictBool


@with_config(_EVENT_CONFIG)
class ConversionFeedback(_FeedbackCommon):
    kind: Literal["conversion"]
    value: StrictBool


@with_config(_EVENT_CONFIG)
class DwellFeedback(_FeedbackCommon):
    """Seconds spent on the output."""

    kind: Literal["dwell"]
    value: NonNegative


@with_config(_EVENT_CONFIG)
class PreferenceFeedback(_FeedbackCommon):
    kind: Literal["preference"]
    value: Preference


@with_config(_EVENT_CONFIG)
class ReportFeedback(_FeedbackCommon):
    """Fraud / abuse / chargeback reports."""

    kind: Literal["report"]
    value: Report


Feedback = Annotated[
    LabelFeedback
    | ThumbsFeedback
    | RatingFeedback
    | RewardFeedback
    | ClickFeedback
    | ConversionFeedback
    | DwellFeedback
    | PreferenceFeedback
    | ReportFeedback,
    Field(discriminator="kind"),
]
Event = Annotated[Inference | Feedback, Field(discriminator="type")]

EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)
EVENT_LIST_ADAPTER: TypeAdapter[list[Any]] = TypeAdapter(list[Event])

# Each field's rule in words, for dead-letter reasons (:mod:`operators.reasons`); keys
# are field paths, and `value` is worded per feedback kind.
_ID = "must be a string of 1-128 characters"
_DIM = 'must be a string of 1-256 characters, not "*" or "unknown"'
_NAME = "must be a string of 1-256 characters"
_MAGNITUDE = f"a number between -{MAX_MAGNITUDE_TEXT} and {MAX_MAGNITUDE_TEXT}"
_SCALAR = "a string or a finite number (integers within int64)"
FIELD_RULES: dict[str, str] = {
    "type": 'must be "inference" or "feedback"',
    "kind": "must be one of " + ", ".join(FEEDBACK_KINDS),
    "ts": "must be an RFC 3339 timestamp with a zone, or epoch milliseconds (an integer)",
    "request_id": _ID,
    "event_id": _ID,
    "user_id": _ID,
    "session_id": _ID + ", or null",
    **dict.fromkeys(DIMS, _DIM),
    "prediction": f"must be {_SCALAR}, or null",
    "confidence": "must be between 0 and 1, or null",
    "latency_ms": f"must be between 0 and {MAX_MAGNITUDE_TEXT} (milliseconds), or null",
    "attributes": "must map strings of at most 256 characters to strings of at most 4096",
    "value.winner": 'must be "a", "b" or "tie"',
    "value.policy_a": _NAME,
    "value.policy_b": _NAME,
    "value.category": _NAME,
    "value.amount": f"must be {_MAGNITUDE}, or null",
}
VALUE_RULES: dict[str, str] = {
    "label": f"label must be {_SCALAR}",
    "thumbs": "thumbs must be true or false",
    "rating": "rating must be a number between 1 and 5",
    "reward": f"reward must be {_MAGNITUDE}",
    "click": "click must be true or false",
    "conversion": "conversion must be true or false",
    "dwell": f"dwell must be between 0 and {MAX_MAGNITUDE_TEXT} seconds",
    "preference": 'preference must be an object {"winner", "policy_a", "policy_b"}',
    "report": 'report must be an object {"category", "amount"}',
}

INFERENCE_FIELDS = frozenset(Inference.__annotations__)
FEEDBACK_FIELDS = frozenset(_FeedbackCommon.__annotations__) | {"kind", "value"}
INFERENCE_DEFAULTS = {"segment": "default", "tenant": "default", "deployment": "primary"}


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of one event, published as config/event-schema.json."""
    schema = EVENT_ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"Feedback Pulse event, contract v{CONTRACT_VERSION}"
    schema["description"] = (
        "One JSON object per event: an inference (type=inference) or feedback on it "
        "(type=feedback), linked by request_id. A feedback's optional tenant must be its "
        "inference's: feedback naming another tenant is not counted (a dead letter at the "
        "join). Unknown top-level fields are kept in "
        "attributes. Dims (tenant, model_id, deployment, model_version, segment, endpoint, "
        'and the attributes configured as extra dims) may not be "*" (the rollup marker) or '
        '"unknown" (the dims of unjoined feedback). Numbers are finite; reward, dwell, a '
        f"report's amount and latency_ms are within +-{MAX_MAGNITUDE_TEXT} so that every "
        "aggregate stays finite; integer labels and predictions are within int64."
    )
    return schema
