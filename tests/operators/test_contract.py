"""Event contract v1 through the batch decoder: what is accepted, what is a dead letter."""

from __future__ import annotations

import json
from typing import Any

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
    "reward": ["1", True, None],
    "click": [1, "yes"],
    "conversion": [0],
    "dwell": [-1, "10"],
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
    assert dead.error == "invalid" and "value" in dead.reason
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
