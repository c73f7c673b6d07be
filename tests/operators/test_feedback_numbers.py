"""The numbers read from feedback values in bulk (`value_numbers`, `feedback_numbers`)
against the rules written one value at a time: the raw table's `value_num` and what each
kind adds to the sums."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.contract import FEEDBACK_KINDS
from operators.limits import MAX_MAGNITUDE
from operators.metrics import KIND_CODES, QUANTUM, feedback_numbers, value_numbers

NUMBER = st.one_of(
    st.integers(-int(MAX_MAGNITUDE), int(MAX_MAGNITUDE)),
    st.floats(-MAX_MAGNITUDE, MAX_MAGNITUDE, allow_nan=False),
)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "label": st.one_of(st.text(max_size=5), NUMBER, st.booleans()),
    "thumbs": st.booleans(),
    "rating": st.integers(1, 5) | st.floats(1, 5),
    "reward": NUMBER,
    "click": st.booleans(),
    "conversion": st.booleans(),
    "dwell": NUMBER.map(abs),
    "preference": st.just({"winner": "a", "policy_a": "p", "policy_b": "q"}),
    "report": st.fixed_dictionaries({"category": st.just("c"), "amount": st.none() | NUMBER}),
}
FEEDBACK = st.sampled_from(FEEDBACK_KINDS).flatmap(
    lambda kind: st.tuples(st.just(kind), VALUES[kind])
)


def carried(kind: str, value: Any) -> float | None:
    """The number a value carries, one at a time (None: none)."""
    if kind in ("rating", "reward", "dwell"):
        return float(value)
    if kind in ("thumbs", "click", "conversion"):
        return 1.0 if value else 0.0
    if kind == "label":
        return None if isinstance(value, str) else float(value)
    if kind == "report":
        return None if value["amount"] is None else float(value["amount"])
    return None


def summed(kind: str, value: Any) -> float:
    """What a value adds to its kind's sums, one at a time: rounded to QUANTUM with
    Python's round (half to even), 0 for labels and preferences and a report without an
    amount."""
    number = carried(kind, value)
    if kind in ("label", "preference") or number is None:
        return 0.0
    return round(number / QUANTUM) * QUANTUM


@settings(max_examples=300, deadline=None)
@given(st.lists(FEEDBACK, max_size=40))
def test_bulk_numbers_equal_the_rules_one_value_at_a_time(feedback: list[tuple[str, Any]]) -> None:
    codes = np.array([KIND_CODES[kind] for kind, _ in feedback], dtype=np.int64)
    values = [value for _, value in feedback]
    numbers = value_numbers(codes, values)
    sums = feedback_numbers(codes, numbers)
    for j, (kind, value) in enumerate(feedback):
        want = carried(kind, value)
        assert math.isnan(numbers[j]) if want is None else numbers[j] == want, (kind, value)
        assert sums[j] == summed(kind, value), (kind, value)
        assert not (sums[j] == 0 and math.copysign(1.0, sums[j]) < 0), "a -0.0 sum"


def test_numeric_kinds_alone_take_the_one_conversion() -> None:
    codes = np.array([KIND_CODES["rating"], KIND_CODES["thumbs"]], dtype=np.int64)
    assert value_numbers(codes, [4, False]).tolist() == [4.0, 0.0]
