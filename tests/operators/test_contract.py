"""Event contract v1 through the batch decoder: what is accepted, what is a dead letter."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from operators.contract import FEEDBACK_KINDS, json_schema
from operators.decode import BatchDecoder

DECODER = BatchDecoder(max_event_bytes=4096, min_ts=946_684_800_000, max_ts=4_102_444_800_000)
TS = 1_767_225_600_000

INFERENCE = {
    "type": "inference",
    "request_id": "r-1",
    "ts": TS,
    "model_id": "fraud",
    "model_version": "v1",
    "endpoint": "/score",
}
FEEDBACK = {"type": "feedback", "event_id": "e-1", "request_id": "r-1", "ts": TS, "user_id": "u-1"}

VALID_VALUES: dict[str, list[Any]] = {
    "label": ["fraud", 3, 2.5],
    "thumbs": [True, False],
    "rating": [1, 4.5, 5],
    "reward": [-1.5, 0, 7],
    "click": [True, False],
    "conversion": [True],
    "dwell": [0, 12.5],
    "preference": [{"winner": "a", "policy_a": "p1", "policy_b": "p2"},
                   {"winner": "tie", "policy_a": "p1", "policy_b": "p2"}],
    "report": [{"category": "chargeback", "amount": 12.5}, {"category": "abuse", "amount": None},
               {"category": "spam"}],
}  # fmt: skip
INVALID_VALUES: dict[str, list[Any]] = {
    "label": [True, None, {"x": 1}],
    "thumbs": [1, "true", None],
    "rating": [0, 5.5, "4", True],
    "reward": ["1", True, None, 1e308, -(2**64)],
    "click": [1, "yes"],
    "conversion": [0],
    "dwell": [-1, "10", 1e308],
    "preference": [{"winner": "c", "policy_a": "p1", "policy_b": "p2"}, {"winner": "a"},
                   {"winner": "a", "policy_a": "p1", "policy_b": "p2", "extra": 1}],
    "report": [{"amount": 3}, {"category": "x", "amount": "3"}, "fraud"],
}  # fmt: skip


def decode(*objects: Any) -> Any:
    lines = [o if isinstance(o, bytes) else json.dumps(o).encode() for o in objects]
    return DECODER.decode("feedback", 0, lines, list(range(100, 100 + len(lines))))


def test_every_kind_lists_valid_and_invalid_values() -> None:
    assert set(VALID_VALUES) == set(FEEDBACK_KINDS) == set(INVALID_VALUES)


@pytest.mark.parametrize(("kind", "value"), [(k, v) for k, vs in VALID_VALUES.items() for v in vs])
def test_valid_feedback_of_every_kind(kind: str, value: Any) -> None:
    out = decode({**FEEDBACK, "kind": kind, "value": value})
    assert out.dead_letters == []
    event = out.events[0]
    assert event.kind == kind
    expected = {**value, "amount": value.get("amount")} if kind == "report" else value
    assert event.value == expected and type(event.value) is type(expected)


@pytest.mark.parametrize(
    ("kind", "value"), [(k, v) for k, vs in INVALID_VALUES.items() for v in vs]
)
def test_invalid_value_of_every_kind_is_a_dead_letter(kind: str, value: Any) -> None:
    out = decode({**FEEDBACK, "kind": kind, "value": value})
    assert out.events == []
    (dead,) = out.dead_letters
    assert dead.error == "invalid" and dead.reason.startswith("feedback.value")
    assert not any(internal in dead.reason for internal in ("Input should", "constrained", "["))
    assert (dead.topic, dead.partition, dead.offset) == ("feedback", 0, 100)


def test_inference_defaults_and_both_timestamp_forms() -> None:
    out = decode(INFERENCE, {**INFERENCE, "request_id": "r-2", "ts": "2026-01-01T00:00:00.000Z"},
                 {**INFERENCE, "request_id": "r-3", "ts": "2026-01-01T01:00:00+01:00"})  # fmt: skip
    assert out.dead_letters == []
    assert [e.ts for e in out.events] == [TS, TS, TS]
    first = out.events[0]
    assert (first.segment, first.tenant, first.deployment) == ("default", "default", "primary")


@pytest.mark.parametrize(
    "ts", ["2026-01-01T00:00:00", "2026-01-01", "yesterday", 1.5, True, None, "1767225600000"]
)
def test_bad_timestamps_are_dead_letters(ts: Any) -> None:
    out = decode({**INFERENCE, "ts": ts})
    assert out.events == [] and out.dead_letters[0].error == "invalid"


def test_timestamps_outside_the_sane_range_are_dead_letters() -> None:
    out = decode({**INFERENCE, "ts": 5}, {**INFERENCE, "ts": "2200-01-01T00:00:00Z"})
    assert [d.error for d in out.dead_letters] == ["ts_out_of_range"] * 2


def test_inference_field_ranges() -> None:
    bad = [{**INFERENCE, "confidence": 1.2}, {**INFERENCE, "latency_ms": -1},
           {**INFERENCE, "request_id": ""}, {**INFERENCE, "request_id": "x" * 129},
           {**INFERENCE, "prediction": True}, {k: v for k, v in INFERENCE.items() if k != "model_id"}]  # fmt: skip
    out = decode(*bad)
    assert len(out.dead_letters) == len(bad) and out.events == []


def test_unknown_fields_are_kept_in_attributes() -> None:
    out = decode({**INFERENCE, "client": "sdk", "retries": 2, "attributes": {"client": "explicit"}},
                 {**FEEDBACK, "kind": "thumbs", "value": True, "page": {"id": 7}})  # fmt: skip
    inference, feedback = out.events
    assert inference.attributes == {"client": "explicit", "retries": "2"}
    assert feedback.attributes == {"page": '{"id":7}'}


def test_malformed_lines_never_raise_and_keep_their_position() -> None:
    lines = [b"{not json", b"[1,2]", b"\xff\xfe", b"", b'{"type": "inference", "ts": NaN}',
             b'{"a": 1e999}', b"[" * 4000, b"x" * 5000]  # fmt: skip
    out = DECODER.decode("inferences", 3, lines, list(range(len(lines))))
    assert out.events == []
    errors = {d.offset: d.error for d in out.dead_letters}
    assert errors == {0: "malformed_json", 1: "not_object", 2: "malformed_json", 3: "malformed_json",
                      4: "malformed_json", 5: "malformed_json", 6: "malformed_json", 7: "oversize"}  # fmt: skip
    assert all(d.raw == lines[d.offset] for d in out.dead_letters)


def test_unknown_kind_and_type() -> None:
    out = decode({**FEEDBACK, "kind": "emoji", "value": 1}, {**FEEDBACK, "type": "click"},
                 {k: v for k, v in FEEDBACK.items() if k != "type"})  # fmt: skip
    assert len(out.dead_letters) == 3


def test_a_batch_mixing_good_and_bad_keeps_the_good_in_order() -> None:
    out = decode(INFERENCE, {**FEEDBACK, "kind": "rating", "value": 9},
                 {**FEEDBACK, "kind": "rating", "value": 3}, b"oops")  # fmt: skip
    assert [type(e).__name__ for e in out.events] == ["Inference", "Feedback"]
    assert [d.offset for d in sorted(out.dead_letters, key=lambda d: d.offset)] == [101, 103]


def test_published_schema_is_current() -> None:
    from pathlib import Path

    published = json.loads((Path(__file__).parents[2] / "config" / "event-schema.json").read_text())
    assert published == json.loads(json.dumps(json_schema())), "run `pulse schema --write`"


def test_deeply_nested_json_is_a_dead_letter() -> None:
    decoder = BatchDecoder(max_event_bytes=1 << 20, min_ts=0, max_ts=1 << 62)
    deep = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    out = decoder.decode("feedback", 0, [deep], [0])
    assert out.events == [] and out.dead_letters[0].error == "malformed_json"


# ---- bounds, reserved dim values, readable reasons -----------------------------------

HUGE = [1e308, -1e308, 1e9 + 1, -1e9 - 1, 2**63, 2**64, 10**400, 1_000_000_001]
TINY = [5e-324, -0.0, 0, 1e9, 1_000_000_000]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 24 else f"{text[:8]}..({len(text)} digits)"


@pytest.mark.parametrize("value", HUGE, ids=_short)
@pytest.mark.parametrize("kind", ["reward", "dwell", "report"])
def test_numbers_the_aggregates_cannot_hold_are_dead_letters(kind: str, value: Any) -> None:
    payload = {"category": "c", "amount": value} if kind == "report" else value
    out = decode({**FEEDBACK, "kind": kind, "value": payload})
    assert out.events == []
    (dead,) = out.dead_letters
    field = "feedback.value.amount" if kind == "report" else "feedback.value"
    assert dead.error == "invalid" and dead.reason.startswith(f"{field}: ")
    assert "1e9" in dead.reason


@pytest.mark.parametrize("value", TINY)
@pytest.mark.parametrize("kind", ["reward", "dwell", "report"])
def test_tiny_and_boundary_numbers_are_valid(kind: str, value: Any) -> None:
    payload = {"category": "c", "amount": value} if kind == "report" else value
    out = decode({**FEEDBACK, "kind": kind, "value": payload})
    assert out.dead_letters == []
    got = out.events[0].value["amount"] if kind == "report" else out.events[0].value
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [("latency_ms", 1e9, True), ("latency_ms", 1e9 + 1, False), ("latency_ms", 1e308, False),
     ("latency_ms", 2**64, False), ("latency_ms", 5e-324, True), ("latency_ms", -0.0, True),
     ("confidence", 5e-324, True), ("confidence", 2**63, False),
     ("prediction", 1e308, True), ("prediction", 2**63 - 1, True), ("prediction", 2**63, False),
     ("prediction", -(2**63) - 1, False), ("prediction", 10**400, False)],
)  # fmt: skip
def test_inference_number_bounds(field: str, value: Any, ok: bool) -> None:
    out = decode({**INFERENCE, field: value})
    assert (len(out.events), len(out.dead_letters)) == ((1, 0) if ok else (0, 1))
    if not ok:
        assert out.dead_letters[0].reason.startswith(f"inference.{field}: must be ")


@pytest.mark.parametrize("value", [2**63, 2**64, -(2**63) - 1, 10**400], ids=_short)
def test_integer_labels_beyond_int64_are_dead_letters(value: int) -> None:
    out = decode({**FEEDBACK, "kind": "label", "value": value})
    assert [d.reason for d in out.dead_letters] == [
        "feedback.value: label must be a string or a finite number (integers within int64)"
    ]


@pytest.mark.parametrize("value", ["*", "unknown"])
@pytest.mark.parametrize(
    "dim", ["model_id", "model_version", "deployment", "segment", "endpoint", "tenant"]
)
def test_reserved_dim_values_are_dead_letters(dim: str, value: str) -> None:
    out = decode({**INFERENCE, dim: value}, {**INFERENCE, dim: f" {value}"})
    (dead,) = out.dead_letters
    assert dead.error == "invalid" and dead.offset == 100
    assert dead.reason.startswith(f'inference.{dim}: "{value}" is reserved')
    assert [getattr(e, dim) for e in out.events] == [f" {value}"]


def test_feedback_may_name_a_tenant_checked_as_an_inference_tenant_is() -> None:
    """Optional (absent: not checked at the join), a dim like the inference's tenant."""
    thumbs = {**FEEDBACK, "kind": "thumbs", "value": True}
    lines = [thumbs, {**thumbs, "tenant": "acme"}, {**thumbs, "tenant": "*"},
             {**thumbs, "tenant": "unknown"}, {**thumbs, "tenant": None}, {**thumbs, "tenant": ""},
             {**thumbs, "tenant": "x" * 257}, {**thumbs, "tenant": 5}]  # fmt: skip
    out = decode(*lines)
    assert out.offsets == [100, 101]
    absent, named = out.events
    assert absent.tenant is msgspec.UNSET and "tenant" not in absent.attributes
    assert named.tenant == "acme" and named.attributes == {}
    reasons = {d.offset: d.reason for d in out.dead_letters}
    assert reasons[102] == 'feedback.tenant: "*" is reserved (the rollup marker)'
    assert reasons[103] == 'feedback.tenant: "unknown" is reserved (the dim of unjoined feedback)'
    rule = 'feedback.tenant: must be a string of 1-256 characters, not "*" or "unknown"'
    assert [reasons[i] for i in (104, 105, 106, 107)] == [rule] * 4


