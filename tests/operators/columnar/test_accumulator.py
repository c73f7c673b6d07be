"""The accumulator adds exactly what the partition stage's per-event path added before it
(its records, `_accumulate`, and `_late` with `_class_parts` / `_keyed_part`, copied
below as they were at 6c4f4c4), on time and late alike, at any batch split."""

from __future__ import annotations

import itertools
import math
from dataclasses import fields
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.cells import EXTRA_KEY_BITS
from operators.columnar.accumulator import Accumulator
from operators.columnar.joined import (
    NONE,
    FeedbackSide,
    InferenceSide,
    JoinedColumns,
    JoinedRecords,
)
from operators.families import (
    CLASSES,
    FN,
    FP,
    LATENCY,
    MAIN,
    PREFERENCES,
    REPORT_AMOUNT,
    REPORT_COUNT,
    REPORTS,
    TP,
    WINNER_CODES,
    registry,
    widths,
)
from operators.metrics import (
    KIND_CODES,
    MainLayout,
    feedback_fields,
    feedback_numbers,
    inference_fields,
    value_numbers,
)
from operators.sketch import buckets_of
from operators.slices import NO_CUTOFF, FamilyDelta, SliceDeltas

BINS = 4
LAYOUT = MainLayout(BINS)
WIDTH = LAYOUT.width
SLICE = 1000

cutoffs = st.one_of(st.just(NO_CUTOFF), st.sampled_from([500.0, 2500.0]))
slices = st.integers(0, 3).map(lambda i: i * SLICE)
cells = st.integers(0, 3)
inference = st.tuples(
    slices, cells,
    st.one_of(st.none(), st.floats(0, 1)),
    st.one_of(st.none(), st.floats(0, 1e4), st.just(0.0)),
    cutoffs,
)  # fmt: skip
values = {
    "label": st.one_of(st.sampled_from(["a", "b", "c"]), st.integers(0, 2), st.floats(0, 2)),
    "thumbs": st.booleans(),
    "rating": st.integers(1, 5),
    "reward": st.floats(-1000, 1000),
    "click": st.booleans(),
    "conversion": st.booleans(),
    "dwell": st.floats(0, 1e4),
    "preference": st.tuples(
        st.sampled_from(["p", "q"]),
        st.sampled_from(["q", "r"]),
        st.sampled_from(list(WINNER_CODES)),
    ).map(lambda t: {"policy_a": t[0], "policy_b": t[1], "winner": t[2]}),
    "report": st.tuples(
        st.sampled_from(["fraud", "abuse"]), st.one_of(st.none(), st.floats(0, 1e6))
    ).map(lambda t: {"category": t[0], "amount": t[1]}),
}
feedback = st.sampled_from(sorted(values)).flatmap(
    lambda kind: st.tuples(
        slices, cells, st.just(kind), values[kind], st.booleans(), st.booleans(),
        st.one_of(st.none(), st.tuples(st.integers(0, 2), st.integers(0, 2))), cutoffs,
    )
)  # fmt: skip
batches = st.tuples(st.lists(inference, max_size=30), st.lists(feedback, max_size=40))

Inference = tuple[int, int, float | None, float | None, float]
Feedback = tuple[int, int, str, Any, bool, bool, tuple[int, int] | None, float]


def _number(kind: str, value: Any) -> float:
    """One value's number for the sums, by the stage's rule in bulk."""
    codes = np.array([KIND_CODES[kind]], dtype=np.int64)
    return float(feedback_numbers(codes, value_numbers(codes, [value]))[0])


def _keyed(kind: str, value: Any, number: float) -> tuple[str, int, float] | None:
    """(family, key id, value) as the stage records it; key ids here are small ints."""
    if kind == "preference":
        pair = 2 * (value["policy_a"] == "q") + (value["policy_b"] == "r")
        return PREFERENCES, pair, WINNER_CODES[value["winner"]]
    if kind == "report":
        return REPORTS, int(value["category"] == "abuse"), number
    return None


def _classes(kind: str, classes: tuple[int, int] | None) -> tuple[int, int] | None:
    return classes if kind == "label" else None  # categorical labels only


# ---- today's per-event path, as it was (partition_stage.py at 6c4f4c4) -----------------


def _class_parts(true: int, predicted: int) -> list[tuple[str, int, np.ndarray]]:
    if true == predicted:
        return [(CLASSES, true, np.array([1.0, 0.0, 0.0]))]
    return [
        (CLASSES, true, np.array([0.0, 0.0, 1.0])),
        (CLASSES, predicted, np.array([0.0, 1.0, 0.0])),
    ]


def _keyed_part(family: str, key: int, value: float) -> tuple[str, int, np.ndarray]:
    if family == PREFERENCES:
        vector = np.zeros(3)
        vector[int(value)] = 1.0
        return family, key, vector
    return family, key, np.array([1.0, value])


