"""The bulk join buffer holds and finds exactly what InferenceCache holds and finds:
first inference per request wins, TTL and max entries, at any batch split."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.columnar.join_buffer import InferenceColumns, JoinBuffer
from operators.join import InferenceCache, InferenceContext
from tests.operators.columnar.compaction import compaction_levels  # noqa: F401 (autouse)

REQUESTS = [f"req-{i}" for i in range(10)]
contexts = st.tuples(
    st.integers(0, 12), st.integers(0, 5), st.one_of(st.none(), st.sampled_from(["a", "b"])),
    st.one_of(st.none(), st.floats(0, 1)), st.one_of(st.none(), st.floats(0, 1e4)),
)  # fmt: skip
inserts = st.lists(st.tuples(st.sampled_from(REQUESTS), contexts), max_size=25)
operations = st.lists(
    st.one_of(inserts, st.integers(-5, 20), st.lists(st.sampled_from(REQUESTS), max_size=10)),
    max_size=12,
)


def columns(rows: list[InferenceContext]) -> InferenceColumns:
    def number(v: float | None) -> float:
        return math.nan if v is None else v

    return InferenceColumns(
        np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.object_),
        np.array([number(r[3]) for r in rows], dtype=np.float64),
        np.array([number(r[4]) for r in rows], dtype=np.float64),
    )  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(operations, st.integers(1, 15), st.integers(0, 6), st.data())
def test_bulk_insert_and_probe_equal_row_wise_at_any_split(
    ops: list[object], max_entries: int, ttl: int, data: st.DataObject
) -> None:
    row = InferenceCache(ttl, max_entries)
    bulk = JoinBuffer(ttl, max_entries)
    for op in ops:
        if isinstance(op, int):
            row.expire(op)
            bulk.expire(op)
        elif op and isinstance(op[0], str):  # a probe: feedback looking for its inference
            request_ids: list[str] = op  # type: ignore[assignment]
            slots, hits = bulk.probe(request_ids)
            got = iter(range(len(hits.ts)))
            found = [hits.context(next(got)) if s >= 0 else None for s in slots.tolist()]
            assert found == [row.get(r) for r in request_ids]
        else:
            pairs: list[tuple[str, InferenceContext]] = op  # type: ignore[assignment]
            want = [row.add(r, c) for r, c in pairs]
            cuts = sorted(
                {0, len(pairs), *data.draw(st.lists(st.integers(0, len(pairs)), max_size=4))}
            )
            accepted: list[bool] = []
            for a, b in itertools.pairwise(cuts):
                part = pairs[a:b]
                accepted.extend(
                    bulk.add([r for r, _ in part], columns([c for _, c in part])).tolist()
                )
            assert accepted == want
            assert (len(bulk), bulk.evicted) == (len(row), row.evicted)


def test_equal_labels_are_held_as_one_object() -> None:
    """A held label is shared (memory: one str per distinct label, not per inference)."""
    buffer = JoinBuffer(10**9, 100)
    labels = ["".join(["c", "at"]) for _ in range(3)] + [None]  # equal, distinct objects
    assert labels[0] is not labels[1]
    rows = InferenceColumns(
        np.zeros(4, dtype=np.int64), np.arange(4, dtype=np.int64), np.array(labels, dtype=object),
        np.full(4, np.nan), np.full(4, np.nan),
    )  # fmt: skip
    buffer.add(["r0", "r1", "r2", "r3"], rows)
    _, held = buffer.probe(["r0", "r1", "r2", "r3"])
    assert held.labels.tolist() == labels
    assert held.labels[0] is held.labels[1] is held.labels[2]