@pytest.mark.parametrize("value", ["*", "unknown"])
def test_reserved_values_in_configured_extra_dims_are_dead_letters(value: str) -> None:
    decoder = BatchDecoder(4096, min_ts=0, max_ts=1 << 62, extra_dims=("region", "plan"))
    lines = [
        {**INFERENCE, "attributes": {"region": value}},
        {**INFERENCE, "plan": value},  # an unknown top-level field lands in attributes
        {**FEEDBACK, "kind": "thumbs", "value": True, "attributes": {"plan": value}},
        {**INFERENCE, "attributes": {"other": value, "region": "eu"}},
    ]
    out = decoder.decode("t", 0, [json.dumps(o).encode() for o in lines], [0, 1, 2, 3])
    reasons = {d.offset: d.reason for d in out.dead_letters}
    assert sorted(reasons) == [0, 1, 2] and out.offsets == [3]
    assert reasons[0].startswith(f'inference.attributes.region: "{value}" is reserved')
    assert reasons[2].startswith(f'feedback.attributes.plan: "{value}" is reserved')


READABLE = [
    ({**FEEDBACK, "kind": "label", "value": True},
     "feedback.value: label must be a string or a finite number (integers within int64)"),
    ({**INFERENCE, "confidence": 1.2}, "inference.confidence: must be between 0 and 1, or null"),
    ({**INFERENCE, "confidence": "high"}, "inference.confidence: must be between 0 and 1, or null"),
    ({**INFERENCE, "segment": "*"}, 'inference.segment: "*" is reserved (the rollup marker)'),
    ({**FEEDBACK, "kind": "rating", "value": 9},
     "feedback.value: rating must be a number between 1 and 5"),
    ({**FEEDBACK, "kind": "reward", "value": 1e308},
     "feedback.value: reward must be a number between -1e9 and 1e9"),
    ({**FEEDBACK, "kind": "report", "value": {"amount": "3"}},
     "feedback.value.category: required; "
     "feedback.value.amount: must be a number between -1e9 and 1e9, or null"),
    ({**FEEDBACK, "kind": "preference", "value": {"winner": "c", "policy_a": "a", "policy_b": "b", "x": 1}},
     'feedback.value.winner: must be "a", "b" or "tie"; feedback.value.x: is not a field of the contract'),
    ({k: v for k, v in INFERENCE.items() if k != "model_id"}, "inference.model_id: required"),
    ({**INFERENCE, "ts": 1.5},
     "inference.ts: must be an RFC 3339 timestamp with a zone, or epoch milliseconds (an integer)"),
    ({**FEEDBACK, "kind": "emoji", "value": 1},
     "feedback.kind: must be one of label, thumbs, rating, reward, click, conversion, dwell, "
     "preference, report"),
    ({**FEEDBACK, "type": "click"}, 'type: must be "inference" or "feedback"'),
    ({**INFERENCE, "attributes": {"k": 1}},
     "inference.attributes.k: must map strings of at most 256 characters to strings of at most 4096"),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "reason"), READABLE)
