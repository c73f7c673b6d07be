"""The columnar parser accepts exactly the events today's BatchDecoder accepts, equal
field for field, and dead-letters the rest with today's error and reason, whatever the
batch split: random valid and mutated events, raw bytes and the lines that could fool a
bulk NDJSON reader (two values on a line, blank lines, a newline inside a line)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.batches import DeadLetter
from operators.columnar.parser import ColumnarParser
from operators.decode import BatchDecoder
from tests.operators.test_decoder_equivalence import payloads

TODAY = BatchDecoder(max_event_bytes=400, min_ts=946_684_800_000, max_ts=4_102_444_800_000,
                     extra_dims=("region",))  # fmt: skip
PARSER = ColumnarParser(TODAY)


def dumped(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


CLICK = b'{"type":"feedback","event_id":"e","request_id":"r","ts":1767225600000,"kind":"click","value":true,"user_id":"u"}'
TWO_VALUES = CLICK + b" " + CLICK.replace(b'"e"', b'"f"')
tricky = st.sampled_from([
    TWO_VALUES, b"   ", CLICK.replace(b"1767225600000", str(2**70).encode()),
    b"", b"   ", b"\n", b"{}", b"[]", b'{"type":"inference"} {"type":"feedback"}',
    b'{"type":"feedback","event_id":"e","request_id":"r","ts":1767225600000,"kind":"click","value":true,"user_id":"u"}\n'
    b'{"type":"feedback","event_id":"f","request_id":"r","ts":1767225600000,"kind":"click","value":true,"user_id":"u"}',
    b' {"type":"feedback","event_id":"e","request_id":"r","ts":"2026-01-01T00:00:00.5+01:00","kind":"thumbs","value":false,"user_id":"u"}',
    b'{"type":"feedback","event_id":"e","request_id":"r","ts":1767225600000,"kind":"click","value":true,"user_id":"u"} 1',
    b'{"type":"inference","request_id":"r","ts":5,"model_id":"m","model_version":"v","endpoint":"e"}',
    b'{"type":"inference","request_id":"r","ts":1767225600000,"model_id":"m","model_version":"v","endpoint":"e","attributes":{"region":"unknown"}}',
    b'{"type":"inference","request_id":"r","ts":1767225600000,"model_id":"m","model_version":"v","endpoint":"e","client":"x"}',
])  # fmt: skip
lines_strategy = st.lists(
    st.one_of(payloads().map(dumped), payloads().map(dumped), tricky, st.binary(max_size=40)),
    max_size=40,
)


def letters(dead: list[DeadLetter]) -> list[tuple[Any, ...]]:
    return sorted((d.offset, d.raw, d.error, d.reason, d.topic, d.partition) for d in dead)


@settings(max_examples=400, deadline=None)
@given(lines_strategy, st.data())
def test_the_parser_equals_todays_decoder_at_any_split(
    lines: list[bytes], data: st.DataObject
) -> None:
    offsets = [100 + i for i in range(len(lines))]
    want = TODAY.decode("feedback", 3, lines, offsets)
    cuts = sorted({0, len(lines), *data.draw(st.lists(st.integers(0, len(lines)), max_size=4))})
    events: list[Any] = []
    got_offsets: list[int] = []
    dead: list[DeadLetter] = []
    for a, b in itertools.pairwise(cuts):
        out = PARSER.parse("feedback", 3, lines[a:b], offsets[a:b])
        events.extend(out.events)
        got_offsets.extend(out.offsets.tolist())
        dead.extend(out.dead_letters)
        assert out.ts.tolist() == [e.ts for e in out.events]
        assert out.is_feedback.tolist() == [type(e).__name__ == "Feedback" for e in out.events]
    assert got_offsets == want.offsets
    assert events == want.events
    assert letters(dead) == letters(want.dead_letters)


def test_a_clean_batch_is_read_in_one_call_and_mixed_ts_become_epoch_ms() -> None:
    lines = [
        b'{"type":"feedback","event_id":"e1","request_id":"r","ts":"2026-01-01T00:00:00.250Z","kind":"rating","value":4,"user_id":"u"}',
        b'{"type":"feedback","event_id":"e2","request_id":"r","ts":1767225600251,"kind":"rating","value":5,"user_id":"u"}',
    ] * 10  # fmt: skip
    out = PARSER.parse("feedback", 0, lines, list(range(20)))
    assert out.ts.tolist() == [1_767_225_600_250, 1_767_225_600_251] * 10
    assert out.dead_letters == [] and np.all(out.is_feedback)


def test_two_values_on_a_line_next_to_a_blank_line_are_both_dead_letters() -> None:
    """decode_lines would read them as two events for two lines: the pre-filter and the
    count check must keep them apart."""
    lines = [CLICK] * 10 + [TWO_VALUES, b"   "]
    out = PARSER.parse("feedback", 0, lines, list(range(12)))
    want = TODAY.decode("feedback", 0, lines, list(range(12)))
    assert [d.offset for d in out.dead_letters] == [10, 11]
    assert letters(out.dead_letters) == letters(want.dead_letters)
    assert out.events == want.events


WIDE = BatchDecoder(max_event_bytes=65_536, min_ts=TODAY.min_ts, max_ts=TODAY.max_ts,
                    extra_dims=("region",))  # fmt: skip


class RecordingDecoder(BatchDecoder):
    """Today's decoder, noting the lines it is asked to judge."""

    def __init__(self) -> None:
        super().__init__(WIDE.max_event_bytes, WIDE.min_ts, WIDE.max_ts, WIDE.extra_dims)
        self.asked: list[bytes] = []

    def decode(self, topic: str, partition: int, lines: list[bytes], offsets: list[int]) -> Any:
        self.asked.extend(lines)
        return super().decode(topic, partition, lines, offsets)