def today(
    inferences: list[Inference], feedback: list[Feedback], deltas: dict[str, SliceDeltas]
) -> None:
    """The stage's records, `_late`'s restricted adds, then `_accumulate`."""
    inf_slices, inf_cells, confidences, latencies = [], [], [], []
    fb_slices, fb_cells, kinds, numbers, correct, unjoined = [], [], [], [], [], []
    class_records: list[tuple[int, int, int, int]] = []
    preference_records: list[tuple[int, int, int, int]] = []
    report_records: list[tuple[int, int, int, float]] = []
    for slice_start, cell_id, confidence, latency, cutoff in inferences:
        if cutoff == NO_CUTOFF:
            inf_slices.append(slice_start)
            inf_cells.append(cell_id)
            confidences.append(confidence)
            latencies.append(latency)
            continue
        vector = inference_fields(
            np.array([np.nan if confidence is None else confidence]), WIDTH, BINS
        )[0]
        parts = [(MAIN, 0, vector)]
        if latency is not None:
            parts.append((LATENCY, int(buckets_of(np.array([latency]))[0]), np.ones(1)))
        for family, extra, vector in parts:
            deltas[family].add_restricted(slice_start, cell_id, extra, cutoff, vector)
    for slice_start, cell_id, kind, value, right, alone, pair, cutoff in feedback:
        number = _number(kind, value)
        classes = _classes(kind, pair)
        keyed = _keyed(kind, value, number)
        if cutoff == NO_CUTOFF:
            fb_slices.append(slice_start)
            fb_cells.append(cell_id)
            kinds.append(KIND_CODES[kind])
            numbers.append(number)
            correct.append(right)
            unjoined.append(alone)
            if classes is not None:
                class_records.append((slice_start, cell_id, classes[0], classes[1]))
            if keyed is not None:
                records = preference_records if keyed[0] == PREFERENCES else report_records
                records.append((slice_start, cell_id, keyed[1], keyed[2]))  # type: ignore[arg-type]
            continue
        vector = feedback_fields(
            np.array([KIND_CODES[kind]]), np.array([number]), np.array([right]),
            np.array([alone]), WIDTH,
        )[0]  # fmt: skip
        parts = [(MAIN, 0, vector)]
        if classes is not None:
            parts.extend(_class_parts(*classes))
        if keyed is not None:
            parts.append(_keyed_part(*keyed))
        for family, extra, vector in parts:
            deltas[family].add_restricted(slice_start, cell_id, extra, cutoff, vector)
    # _accumulate
    if inf_cells:
        s = np.array(inf_slices, dtype=np.int64)
        c = np.array(inf_cells, dtype=np.int64)
        fields = inference_fields(np.array(confidences, dtype=np.float64), WIDTH, BINS)
        deltas[MAIN].add(s, c << EXTRA_KEY_BITS, fields)
        latency = np.array(latencies, dtype=np.float64)
        present = ~np.isnan(latency)
        if present.any():
            keys = c[present] << EXTRA_KEY_BITS | buckets_of(latency[present])
            deltas[LATENCY].add(s[present], keys, np.ones((int(present.sum()), 1)))
    if fb_cells:
        s = np.array(fb_slices, dtype=np.int64)
        c = np.array(fb_cells, dtype=np.int64)
        fields = feedback_fields(
            np.array(kinds), np.array(numbers), np.array(correct), np.array(unjoined), WIDTH
        )
        deltas[MAIN].add(s, c << EXTRA_KEY_BITS, fields)
    if class_records:
        s, c, true, predicted = np.array(class_records, dtype=np.int64).T
        hit = true == predicted
        keys = np.concatenate((true, predicted[~hit]))
        vals = np.zeros((len(keys), 3))
        vals[: len(true), TP] = hit
        vals[: len(true), FN] = ~hit
        vals[len(true) :, FP] = 1.0
        rows = np.concatenate((np.arange(len(true)), np.flatnonzero(~hit)))
        deltas[CLASSES].add(s[rows], c[rows] << EXTRA_KEY_BITS | keys, vals)
    if preference_records:
        s, c, pairs, winners = np.array(preference_records, dtype=np.int64).T
        vals = np.zeros((len(pairs), 3))
        vals[np.arange(len(pairs)), winners] = 1.0
        deltas[PREFERENCES].add(s, c << EXTRA_KEY_BITS | pairs, vals)
    if report_records:
        records = np.array(report_records, dtype=np.float64)
        s, c, categories = records[:, :3].astype(np.int64).T
        vals = np.zeros((len(records), 2))
        vals[:, REPORT_COUNT] = 1.0
        vals[:, REPORT_AMOUNT] = records[:, 3]
        deltas[REPORTS].add(s, c << EXTRA_KEY_BITS | categories, vals)


# ---- the accumulator, fed the same events as columns -----------------------------------


