"""Dead-letter reasons in the contract's words, from pydantic's validation errors.

Pydantic locates an error inside its union branches
(``feedback.label.value.constrained-int: Input should be ...``); producers need the field
and its rule (``feedback.value: label must be a string or a finite number ...``). An
error's location is read as: event type, the feedback kind (a union tag, not shown), the
field, and a sub-field where the contract has one (an attribute's key, a preference's or
report's field); whatever follows names union branches and is dropped. The wording of
each rule is :data:`operators.contract.FIELD_RULES`; a validator's own message (a
reserved dim value, a timestamp that does not parse) is kept, as it says more.
"""

from __future__ import annotations

from typing import Any

from operators.contract import FIELD_RULES, VALUE_RULES
from operators.events import STRUCT_VALUES

MAX_REASON_ERRORS = 3
_TYPES = ("inference", "feedback")
# The code of an event refused for its tenant: by the API (the key's tenant) and as a
# dead letter at the join (the inference's tenant).
TENANT = "tenant"


def foreign_tenant(claimed: str, request_id: str) -> str:
    """Why feedback naming `claimed` may not count on `request_id`'s inference (the
    inference's own tenant is not said: the sender may not be entitled to it)."""
    return f"feedback.tenant: {claimed!r} is not the tenant of inference {request_id!r}"


def explain(errors: list[Any]) -> dict[str, str]:
    """Each field path of one event's errors and the rule it breaks (the ingestion API
    reports them one by one; `loc[0]` is the event's index in the validated batch)."""
    messages: dict[str, str] = {}
    for err in errors:
        path, message = _explain(err)
        if path not in messages or err["type"] == "value_error":
            messages[path] = message
    return messages


def describe(errors: list[Any]) -> str:
    """One reason for one event's errors (`loc[0]` is its index in the validated batch)."""
    parts = [f"{path}: {message}" for path, message in explain(errors).items()]
    more = len(parts) - MAX_REASON_ERRORS
    return "; ".join(parts[:MAX_REASON_ERRORS]) + (f"; and {more} more" if more > 0 else "")


def _explain(err: Any) -> tuple[str, str]:
    """(`type.field[.sub]`, the rule it breaks) of one pydantic error."""
    loc = [str(p) for p in err["loc"][1:]]
    if not loc or loc[0] not in _TYPES:
        return "type", FIELD_RULES["type"]
    event_type, rest = loc[0], loc[1:]
    kind = None
    if event_type == "feedback":
        if not rest:  # the kind tag is missing or unknown
            return "feedback.kind", FIELD_RULES["kind"]
        kind, rest = rest[0], rest[1:]
    field = rest[0] if rest else "event"
    key = field
    shown = f"{event_type}.{field}"
    if len(rest) > 1 and (field == "attributes" or (field == "value" and kind in STRUCT_VALUES)):
        shown += f".{_shortened(rest[1])}"
        key = field if field == "attributes" else f"value.{rest[1]}"
    if err["type"] == "missing":
        return shown, "required"
    if err["type"] == "extra_forbidden":
        return shown, "is not a field of the contract"
    if err["type"] == "value_error":
        return shown, str(err["ctx"]["error"])
    if key == "value" and kind in VALUE_RULES:
        return shown, VALUE_RULES[kind]
    return shown, FIELD_RULES.get(key, err["msg"])


def _shortened(name: str, limit: int = 64) -> str:
    """An attribute key as shown in a reason (keys may be long: the reason stays short)."""
    return name if len(name) <= limit else name[: limit - 1] + "…"