def test_lines_with_unknown_fields_stay_off_the_judge_and_keep_them_in_attributes() -> None:
    """Their unknown fields are moved into `attributes` on the parser's path (today's
    rule, not pydantic); only a line whose moved attributes the Structs refuse (a name
    over 256 characters) is judged, and today's decoder keeps it."""
    unknown = [
        CLICK.replace(b'"u"}', b'"u","client":"sdk","n":[1,{"a":2.5}]}'),
        CLICK.replace(b'"u"}', b'"u","attributes":{"client":"mine"},"client":"x"}'),
        b'{"type":"inference","request_id":"r","ts":"2026-01-01T00:00:00Z","model_id":"m",'
        b'"model_version":"v","endpoint":"e","region":"eu","client":7}',
    ]
    too_long = CLICK.replace(b'"u"}', b'"u","' + b"k" * 300 + b'":"x"}')
    lines = [CLICK] * 20 + unknown + [CLICK] * 20 + [too_long]
    judge = RecordingDecoder()
    out = ColumnarParser(judge).parse("feedback", 0, lines, list(range(len(lines))))
    want = WIDE.decode("feedback", 0, lines, list(range(len(lines))))
    assert out.events == want.events and out.dead_letters == want.dead_letters == []
    assert judge.asked == [too_long]
    assert out.events[20].attributes == {"client": "sdk", "n": '[1,{"a":2.5}]'}
    assert out.events[21].attributes == {"client": "mine"}


unknown_names = st.one_of(
    st.sampled_from(["client", "extra", "region", "attributes", "kind", "model_id", "type"]),
    st.text(max_size=6), st.text(min_size=250, max_size=300),
)  # fmt: skip
unknown_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6),
    st.text(min_size=4090, max_size=4100), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(payloads(), st.dictionaries(unknown_names, unknown_values, max_size=3)),
                min_size=1, max_size=12))  # fmt: skip
def test_unknown_fields_of_any_name_and_value_end_as_today(
    drawn: list[tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    lines = [dumped({**payload, **extra}) for payload, extra in drawn]
    offsets = list(range(len(lines)))
    want = WIDE.decode("feedback", 1, lines, offsets)
    out = ColumnarParser(WIDE).parse("feedback", 1, lines, offsets)
    assert out.events == want.events
    assert out.offsets.tolist() == want.offsets
    assert letters(out.dead_letters) == letters(want.dead_letters)


def test_an_unknown_field_seen_once_sends_its_next_lines_past_the_reader_exactly() -> None:
    """After a batch teaches the parser `client`, the next batch's lines that hold
    ``"client":`` skip the bulk reader; one where it is an attribute's key (no unknown
    field) is read by the judge, and every line ends as today's decoder has it."""
    judge = RecordingDecoder()
    parser = ColumnarParser(judge)
    with_client = CLICK.replace(b'"u"}', b'"u","client":"x"}')
    parser.parse("feedback", 0, [CLICK, with_client], [0, 1])
    assert parser.unknown_keys == {b'"client":': None}
    in_attributes = CLICK.replace(b'"u"}', b'"u","attributes":{"client":"y"}}')
    lines = [CLICK, with_client, in_attributes, with_client.replace(b'"x"', b"null"), CLICK]
    judge.asked.clear()
    out = parser.parse("feedback", 0, lines, list(range(5)))
    want = WIDE.decode("feedback", 0, lines, list(range(5)))
    assert out.events == want.events and out.dead_letters == want.dead_letters == []
    assert judge.asked == [in_attributes]