def test_dead_letter_reasons_read_like_the_contract(payload: dict[str, Any], reason: str) -> None:
    (dead,) = decode(payload).dead_letters
    assert (dead.error, dead.reason) == ("invalid", reason)


def test_a_reason_names_at_most_three_fields() -> None:
    bad = {**INFERENCE, "model_id": 1, "model_version": 2, "endpoint": 3, "segment": 4, "tenant": 5}
    (dead,) = decode(bad).dead_letters
    assert dead.reason.count(": must be") == 3 and dead.reason.endswith("; and 2 more")


def test_the_partition_stage_dead_letters_reserved_values_of_its_extra_dims() -> None:
    from dataclasses import replace

    from operators.batches import RawBatch, TableRows
    from operators.partition_stage import PartitionStage
    from operators.stats import FlowStats
    from tests.harness import configs, semantics

    config = replace(configs(semantics(partitions=1))[0], extra_dims=("region",))
    stage = PartitionStage(config, FlowStats(), clock=lambda: 0.0)
    lines = [json.dumps({**INFERENCE, "request_id": f"r{i}", "region": region}).encode()
             for i, region in enumerate(["eu", "*", "unknown"])]  # fmt: skip
    out, _ = stage.on_item(RawBatch(0, "inferences", "inferences", lines, [0, 1, 2]))
    (dead,) = [o for o in out if isinstance(o, TableRows) and o.table == "dead_letters"]
    assert dead.columns["offset"] == [1, 2]
    assert [r.split(":")[0] for r in dead.columns["reason"]] == ["inference.attributes.region"] * 2


@pytest.mark.parametrize(("length", "ok"), [(65_536, True), (65_537, False)])
def test_label_and_prediction_strings_have_one_limit_on_both_paths(length: int, ok: bool) -> None:
    decoder = BatchDecoder(max_event_bytes=1 << 20, min_ts=0, max_ts=1 << 62)
    lines = [{**FEEDBACK, "kind": "label", "value": "x" * length},
             {**INFERENCE, "prediction": "y" * length}]  # fmt: skip
    out = decoder.decode("t", 0, [json.dumps(o).encode() for o in lines], [0, 1])
    assert len(out.events) == (2 if ok else 0)
    assert [d.reason.split(":")[0] for d in out.dead_letters] == (
        [] if ok else ["feedback.value", "inference.prediction"]
    )