def columns(inferences: list[Inference], feedback: list[Feedback]) -> JoinedColumns:
    """The events as the stage hands them over: one side of each, joined by the records."""
    records = JoinedRecords()
    if inferences:
        slices_i, cells_i, confidences, latencies, cutoffs_i = zip(*inferences, strict=True)
        side = InferenceSide(
            np.array(slices_i, dtype=np.int64), np.array(cells_i, dtype=np.int64),
            np.array(confidences, dtype=np.float64), np.array(latencies, dtype=np.float64),
            np.array(cutoffs_i, dtype=np.float64),
        )  # fmt: skip
        records.inferences.append(side)
    rows = []
    for slice_start, cell_id, kind, value, right, alone, pair, cutoff in feedback:
        number = _number(kind, value)
        classes = _classes(kind, pair) or (NONE, NONE)
        keyed = _keyed(kind, value, number)
        preference = (keyed[1], int(keyed[2])) if keyed and keyed[0] == PREFERENCES else (NONE, 0)
        category = keyed[1] if keyed and keyed[0] == REPORTS else NONE
        rows.append((slice_start, cell_id, KIND_CODES[kind], number, right, alone,
                     *classes, *preference, category, cutoff))  # fmt: skip
    half = len(rows) // 2
    for part in (rows[:half], rows[half:]):  # two calls' sides, joined by take()
        if part:
            columns = zip(*part, strict=True)
            records.feedback.append(
                FeedbackSide(
                    *(
                        np.array(c, dtype=t)
                        for c, t in zip(columns, FeedbackSide.DTYPES, strict=True)
                    )
                )
            )
    return records.take()


def fresh() -> dict[str, SliceDeltas]:
    return {name: SliceDeltas(width) for name, width in widths(WIDTH).items()}


def drained(deltas: dict[str, SliceDeltas]) -> dict[str, tuple[np.ndarray, ...]]:
    """Each family's deltas in one canonical row order."""
    out = {}
    for name, family_deltas in deltas.items():
        delta = family_deltas.drain()
        if delta is None:
            continue
        assert isinstance(delta, FamilyDelta)
        order = np.lexsort((delta.extras, delta.cell_ids, delta.cutoffs, delta.slice_starts))
        out[name] = (delta.slice_starts[order], delta.cutoffs[order], delta.cell_ids[order],
                     delta.extras[order], delta.values[order])  # fmt: skip
    return out


def assert_same(
    got: dict[str, tuple[np.ndarray, ...]], want: dict[str, tuple[np.ndarray, ...]]
) -> None:
    assert got.keys() == want.keys()
    for name in want:
        for a, b in zip(got[name], want[name], strict=True):
            assert a.shape == b.shape, name
            assert np.array_equal(a, b), name  # bit-identical: the sums are exact


def pieces_of(n: int, data: st.DataObject) -> list[np.ndarray]:
    """Row indices 0..n-1 cut into consecutive pieces at random points."""
    bounds = [0, *sorted(data.draw(st.lists(st.integers(0, n), max_size=4))), n]
    return [np.arange(a, b) for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(batches, st.data())
def test_bulk_equals_per_event_path_at_any_split(
    batch: tuple[list[Inference], list[Feedback]], data: st.DataObject
) -> None:
    inferences, feedback = batch
    want = fresh()
    today(inferences, feedback, want)
    expected = drained(want)

    accumulator = Accumulator(registry(LAYOUT))
    whole = fresh()
    accumulator.add(columns(inferences, feedback), whole)
    assert_same(drained(whole), expected)

    # The same events cut into batches anywhere (each side cut on its own).
    pieces = fresh()
    batch_columns = columns(inferences, feedback)
    for inference_rows, feedback_rows in itertools.zip_longest(
        pieces_of(len(inferences), data), pieces_of(len(feedback), data), fillvalue=np.arange(0)
    ):
        accumulator.add(rows_of(batch_columns, inference_rows, feedback_rows), pieces)
    assert_same(drained(pieces), expected)


def rows_of(
    batch: JoinedColumns, inference_rows: np.ndarray, feedback_rows: np.ndarray
) -> JoinedColumns:
    """The batch restricted to these rows of each side."""
    return JoinedColumns(
        InferenceSide(*(getattr(batch.inferences, f.name)[inference_rows]
                        for f in fields(InferenceSide))),
        FeedbackSide(*(getattr(batch.feedback, f.name)[feedback_rows]
                       for f in fields(FeedbackSide))),
    )  # fmt: skip


def test_a_late_row_counts_only_under_its_cutoff() -> None:
    """One late label with a wrong prediction: restricted main and two class rows, no
    on-time row."""
    deltas = fresh()
    feedback: list[Feedback] = [(SLICE, 2, "label", "a", False, False, (0, 1), 1500.0)]
    Accumulator(registry(LAYOUT)).add(columns([], feedback), deltas)
    got = drained(deltas)
    assert set(got) == {MAIN, CLASSES}
    assert got[CLASSES][1].tolist() == [1500.0, 1500.0]
    assert got[CLASSES][3].tolist() == [0, 1]
    assert got[CLASSES][4].tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    assert not math.isinf(got[MAIN][1][0])
