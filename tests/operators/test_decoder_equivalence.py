"""The msgspec fast path is never more permissive than the pydantic contract, and both
produce the same event; random payloads also never make the batch decoder raise."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from operators.contract import FEEDBACK_FIELDS as CONTRACT_FEEDBACK_FIELDS
from operators.contract import FEEDBACK_KINDS
from operators.contract import INFERENCE_FIELDS as CONTRACT_INFERENCE_FIELDS
from operators.decode import BatchDecoder, decode_contract, decode_fast

KINDS = [*FEEDBACK_KINDS, "emoji"]  # the contract's kinds and one it does not know
# Numbers at and past the contract's bounds (1e9, int64) and the float extremes.
extremes = st.sampled_from([
    1e308, -1e308, 5e-324, -0.0, 1e9, -1e9, 1e9 + 1, 10**9, 10**9 + 1, -(10**9) - 1, 2**63 - 1,
    2**63, 2**64, -(2**63), -(2**63) - 1, 10**400, 9.223372036854776e18, 1.0, 0, 1,
])  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6), st.text(min_size=120, max_size=140),
    extremes, st.integers(-(2**70), 2**70), st.sampled_from(["*", "unknown"]),
)  # fmt: skip
timestamps = st.one_of(
    st.integers(0, 4_102_444_800_000), st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T01:00:00.123+01:00",
    "2026-01-01 00:00:00Z", "2026-01-01T00:00:00", "2026-01-01", "soon", ""]), scalars,
)  # fmt: skip
values = st.one_of(
    scalars, st.integers(0, 6), st.floats(0, 6),
    st.fixed_dictionaries({"winner": st.sampled_from(["a", "b", "tie", "c"]), "policy_a": st.text(max_size=4),
                           "policy_b": st.text(min_size=1, max_size=4)}),
    st.fixed_dictionaries({"category": st.text(max_size=4)}, optional={"amount": scalars, "x": scalars}),
    st.lists(scalars, max_size=2),
)  # fmt: skip
ids = st.text(min_size=1, max_size=12)
dims = st.one_of(ids, st.sampled_from(["*", "unknown", "* ", "UNKNOWN"]))
good_ts = st.one_of(st.integers(946_684_800_000, 4_000_000_000_000),
                    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T01:00:00.123+01:00", "2026-01-01 00:00:00Z",
                                     "2026-03-01t10:00:00.5z"]))  # fmt: skip
good_attributes = st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3)
good_values = {
    "label": st.one_of(st.text(max_size=5), st.integers(-5, 5), st.floats(-5, 5), extremes),
    "thumbs": st.booleans(), "click": st.booleans(), "conversion": st.booleans(),
    "rating": st.one_of(st.integers(1, 5), st.floats(1, 5)),
    "reward": st.one_of(st.integers(-9, 9), st.floats(-1e6, 1e6), st.floats(-1e9, 1e9), extremes),
    "dwell": st.one_of(st.integers(0, 99), st.floats(0, 1e4), st.floats(0, 1e9), extremes),
    "preference": st.fixed_dictionaries({"winner": st.sampled_from(["a", "b", "tie"]), "policy_a": ids, "policy_b": ids}),
    "report": st.fixed_dictionaries({"category": ids}, optional={"amount": st.one_of(st.none(), st.integers(0, 9), st.floats(0, 99), extremes)}),
}  # fmt: skip
INFERENCE_FIELDS = {
    "request_id": ids, "ts": good_ts, "model_id": dims, "model_version": dims, "endpoint": dims, "segment": dims,
    "tenant": dims, "deployment": dims, "prediction": st.one_of(st.none(), st.text(max_size=4), st.integers(), st.floats(-9, 9), extremes),
    "confidence": st.one_of(st.none(), st.floats(0, 1), st.integers(0, 1), extremes),
    "latency_ms": st.one_of(st.none(), st.floats(0, 1e4), st.integers(0, 99), extremes),
    "attributes": good_attributes,
}  # fmt: skip
INFERENCE_REQUIRED = ("request_id", "ts", "model_id", "model_version", "endpoint")
FEEDBACK_FIELDS = {"event_id": ids, "request_id": ids, "ts": good_ts, "user_id": ids,
                   "session_id": st.one_of(st.none(), ids), "tenant": dims,
                   "attributes": good_attributes}  # fmt: skip
FEEDBACK_REQUIRED = ("event_id", "request_id", "ts", "user_id")


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event, then 0-2 mutations (a field set to anything, dropped, or added)."""
    if draw(st.booleans()):
        event: dict[str, Any] = {"type": "inference"}
        fields, required = INFERENCE_FIELDS, INFERENCE_REQUIRED
    else:
        kind = draw(st.sampled_from(list(good_values)))
        event = {"type": "feedback", "kind": kind, "value": draw(good_values[kind])}
        fields, required = FEEDBACK_FIELDS, FEEDBACK_REQUIRED
    for name, strategy in fields.items():
        if name in required or draw(st.booleans()):
            event[name] = draw(strategy)
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["set", "drop", "add"]))
        name = draw(st.sampled_from(sorted(event)))
        if action == "set":
            event[name] = draw(st.one_of(scalars, timestamps, values, st.sampled_from(KINDS)))
        elif action == "drop":
            event.pop(name)
        else:
            event[draw(st.sampled_from(["client", "extra", "kind", "value", "type"]))] = draw(
                scalars
            )
    return event


@settings(max_examples=3000, deadline=None)
@given(payloads())
def test_fast_path_accepts_only_what_the_contract_accepts_and_agrees(
    payload: dict[str, Any],
) -> None:
    line = json.dumps(payload).encode()
    try:
        fast = decode_fast(line)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return
    try:
        contract = decode_contract(json.loads(line))
    except ValidationError as exc:
        raise AssertionError(f"fast path accepted what the contract rejects: {exc}") from None
    assert type(fast) is type(contract)
    assert msgspec.structs.asdict(fast) == msgspec.structs.asdict(contract)
    for name, value in msgspec.structs.asdict(fast).items():
        assert type(value) is type(msgspec.structs.asdict(contract)[name]), name


@settings(max_examples=3000, deadline=None)
@given(payloads())
def test_the_contract_rejects_what_the_fast_path_rejects_unless_a_field_is_unknown(
    payload: dict[str, Any],
) -> None:
    """Both paths enforce the same bounds and reserved values: a line the fast path turns
    down goes to the contract only for its unknown fields, never to pass a looser rule."""
    known = (
        CONTRACT_INFERENCE_FIELDS
        if payload.get("type") == "inference"
        else CONTRACT_FEEDBACK_FIELDS
    )
    if not set(payload) <= known | {"type"}:
        return
    line = json.dumps(payload).encode()
    try:
        decode_fast(line)
        return
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    try:
        event = decode_contract(json.loads(line))
    except ValidationError:
        return
    raise AssertionError(f"the contract accepts what the fast path rejects: {event}")


DECODER = BatchDecoder(max_event_bytes=2048, min_ts=946_684_800_000, max_ts=4_102_444_800_000)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(st.binary(max_size=300), payloads().map(lambda p: json.dumps(p).encode())),
        max_size=20,
    )
)
def test_the_batch_decoder_accounts_for_every_line_and_never_raises(lines: list[bytes]) -> None:
    out = DECODER.decode("feedback", 1, lines, list(range(len(lines))))
    assert sorted(out.offsets + [d.offset for d in out.dead_letters]) == list(range(len(lines)))
    assert all(d.raw == lines[d.offset] and d.reason for d in out.dead_letters)
