"""The columnar clock gives, at every event, the watermark and lateness that the
row-wise PartitionClock and is_final give event by event, whatever the batch split."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.clock import PartitionClock
from operators.columnar.clock import ColumnarClock
from operators.windows import is_final

SLICE = 1_000


def new_clock() -> PartitionClock:
    return PartitionClock(max_out_of_orderness=2_000, join_wait=500, idle_timeout=10_000,
                          bounded=False, last_data=0.0)  # fmt: skip


def row_wise(ts: list[int], ends: list[int], lateness: int) -> tuple[list[float], list[bool]]:
    clock = new_clock()
    marks, late = [], []
    for t, end in zip(ts, ends, strict=True):
        marks.append(clock.observe(t))
        late.append(is_final(end, clock.emitted, lateness))
    return marks, late


def cut(n: int, data: st.DataObject) -> list[int]:
    """Random batch boundaries over n events."""
    points = data.draw(st.lists(st.integers(0, n), max_size=6))
    return sorted({0, n, *points})


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.integers(1_767_225_600_000, 1_767_225_660_000), max_size=80),
    st.integers(0, 3_000),
    st.data(),
)
def test_watermark_and_lateness_equal_row_wise_at_any_split(
    ts: list[int], lateness: int, data: st.DataObject
) -> None:
    ends = [t - t % SLICE + data.draw(st.sampled_from([SLICE, 5 * SLICE])) for t in ts]
    want_marks, want_late = row_wise(ts, ends, lateness)
    clock = ColumnarClock(new_clock())
    marks: list[float] = []
    late: list[bool] = []
    bounds = cut(len(ts), data)
    for a, b in itertools.pairwise(bounds):
        batch = np.array(ts[a:b], dtype=np.int64)
        got = clock.observe(batch)
        marks.extend(got.tolist())
        late.extend(
            clock.late(np.array(ends[a:b], dtype=np.int64), clock.emitted(got), lateness).tolist()
        )
    assert marks == want_marks
    assert late == want_late
    reference = new_clock()
    for t in ts:
        reference.observe(t)
    assert (clock.clock.max_ts, clock.clock.watermark) == (reference.max_ts, reference.watermark)


def test_the_watermark_never_goes_back_from_an_advanced_clock() -> None:
    """A watermark moved by idleness (advance) is a floor for the batch's marks."""
    clock = new_clock()
    clock.watermark = 1_000_000.0
    marks = ColumnarClock(clock).observe(np.array([10, 999_999_999], dtype=np.int64))
    assert marks.tolist() == [1_000_000.0, 999_997_999.0]
