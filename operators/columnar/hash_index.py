"""A map from 64-bit key hashes to int64 values in two numpy arrays, read and written in bulk.

:class:`.hash_fifo.HashFifo` indexes every held key (a request id, a feedback id) by its
hash. A Python dict cost ~110 bytes a key there: its entry, and two int objects (the
hash and the sequence number) in pymalloc's arenas. At the bench's ~10⁶ held ids that was
~110 MiB of the ~180 MiB the join and dedup state held, and int objects scattered among
the run's others keep arenas alive after the state is freed. Here a key costs two array
slots (16 bytes) at a load of at most a half: 32–64 bytes, in two arrays the allocator
can give back whole.

Open addressing with linear probing: a key's home slot is its hash's low bits (the
hashes are SipHash: the low bits are as random as any), and a probe walks on from there
to the key or to an empty slot (value -1). Every step is one vectorized pass over the
keys still walking: the home slot, then the next 8 slots at once for the walks that go
on, so nearly every walk ends within two steps at a half's load and a batch costs a few
numpy calls, not a Python step per key (at batches of 50 keys those calls cost about
twice the dict's per key; at 5,000, less: docs/columnar.md). There is no delete: the
owner rebuilds the index from the keys it still holds (:meth:`rebuild`), which is how
`HashFifo` drops gone entries anyway, in bulk.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

U64 = NDArray[np.uint64]
I64 = NDArray[np.int64]

EMPTY = -1  # the value of an empty slot: values held are >= 0
_MIN_SLOTS = 64
_WINDOW = 8  # slots read per step of a walk: most walks end within the first window
_STEPS = np.arange(_WINDOW, dtype=np.int64)


class HashIndex:
    """hash → non-negative int64, bulk :meth:`get` and :meth:`put`, at most half full."""

    __slots__ = ("_keys", "_mask", "_values", "count")

    def __init__(self) -> None:
        self.count = 0  # keys held
        self._allocate(_slots_for(0))

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        return self._keys.nbytes + self._values.nbytes

    def get(self, hashes: U64) -> I64:
        """Each hash's value, or -1 where the hash is not held."""
        found = np.full(len(hashes), EMPTY, dtype=np.int64)
        walking = np.arange(len(hashes))
        slots = self._home(hashes)
        while len(walking):
            stop, at = self._first_stop(slots, hashes[walking])
            ended = stop >= 0
            found[walking[ended]] = self._values[stop[ended]]  # -1 where it ended empty
            on = ~ended
            walking, slots = walking[on], at[on]
        return found

    def _first_stop(self, slots: I64, hashes: U64) -> tuple[I64, I64]:
        """Along each walk's next `_WINDOW` slots from `slots`: the first that holds its
        hash or is empty (-1 when none does), and where the walk goes on otherwise."""
        stop = np.where((self._values[slots] == EMPTY) | (self._keys[slots] == hashes), slots, -1)
        on = np.flatnonzero(stop < 0)
        if len(on):
            s = slots[on] + 1
            window = (s[:, None] + _STEPS) & self._mask
            stops = (self._values[window] == EMPTY) | (self._keys[window] == hashes[on, None])
            first = stops.argmax(axis=1)
            rows = np.arange(len(on))
            stop[on] = np.where(stops[rows, first], window[rows, first], -1)
        return stop, (slots + 1 + _WINDOW) & self._mask

    def put(self, hashes: U64, values: I64) -> None:
        """Set each hash's value (`hashes` distinct; a held hash's value is replaced)."""
        if np.any(values < 0):
            raise ValueError("values held must be non-negative")
        if _slots_for(self.count + len(hashes)) > len(self._keys):
            self._grow(self.count + len(hashes))
        self._insert(hashes, values)

    def rebuild(self, hashes: U64, values: I64) -> None:
        """Hold exactly these (distinct) hashes, in a table sized for them."""
        self._refill(hashes, values, _slots_for(len(hashes)))

    def _insert(self, hashes: U64, values: I64) -> None:
        walking = np.arange(len(hashes))
        slots = self._home(hashes)
        keys, held = self._keys, self._values
        while len(walking):
            stop, at = self._first_stop(slots, hashes[walking])
            ended = stop >= 0
            mine = walking[ended]
            slot = stop[ended]
            free = held[slot] == EMPTY
            # Keys that stopped at the same free slot all write it; one write lands, and
            # the others find it taken from there on (which one lands does not matter).
            keys[slot[free]] = hashes[mine[free]]
            placed = ~free | (keys[slot] == hashes[mine])
            held[slot[placed]] = values[mine[placed]]  # new, or a held key's value replaced
            self.count += int(np.count_nonzero(free & placed))
            walking = np.concatenate([mine[~placed], walking[~ended]])
            slots = np.concatenate([slot[~placed], at[~ended]])

    def _grow(self, count: int) -> None:
        held = self._values != EMPTY
        self._refill(self._keys[held], self._values[held], _slots_for(count))

    def _refill(self, hashes: U64, values: I64, slots: int) -> None:
        """A table of `slots` slots holding exactly these (distinct) hashes, placed at once
        as linear probing places them into an empty table: in the order of their home
        slots, each key goes to its home or, when the keys before it filled that, to the
        slot after the previous key's (position = max(home, previous + 1): a running
        maximum). Every slot between a key's home and its own is then taken, as a walk
        needs. The few pushed past the last slot are inserted by walks, which wrap around.
        ~3x faster than walking them all in (the table's growth and compaction)."""
        self._allocate(slots)
        homes = self._home(hashes)
        order = np.argsort(homes)
        ranks = np.arange(len(order))
        places = np.maximum.accumulate(homes[order] - ranks) + ranks
        fits = places <= self._mask
        chosen, at = order[fits], places[fits]
        self._keys[at] = hashes[chosen]
        self._values[at] = values[chosen]
        self.count = len(chosen)
        if len(chosen) < len(order):
            wrapped = order[~fits]
            self._insert(hashes[wrapped], values[wrapped])

    def _allocate(self, slots: int) -> None:
        self._keys = np.zeros(slots, dtype=np.uint64)
        self._values = np.full(slots, EMPTY, dtype=np.int64)
        self._mask = slots - 1

    def _home(self, hashes: U64) -> I64:
        return (hashes & np.uint64(self._mask)).astype(np.int64)


def _slots_for(count: int) -> int:
    """The smallest power of two that holds `count` keys at a load of at most a half."""
    return max(_MIN_SLOTS, 1 << max(0, 2 * count - 1).bit_length())
