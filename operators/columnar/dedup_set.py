"""Feedback dedup in bulk: first occurrence wins, as :class:`operators.dedup.RecentIds`.

A batch of `event_id`s is hashed (:func:`.hash_fifo.hash_keys`) and added to a
persistent :class:`.hash_fifo.HashFifo` in one call: a stable sort of the batch finds
repeats within it, one bulk probe finds ids already held. Expiry by `horizon` against the
watermark and the `max_entries` bound (oldest out first, counted) are RecentIds' rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from operators.columnar.hash_fifo import HashFifo, hash_keys


class DedupSet:
    """Recent feedback ids; :meth:`add` answers which events of a batch are new."""

    __slots__ = ("_ids",)

    def __init__(self, horizon: int, max_entries: int) -> None:
        self._ids = HashFifo(horizon, max_entries)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def evicted(self) -> int:
        return self._ids.evicted

    def add(self, event_ids: Sequence[str], ts: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Remember the ids in order; True where an event is new (not a duplicate)."""
        accepted, _ = self._ids.add(hash_keys(event_ids), ts)
        return accepted

    def contains(self, event_ids: Sequence[str]) -> NDArray[np.bool_]:
        return self._ids.probe(hash_keys(event_ids)) >= 0

    def expire(self, watermark: float) -> None:
        """Forget ids whose event time is `horizon` or more behind the watermark."""
        self._ids.expire(watermark)
