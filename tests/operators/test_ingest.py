"""Ingestion bodies: splitting, the flow's own verdict per item, the tenant and type rules."""

from __future__ import annotations

import json

import msgspec

from operators.decode import BatchDecoder
from operators.events import Inference
from operators.ingest import IngestValidator, split_body
from operators.synthetic import TrafficGenerator, TrafficProfile

MIN_TS, MAX_TS = 946_684_800_000, 4_102_444_800_000
DECODER = BatchDecoder(max_event_bytes=4096, min_ts=MIN_TS, max_ts=MAX_TS)
VALIDATOR = IngestValidator(DECODER)
INFERENCE = {
    "type": "inference",
    "request_id": "r1",
    "ts": "2026-01-01T00:00:00Z",
    "model_id": "m",
    "model_version": "v1",
    "endpoint": "chat",
}
FEEDBACK = {
    "type": "feedback",
    "event_id": "e1",
    "request_id": "r1",
    "ts": "2026-01-01T00:00:01Z",
    "kind": "thumbs",
    "value": True,
    "user_id": "u1",
}


def _line(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_a_body_is_one_object_an_array_or_ndjson() -> None:
    one = _line(INFERENCE)
    assert split_body(b"  " + one + b"\n", ndjson=False) == [one]
    assert split_body(_line([INFERENCE, FEEDBACK]), ndjson=False) == [one, _line(FEEDBACK)]
    ndjson = one + b"\r\n\n" + _line(FEEDBACK) + b"\n"
    assert split_body(ndjson, ndjson=True) == [one, _line(FEEDBACK)]
    # Not one JSON value: read as NDJSON whatever the content type said.
    assert split_body(ndjson, ndjson=False) == [one, _line(FEEDBACK)]
    assert split_body(b"{bad\n" + one, ndjson=False) == [b"{bad", one]
    assert split_body(b"", ndjson=False) == []
    # An array is read as NDJSON lines only when asked to.
    assert split_body(_line([INFERENCE]), ndjson=True) == [_line([INFERENCE])]


def test_array_elements_keep_their_text_and_lose_only_newlines() -> None:
    body = b'[{"type": "inference",\n  "big": 123456789012345678901234567890, "f": 0.10000000000000000001}]'
    (item,) = split_body(body, ndjson=False)
    assert b"\n" not in item
    assert b"123456789012345678901234567890" in item and b"0.10000000000000000001" in item
    assert msgspec.json.decode(item) == msgspec.json.decode(body)[0]


def test_a_bad_item_never_drops_the_good_ones_and_errors_name_the_fields() -> None:
    bad = {**INFERENCE, "request_id": "", "confidence": 3}
    items = [_line(INFERENCE), _line(bad), b"[1]", b"{nope", _line({**INFERENCE, "ts": 5})]
    batch = VALIDATOR.validate(items, "inference", tenant=None)
    assert batch.lines == [items[0]]
    assert (batch.accepted, batch.rejected) == (1, 4)
    assert [r.accepted for r in batch.results] == [True, False, False, False, False]
    assert [(e.code, e.path) for e in batch.results[1].errors] == [
        ("invalid", "inference.request_id"),
        ("invalid", "inference.confidence"),
    ]
    assert [(e.code, e.path) for e in batch.results[2].errors] == [("not_object", "")]
    assert [(e.code, e.path) for e in batch.results[3].errors] == [("malformed_json", "")]
    assert [(e.code, e.path) for e in batch.results[4].errors] == [
        ("ts_out_of_range", "inference.ts")
    ]
    assert [r.event_id for r in batch.results] == ["r1", "", None, None, "r1"]


def test_field_errors_are_the_dead_letter_reason_split_per_field() -> None:
    bad = {**FEEDBACK, "value": "yes", "user_id": 7}
    (result,) = VALIDATOR.validate([_line(bad)], "feedback", tenant=None).results
    (dead,) = DECODER.decode("t", 0, [_line(bad)], [0]).dead_letters
    assert "; ".join(f"{e.path}: {e.reason}" for e in result.errors) == dead.reason
    assert result.event_id == "e1"


def test_reserved_extra_dim_is_reported_on_its_attribute() -> None:
    validator = IngestValidator(BatchDecoder(4096, MIN_TS, MAX_TS, extra_dims=("region",)))
    item = _line({**INFERENCE, "attributes": {"region": "*"}})
    (result,) = validator.validate([item], "inference", tenant=None).results
    assert [(e.code, e.path) for e in result.errors] == [("invalid", "inference.attributes.region")]


def test_the_endpoint_takes_its_own_type_only() -> None:
    batch = VALIDATOR.validate([_line(FEEDBACK), _line(INFERENCE)], "inference", tenant=None)
    assert batch.lines == [_line(INFERENCE)]
    (error,) = batch.results[0].errors
    assert (error.code, error.path) == ("wrong_type", "type")
    assert '"inference"' in error.reason and '"feedback"' in error.reason


def test_a_tenant_key_writes_its_tenant_into_inferences_without_one() -> None:
    items = [_line(INFERENCE), b"{ }", _line({**INFERENCE, "tenant": "acme"})]
    batch = VALIDATOR.validate(items, "inference", tenant="acme")
    assert batch.results[1].errors  # {} is still invalid, with the tenant written in
    first, third = batch.lines
    assert msgspec.json.decode(first) == {**INFERENCE, "tenant": "acme"}
    assert third == items[2]  # unchanged when it names the key's tenant
    (event,) = DECODER.decode("t", 0, [first], [0]).events
    assert isinstance(event, Inference) and event.tenant == "acme"


def test_an_operator_key_leaves_the_tenant_as_sent() -> None:
    items = [_line(INFERENCE), _line({**INFERENCE, "tenant": "other"})]
    assert VALIDATOR.validate(items, "inference", tenant=None).lines == items


def test_claiming_another_tenant_is_rejected_and_alone_is_a_403() -> None:
    spoof = _line({**INFERENCE, "tenant": "other"})
    batch = VALIDATOR.validate([spoof], "inference", tenant="acme")
    (error,) = batch.results[0].errors
    assert (error.code, error.path) == ("tenant", "inference.tenant")
    assert "acme" in error.reason
    assert batch.only_tenant_rejections
    # With other kinds of rejection, or anything accepted, it is not a tenant-only refusal.
    assert not VALIDATOR.validate([spoof, b"{"], "inference", "acme").only_tenant_rejections
    assert not VALIDATOR.validate(
        [spoof, _line(INFERENCE)], "inference", "acme"
    ).only_tenant_rejections


def test_feedback_is_checked_for_a_claimed_tenant_and_given_the_key_tenant() -> None:
    items = [_line(FEEDBACK), _line({**FEEDBACK, "event_id": "e2", "tenant": "other"})]
    batch = VALIDATOR.validate(items, "feedback", tenant="acme")
    assert [msgspec.json.decode(line) for line in batch.lines] == [{**FEEDBACK, "tenant": "acme"}]
    assert DECODER.decode("t", 0, batch.lines, [0]).events[0].tenant == "acme"
    assert [e.code for e in batch.results[1].errors] == ["tenant"]


def test_accepts_exactly_what_the_flow_decodes() -> None:
    """Generated traffic (with every kind of invalid line): per endpoint, the accepted
    lines are the lines of that type the flow's decoder accepts, in order."""
    profile = TrafficProfile(seed=3, duration_s=60, rate=20, invalid_rate=0.2)
    lines = [e.line for e in TrafficGenerator(profile).events()]
    decoded = DECODER.decode("t", 0, lines, list(range(len(lines))))
    valid = {i for i in decoded.offsets}
    for kind in ("inference", "feedback"):
        batch = VALIDATOR.validate(lines, kind, tenant=None)
        expected = [
            line
            for i, line in enumerate(lines)
            if i in valid and msgspec.json.decode(line)["type"] == kind
        ]
        assert batch.lines == expected
        assert batch.rejected == len(lines) - len(expected)
