"""The batch decoder's single pass gives what line-by-line decoding gives: every line
through :func:`operators.decode.decode_fast`, every line it refuses (unknown fields
included) through the pydantic contract, then the range and extra-dim checks — the same
events, offsets and dead letters, in the same order."""

from __future__ import annotations

import gc
import json
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.batches import DeadLetter
from operators.decode import BatchDecoder, DecodedBatch, _reserved_extra_dim, decode_fast
from operators.events import Event
from tests.operators.test_decoder_equivalence import payloads, scalars, values

_Refusals = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)
DECODER = BatchDecoder(max_event_bytes=400, min_ts=946_684_800_000, max_ts=4_102_444_800_000,
                       extra_dims=("region", "client"))  # fmt: skip


def line_by_line(
    decoder: BatchDecoder, topic: str, partition: int, lines: list[bytes], offsets: list[int]
) -> DecodedBatch:
    """The decoder's rules applied one line at a time (as the decoder once ran)."""
    out = DecodedBatch()
    dead = out.dead_letters
    decoded: list[Event | None] = [None] * len(lines)
    slow = []
    for i, line in enumerate(lines):
        if len(line) > decoder.max_event_bytes:
            dead.append(DeadLetter(topic, partition, offsets[i], line, "oversize",
                                   f"event of {len(line)} bytes exceeds max_event_bytes=400"))  # fmt: skip
            continue
        try:
            decoded[i] = decode_fast(line)
        except _Refusals:
            slow.append(i)
    if slow:
        BatchDecoder._contract_path(slow, decoded, topic, partition, lines, offsets, dead)
    for i, event in enumerate(decoded):
        if event is None:
            continue
        if not decoder.min_ts <= event.ts < decoder.max_ts:
            reason = f"ts {event.ts} is outside [{decoder.min_ts}, {decoder.max_ts}) epoch ms"
            dead.append(DeadLetter(topic, partition, offsets[i], lines[i], "ts_out_of_range",
                                   reason))  # fmt: skip
            continue
        if (reason := _reserved_extra_dim(event, decoder.extra_dims)) is not None:
            dead.append(DeadLetter(topic, partition, offsets[i], lines[i], "invalid", reason))
            continue
        out.events.append(event)
        out.offsets.append(offsets[i])
    return out


def typed(event: Event) -> tuple[str, list[tuple[str, str, Any]]]:
    fields = msgspec.structs.asdict(event)
    return type(event).__name__, [(k, type(v).__name__, v) for k, v in fields.items()]


def letters(dead: list[DeadLetter]) -> list[tuple[Any, ...]]:
    return [(d.topic, d.partition, d.offset, d.raw, d.error, d.reason) for d in dead]


@st.composite
def with_unknown_fields(draw: st.DrawFn) -> dict[str, Any]:
    """An event (valid or not) with fields the contract does not name: they are moved
    into `attributes` (explicit ones win), or refused with the contract's reason."""
    event = draw(payloads())
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(["client", "region", "sdk", "x" * 300, "attributes"]))
        event[name] = draw(st.one_of(scalars, values, st.text(min_size=4090, max_size=4100)))
    if draw(st.booleans()):
        event["attributes"] = draw(st.dictionaries(st.sampled_from(["client", "region", "k"]),
                                                   st.sampled_from(["*", "v", "unknown"]), max_size=2))  # fmt: skip
    return event


def dumped(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


lines_strategy = st.lists(
    st.one_of(payloads().map(dumped), with_unknown_fields().map(dumped), st.binary(max_size=30),
              st.sampled_from([b"[]", b"{}", b"1", b'{"type":"inference"}'])),
    max_size=30,
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(lines_strategy)
def test_the_single_pass_equals_line_by_line_decoding(lines: list[bytes]) -> None:
    offsets = [7 + 2 * i for i in range(len(lines))]
    got = DECODER.decode("feedback", 3, lines, offsets)
    want = line_by_line(DECODER, "feedback", 3, lines, offsets)
    assert [typed(e) for e in got.events] == [typed(e) for e in want.events]
    assert got.offsets == want.offsets
    assert letters(got.dead_letters) == letters(want.dead_letters)  # in the same order


def test_a_line_with_an_unknown_field_keeps_it_in_attributes() -> None:
    line = (b'{"type":"inference","request_id":"r","ts":"2026-01-01T00:00:00.072+00:00",'
            b'"model_id":"m","model_version":"v","endpoint":"e","client":"sdk-1.4","n":[1,2]}')  # fmt: skip
    (event,) = BatchDecoder(4096, 0, 1 << 62).decode("t", 0, [line], [5]).events
    assert event.attributes == {"client": "sdk-1.4", "n": "[1,2]"}
    assert event.ts == 1_767_225_600_072


def test_dead_letters_keep_the_line_order_when_the_contract_accepts_a_line() -> None:
    """A line only the contract takes (an unknown field longer than an attribute may be)
    is range-checked after the others, and its dead letter still comes first."""
    head = b'{"type":"inference","request_id":"r","model_id":"m","model_version":"v","endpoint":"e"'
    long = head + b',"ts":5,"client":"' + b"x" * 5000 + b'"}'
    short = head + b',"ts":6}'
    out = BatchDecoder(65_536, 946_684_800_000, 4_102_444_800_000).decode(
        "t", 0, [long, short], [1, 2]
    )
    assert [(d.offset, d.error) for d in out.dead_letters] == [
        (1, "ts_out_of_range"),
        (2, "ts_out_of_range"),
    ]


def test_a_batch_with_refused_lines_leaves_no_reference_cycle() -> None:
    """The contract's verdicts keep no error object past the batch: a validator's
    `ValueError` holds its traceback, whose frames reach the caller's, which hold the
    batch. Kept in a local of a frame on that chain, they made a cycle, and every batch
    with such a line (2 % of the bench's lines are faulty: nearly every batch) stayed in
    memory until the collector's next pass over the older generations."""
    head = b'{"type":"inference","request_id":"r","model_id":"m","endpoint":"e"'
    lines = [
        head + b',"ts":"not a time","model_version":"v"}',  # refused by a validator
        head + b',"ts":6,"model_version":"*"}',  # a reserved dim value
        b'{"type":"feedback","event_id":"e","request_id":"r","ts":6,"kind":"rating",'
        b'"value":9,"user_id":"u"}',
        head + b',"ts":6,"model_version":"v"}',  # valid
    ]
    decoder = BatchDecoder(4096, 0, 1 << 62)
    gc.collect()
    gc.disable()
    try:
        out = decoder.decode("t", 0, lines, [0, 1, 2, 3])
        assert [d.offset for d in out.dead_letters] == [0, 1, 2] and len(out.events) == 1
        del out
        assert gc.collect() == 0  # nothing the decoder left needed the collector
    finally:
        gc.enable()
