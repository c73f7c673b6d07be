"""The numpy hash index answers what a dict answers, through collisions, growth and rebuilds.

The hashes are drawn so that most share their low bits (the home slot), some sit in the
table's last slots (a walk wraps to the first), and batches are large enough to grow the
table mid-call: the cases a linear-probing table gets wrong first.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.columnar.hash_index import EMPTY, HashIndex

# Home slots: 64-slot tables at first, so low bits 0..3 and 61..63 collide and wrap.
_low = st.sampled_from([0, 1, 2, 3, 61, 62, 63])
hashes = st.builds(lambda high, low: (high << 6) | low, st.integers(0, 2**58 - 1), _low)
batch = st.lists(st.tuples(hashes, st.integers(0, 2**62)), max_size=80)
operations = st.lists(st.tuples(st.sampled_from(["put", "rebuild"]), batch), max_size=8)


def _arrays(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.array([k for k, _ in pairs], dtype=np.uint64)
    return keys, np.array([v for _, v in pairs], dtype=np.int64)


@settings(max_examples=400, deadline=None)
@given(operations, st.lists(hashes, max_size=40))
def test_get_answers_as_a_dict_after_any_puts_and_rebuilds(
    ops: list[tuple[str, list[tuple[int, int]]]], absent: list[int]
) -> None:
    index, want = HashIndex(), dict[int, int]()
    for op, pairs in ops:
        distinct = list(dict(pairs).items())  # a call's hashes are distinct
        if op == "rebuild":
            want = dict(distinct)
            index.rebuild(*_arrays(distinct))
        else:
            want.update(distinct)
            index.put(*_arrays(distinct))
        assert len(index) == len(want)
        assert 2 * len(index) <= index.nbytes // 16  # at most half full
    asked = list(want) + absent
    got = index.get(np.array(asked, dtype=np.uint64)).tolist()
    assert got == [want.get(key, EMPTY) for key in asked]


def test_a_full_cluster_wraps_past_the_tables_end() -> None:
    index = HashIndex()
    keys = np.array([(i << 6) | 63 for i in range(1, 30)], dtype=np.uint64)  # all home 63
    index.put(keys, np.arange(29, dtype=np.int64))
    assert index.get(keys).tolist() == list(range(29))
    assert index.get(np.array([63, 127 << 6 | 63], dtype=np.uint64)).tolist() == [-1, -1]
    rebuilt = HashIndex()  # placed at once: the cluster runs past the end and wraps too
    rebuilt.rebuild(keys, np.arange(29, dtype=np.int64))
    assert rebuilt.get(keys).tolist() == list(range(29))
    assert rebuilt.get(np.array([63, 127 << 6 | 63], dtype=np.uint64)).tolist() == [-1, -1]


def test_negative_values_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):  # -1 would read as an empty slot
        HashIndex().put(np.array([1], dtype=np.uint64), np.array([-1], dtype=np.int64))
