"""The main family's fields as sparse entries (:func:`operators.metrics.feedback_entries`,
:func:`~operators.metrics.inference_entries`) are, bit for bit, the field matrix the
accumulator built before them (copied below as it was at 7bfdf22), signed zeros included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.metrics import (
    CSAT_THRESHOLD,
    KIND_CODES,
    F,
    MainLayout,
    feedback_entries,
    feedback_fields,
    inference_entries,
    inference_fields,
    quantized,
    residual,
)

BINS = 10
WIDTH = MainLayout(BINS).width
NUMBERS = [0.0, -0.0, 1.0, -1e-9, 1e-9, 4.0, 3.9999999, -2.5, 95.3, -100.0, 0.3, 1e6, -7e-7]


def matrix_feedback(kinds, numbers, correct, unjoined):  # type: ignore[no-untyped-def]
    code = KIND_CODES
    out = np.zeros((len(kinds), WIDTH))
    out[:, F["feedback_count"]] = 1.0
    out[:, F["unjoined_count"]] = unjoined
    label = kinds == code["label"]
    out[:, F["labeled_count"]] = label
    out[:, F["correct_count"]] = label & correct
    thumbs = kinds == code["thumbs"]
    out[:, F["thumbs_up"]] = thumbs & (numbers > 0)
    out[:, F["thumbs_down"]] = thumbs & (numbers <= 0)
    numbers = quantized(numbers)
    rating = kinds == code["rating"]
    out[:, F["rating_count"]] = rating
    out[:, F["rating_sum"]] = np.where(rating, numbers, 0.0)
    out[:, F["rating_high_count"]] = rating & (numbers >= CSAT_THRESHOLD)
    reward = kinds == code["reward"]
    rewards = np.where(reward, numbers, 0.0)
    out[:, F["reward_count"]] = reward
    out[:, F["reward_sum"]] = rewards
    squares = rewards * rewards
    out[:, F["reward_sumsq"]] = quantized(squares)
    out[:, F["reward_sumsq_residual"]] = residual(squares, out[:, F["reward_sumsq"]])
    out[:, F["clicks"]] = (kinds == code["click"]) & (numbers > 0)
    out[:, F["conversions"]] = (kinds == code["conversion"]) & (numbers > 0)
    dwell = kinds == code["dwell"]
    out[:, F["dwell_count"]] = dwell
    out[:, F["dwell_sum"]] = np.where(dwell, numbers, 0.0)
    out[:, F["preference_count"]] = kinds == code["preference"]
    report = kinds == code["report"]
    out[:, F["report_count"]] = report
    out[:, F["report_amount_sum"]] = np.where(report, numbers, 0.0)
    return out


def matrix_inference(confidence):  # type: ignore[no-untyped-def]
    out = np.zeros((len(confidence), WIDTH))
    out[:, F["inference_count"]] = 1.0
    present = ~np.isnan(confidence)
    out[:, F["confidence_count"]] = present
    out[:, F["confidence_sum"]] = np.where(present, quantized(np.nan_to_num(confidence)), 0.0)
    rows = np.flatnonzero(present)
    columns = WIDTH - BINS + np.minimum((confidence[rows] * BINS).astype(np.int64), BINS - 1)
    out[rows, columns] = 1.0
    return out


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.int64)


feedback = st.lists(
    st.tuples(
        st.integers(0, len(KIND_CODES) - 1),
        st.one_of(st.sampled_from(NUMBERS), st.floats(-1e3, 1e3)),
        st.booleans(),
        st.booleans(),
    ),
    max_size=60,
)
confidences = st.lists(
    st.one_of(st.none(), st.sampled_from([0.0, -0.0, 1.0, 0.9999999, 0.1]), st.floats(0, 1)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(feedback, confidences)
def test_entries_are_the_field_matrix(
    rows: list[tuple[int, float, bool, bool]], confidence: list[float | None]
) -> None:
    kinds = np.array([r[0] for r in rows], dtype=np.int64)
    numbers = np.array([r[1] for r in rows], dtype=np.float64)
    correct = np.array([r[2] for r in rows], dtype=np.bool_)
    unjoined = np.array([r[3] for r in rows], dtype=np.bool_)
    want = matrix_feedback(kinds, numbers, correct, unjoined)
    assert np.array_equal(bits(feedback_fields(kinds, numbers, correct, unjoined, WIDTH)),
                          bits(want))  # fmt: skip
    entries = feedback_entries(kinds, numbers, correct, unjoined, WIDTH)
    # Every entry left out is +0.0; no (row, column) twice.
    assert len(set(zip(entries.rows.tolist(), entries.columns.tolist(), strict=True))) == len(
        entries.rows
    )
    left_out = np.ones(want.shape, dtype=bool)
    left_out[entries.rows, entries.columns] = False
    assert not bits(want)[left_out].any()

    conf = np.array([np.nan if c is None else c for c in confidence], dtype=np.float64)
    want = matrix_inference(conf)
    assert np.array_equal(bits(inference_fields(conf, WIDTH, BINS)), bits(want))
    assert np.array_equal(bits(inference_entries(conf, WIDTH, BINS).dense()), bits(want))
