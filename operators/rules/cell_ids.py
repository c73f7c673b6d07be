"""Dense ids for a rule's cells, so that per-cell state lives in numpy arrays.

A stateful rule (drift, spike) keeps each cell's past windows in arrays indexed by a
slot: :class:`CellIds` maps a cell's id (:attr:`~operators.rules.columns.CellBlock.ids`,
the merge stage's integer per distinct dims) to its slot, hands out the slots of a whole
block in one call, and takes slots back when the rule forgets a cell (its state expired
in event time), reusing them, so the arrays stay as large as the cells alive at once and
do not grow with dims churn. A plain dict and a free list: the lookup is the one
per-cell Python step left, a dict probe by an integer (~20x cheaper than by a dims key
of six (name, value) pairs, which was most of a drift rule's time).

Plain data (a dict, lists of ints), pickled with the rule's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat

import numpy as np

MISSING = -1  # the slot of a key that has none


class CellIds:
    """Slots for keys: `find` looks them up, `assign` gives one to each new key."""

    def __init__(self) -> None:
        self.slots: dict[int, int] = {}  # cell id -> slot
        self.keys: list[int | None] = []  # slot -> its cell id (None: free)
        self.free: list[int] = []

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def capacity(self) -> int:
        """One more than the highest slot ever handed out: what arrays must hold."""
        return len(self.keys)

    def find(self, keys: Sequence[int]) -> np.ndarray:
        """Each key's slot, int64, MISSING where it has none (nothing is assigned)."""
        found = map(self.slots.get, keys, repeat(MISSING, len(keys)))
        return np.fromiter(found, dtype=np.int64, count=len(keys))

    def assign(self, keys: Sequence[int]) -> np.ndarray:
        """Each key's slot, a new one (a freed slot first) for a key without one. The new
        keys are handed out in a few bulk steps, not one at a time: a sparse cube's cells
        are mostly new to a rule at each window."""
        slots = self.find(keys)
        missing = np.flatnonzero(slots == MISSING)
        if not len(missing):
            return slots
        new = list(dict.fromkeys(keys[i] for i in missing.tolist()))  # a key twice: once
        reused = min(len(new), len(self.free))
        given = [self.free.pop() for _ in range(reused)]
        for key, slot in zip(new, given, strict=False):
            self.keys[slot] = key
        first = len(self.keys)
        self.keys.extend(new[reused:])
        given.extend(range(first, first + len(new) - reused))
        self.slots.update(zip(new, given, strict=True))
        slots[missing] = self.find([keys[i] for i in missing.tolist()])
        return slots

    def release(self, slots: Sequence[int]) -> None:
        """Forget these slots' keys; their slots are handed out again."""
        for slot in slots:
            key = self.keys[slot]
            if key is not None:
                del self.slots[key]
                self.keys[slot] = None
                self.free.append(slot)


def grown(array: np.ndarray, capacity: int, fill: float | int) -> np.ndarray:
    """`array` with at least `capacity` rows (doubling; new rows hold `fill`)."""
    if len(array) >= capacity:
        return array
    size = max(capacity, 2 * len(array), 16)
    out = np.full((size, *array.shape[1:]), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


def first_of_each(slots: np.ndarray) -> np.ndarray:
    """True at each slot's first position in `slots` (a cell twice in one window is
    taken in once, as one at a time would: the second is a replay of the first)."""
    first = np.zeros(len(slots), dtype=bool)
    first[np.unique(slots, return_index=True)[1]] = True
    return first
