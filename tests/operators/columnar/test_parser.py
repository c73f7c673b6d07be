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
        events.extend(out.events())
        got_offsets.extend(out.offsets.tolist())
        dead.extend(out.dead_letters)
        assert out.ts.tolist() == [e.ts for e in out.events()]
        assert out.is_feedback.tolist() == [type(e).__name__ == "Feedback" for e in out.events()]
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
    assert out.events() == want.events
