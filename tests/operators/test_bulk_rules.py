"""Each rule the partition stage applies to a whole run of feedback has one per-event form
and one bulk form next to it; the two must agree on every value the contract lets in
(the bulk forms: `as_labels`, `feedback_numbers`, `tenant_refused`, `shards_of`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from msgspec import UNSET

from operators.events import Feedback
from operators.join import tenant_refusal, tenant_refused
from operators.metrics import KIND_CODES, as_label, as_labels, feedback_number, feedback_numbers
from operators.sessions import shard_of, shards_of
from tests.operators.columnar.test_feedback_counting import VALUES

labels = st.lists(
    st.one_of(
        st.text(max_size=5),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.none(),
    ),
)


@given(labels)
def test_as_labels_is_as_label_of_each(values: list[Any]) -> None:
    assert as_labels(values) == [as_label(v) for v in values]


@given(st.lists(st.sampled_from(sorted(VALUES)).flatmap(
    lambda kind: st.tuples(st.just(kind), VALUES[kind]))))  # fmt: skip
def test_feedback_numbers_are_feedback_number_of_each(pairs: list[tuple[str, Any]]) -> None:
    codes = np.array([KIND_CODES[kind] for kind, _ in pairs], dtype=np.int64)
    bulk = feedback_numbers(codes, [value for _, value in pairs])
    assert repr(bulk.tolist()) == repr([feedback_number(k, v) for k, v in pairs])  # -0.0 shows


@given(st.lists(st.tuples(st.sampled_from([UNSET, "t1", "t2"]),
                          st.sampled_from([None, "t1", "t2"]))))  # fmt: skip
def test_tenant_refused_is_tenant_refusal_of_each(pairs: list[tuple[Any, str | None]]) -> None:
    claimed = [c for c, _ in pairs]
    tenants = [t for _, t in pairs]
    events = [Feedback("e", "r", 0, "thumbs", True, "u", tenant=c) for c in claimed]
    each = [t is not None and tenant_refusal(e, t) is not None
            for e, t in zip(events, tenants, strict=True)]  # fmt: skip
    assert tenant_refused(claimed, tenants).tolist() == each


@given(st.lists(st.text(min_size=1, max_size=8)), st.integers(1, 7))
def test_shards_of_is_shard_of_each(user_ids: list[str], shards: int) -> None:
    assert shards_of(user_ids, shards).tolist() == [shard_of(u, shards) for u in user_ids]
