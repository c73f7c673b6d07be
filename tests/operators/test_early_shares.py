"""PendingRows (operators/early_shares.py): changed keys wait for their share's tick."""

from __future__ import annotations

import numpy as np

from operators.cells import EXTRA_KEY_BITS
from operators.early_shares import PendingRows


def _keys(cells: list[int], extra: int = 0) -> np.ndarray:
    return (np.array(cells, dtype=np.int64) << EXTRA_KEY_BITS) | extra


def test_added_keys_are_held_once_and_each_goes_at_its_shares_tick_within_a_round() -> None:
    shares = 4
    pending = PendingRows()
    pending.add({"main": _keys([0, 1, 2, 5]), "classes": _keys([1, 6], extra=3)})
    pending.add({"main": _keys([1, 3, 6, 7]), "classes": _keys([1], extra=3)})  # overlaps
    assert pending.keys["main"].tolist() == _keys([0, 1, 2, 3, 5, 6, 7]).tolist()
    went: dict[int, list[int]] = {}
    for tick in range(100, 100 + shares):  # the first take: only its own tick's share
        due = pending.take(tick, shares)
        went[tick] = (due["main"] >> EXTRA_KEY_BITS).tolist()
        assert all(cell % shares == tick % shares for cell in went[tick])
    assert sorted(c for cells in went.values() for c in cells) == [0, 1, 2, 3, 5, 6, 7]
    assert not pending


def test_ticks_missed_send_every_share_they_covered() -> None:
    pending = PendingRows()
    pending.add({"main": _keys(list(range(8)))})
    assert (pending.take(8, 4)["main"] >> EXTRA_KEY_BITS).tolist() == [0, 4]
    # Two ticks later: the shares of ticks 9 and 10 (cells 1, 5, 2, 6).
    assert (pending.take(10, 4)["main"] >> EXTRA_KEY_BITS).tolist() == [1, 2, 5, 6]
    pending.add({"main": _keys([0, 9])})
    # A round or more later: everything that waits.
    assert (pending.take(14, 4)["main"] >> EXTRA_KEY_BITS).tolist() == [0, 3, 7, 9]
    assert not pending
