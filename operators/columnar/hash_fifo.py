"""A persistent, bounded set of 64-bit key hashes in arrival order, probed in bulk.

Both the dedup ids (:class:`operators.dedup.RecentIds`) and the join's inferences
(:class:`operators.join.InferenceCache`) are the same structure: the first occurrence of
a key wins, past `max_entries` the oldest go first (counted), and :meth:`expire` drops
the oldest while their event time is `horizon` or more behind the watermark (a prefix in
arrival order, as the row-wise ``OrderedDict`` pops it). Here that is a log of hashes and
event times in arrival order (the live entries are the sequence numbers ``[lo, hi)``)
plus an index (hash → sequence number, :class:`.hash_index.HashIndex`: two numpy arrays
probed in bulk), so a batch costs a few calls, not a Python step per key.

Exactness under the `max_entries` bound: whether a key is still held at event *i*
depends on how many keys the batch accepted before *i* (each may push out the oldest).
The accepted set is computed as a fixed point: start by assuming no eviction, recompute
who is gone with the accept counts found, repeat until nothing changes. More accepts only
push more out, so the iteration rises to the one fixed point, which is the sequential
answer; without eviction pressure it takes one pass. A batch longer than `max_entries`
is cut in chunks of it, so a key accepted in a chunk is never pushed out inside it.

Costs per batch follow the batch, not the set (live batches are tens of lines against a
set of ~10⁵): the log grows into spare capacity (by a quarter) and gone entries leave it and
the index in bulk, once they are most of it (the index is then rebuilt from the live
keys). A sorted numpy index probed with ``searchsorted`` (this module's first form) cost
~3.6 µs a key at batches of 100: a binary search's cache misses in a large array and ~60
numpy calls per batch. A dict (the second) cost ~0.1 µs a key, but ~110 bytes.

Keys are hashed to 64 bits by :func:`hash_keys` (CPython's SipHash of the string): two
ids colliding (~n²/2⁶⁵: 3·10⁻⁸ at a million held) would count as one. The set is rebuilt
from ClickHouse after a restart, as today, so the hash needs no stability across processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from operators.columnar.hash_index import HashIndex

U64 = NDArray[np.uint64]
I64 = NDArray[np.int64]


def hash_keys(keys: Sequence[str]) -> U64:
    """64-bit hashes of string keys (one C-level map; ~40 ns a key)."""
    return np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys)).view(np.uint64)


class HashFifo:
    """Bounded, expiring set of key hashes in arrival order; bulk add and probe."""

    __slots__ = (
        "_base", "_index", "_log", "_payload", "_used", "evicted", "hi", "horizon", "lo",
        "max_entries",
    )  # fmt: skip

    # Gone log entries are dropped once past this many and most of the log (tests lower it).
    MIN_GONE = 1024

    def __init__(self, horizon: int, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.horizon = horizon
        self.max_entries = max_entries
        self.evicted = 0
        self.lo = self.hi = 0  # live sequence numbers: [lo, hi)
        self._base = 0  # sequence number of the log's first element
        self._used = 0  # log entries in use (the arrays have spare capacity after them)
        # The log: hashes, event times and the columns carried per entry, by sequence.
        self._log: dict[str, NDArray[Any]] = {
            _HASH: np.empty(0, dtype=np.uint64), _TS: np.empty(0, dtype=np.int64)
        }  # fmt: skip
        self._payload: tuple[str, ...] = ()
        # hash -> its latest sequence number (gone when below lo; dropped at compaction).
        self._index = HashIndex()

    def __len__(self) -> int:
        return self.hi - self.lo

    def column(self, name: str, seqs: I64) -> NDArray[Any]:
        """A payload column's values for live sequence numbers (from :meth:`probe`)."""
        values = self._log.get(name)
        if values is None:  # nothing added yet: nothing can be asked for
            return np.empty(0, dtype=np.object_)
        return values[seqs - self._base]

    def times(self, seqs: I64) -> I64:
        """The event times held for live sequence numbers."""
        return self._log[_TS][seqs - self._base]

    def probe(self, hashes: U64) -> I64:
        """The live sequence number of each hash, or -1 when not held."""
        seqs = self._index.get(hashes)  # maybe gone (below lo), -1 when not there
        return np.where(seqs >= self.lo, seqs, -1)

    def add(
        self, hashes: U64, ts: I64, payload: dict[str, NDArray[Any]] | None = None
    ) -> tuple[NDArray[np.bool_], I64]:
        """Add keys in arrival order, each with its event time and `payload` values (the
        same columns at every call): (accepted: the key was not held, the sequence number
        each accepted key got, -1 for duplicates)."""
        n = len(hashes)
        payload = payload or {}
        step = self.max_entries
        if n > step:
            parts = [
                self.add(hashes[i : i + step], ts[i : i + step],
                         {name: values[i : i + step] for name, values in payload.items()})
                for i in range(0, n, step)
            ]  # fmt: skip
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        accepted = self._accepted(hashes, self.probe(hashes))
        count = int(accepted.sum())
        seqs = np.full(n, -1, dtype=np.int64)
        seqs[accepted] = np.arange(self.hi, self.hi + count, dtype=np.int64)
        if count:
            kept = {name: values[accepted] for name, values in payload.items()}
            self._append(hashes[accepted], ts[accepted], seqs[accepted], kept)
        return accepted, seqs

    def expire(self, watermark: float) -> None:
        """Drop the oldest entries while their event time is `horizon` behind `watermark`."""
        if self.lo == self.hi:
            return
        times = self._log[_TS]
        start, stop = self.lo - self._base, self.hi - self._base
        cutoff = watermark - self.horizon
        if times[start] > cutoff:  # the oldest stays: nothing expires (most calls)
            return
        keep = times[start:stop] > cutoff
        self.lo += int(np.argmax(keep)) if keep.any() else stop - start
        self._compact()

    def _accepted(self, hashes: U64, old: I64) -> NDArray[np.bool_]:
        """Which keys are added, as the row-wise FIFO decides it key by key (`old`: each
        key's sequence number held at the batch's start, -1 when none)."""
        n = len(hashes)
        if self.hi + n - self.max_entries <= self.lo:  # nothing can be pushed out
            absent = np.flatnonzero(old < 0)
            _, first = np.unique(hashes[absent], return_index=True)
            accepted = np.zeros(n, dtype=np.bool_)
            accepted[absent[first]] = True
            return accepted
        _, inverse = np.unique(hashes, return_inverse=True)
        accepted = np.zeros(n, dtype=np.bool_)
        positions = np.arange(n)
        while True:
            before: I64 = np.cumsum(accepted, dtype=np.int64) - accepted  # accepted ahead
            lo_at = np.maximum(self.lo, self.hi + before - self.max_entries)
            gone = old < lo_at  # not held (never, or pushed out) when the key arrives
            candidates = positions[gone]
            _, first = np.unique(inverse[candidates], return_index=True)
            update = np.zeros(n, dtype=np.bool_)
            update[candidates[first]] = True
            if self.hi + len(first) - self.max_entries <= self.lo:
                return update  # nothing is pushed out at any key: the first pass is exact
            if np.array_equal(update, accepted):
                return accepted
            accepted = update

    def _append(self, hashes: U64, ts: I64, seqs: I64, payload: dict[str, NDArray[Any]]) -> None:
        if not self._payload and payload:
            self._payload = tuple(payload)
            for name, values in payload.items():
                self._log[name] = np.empty(len(self._log[_HASH]), dtype=values.dtype)
        k = len(hashes)
        used = self._used
        self._reserve(used + k)
        log = self._log
        log[_HASH][used : used + k] = hashes
        log[_TS][used : used + k] = ts
        for name in self._payload:
            log[name][used : used + k] = payload[name]
        self._used = used + k
        self.hi += k
        lo = max(self.lo, self.hi - self.max_entries)
        self.evicted += lo - self.lo
        self.lo = lo
        # Unique within a call (a chunk never pushes out its own keys); a key back after
        # it went now names its new entry.
        self._index.put(hashes, seqs)
        self._compact()

    def _reserve(self, size: int) -> None:
        """Room in the log's arrays for `size` entries (capacity grows by a quarter: a
        batch's append copies only the batch, and at most a fifth of the log is spare —
        doubling left up to half of a join buffer's 48 bytes an entry unused)."""
        capacity = len(self._log[_HASH])
        if size <= capacity:
            return
        capacity = max(size, capacity + capacity // 4, 64)
        for name, values in self._log.items():
            grown = np.empty(capacity, dtype=values.dtype)
            grown[: self._used] = values[: self._used]
            self._log[name] = grown

    def _compact(self) -> None:
        """Drop gone entries from the log and the index once they are most of it."""
        gone = self.lo - self._base
        if gone <= max(self.MIN_GONE, self.hi - self.lo):
            return
        live = self._used - gone
        for name, values in self._log.items():
            kept = np.empty(max(2 * live, 64), dtype=values.dtype)
            kept[:live] = values[gone : self._used]
            self._log[name] = kept
        self._used = live
        self._base = self.lo
        # A live key is held once (a key is accepted only when not held), so the live
        # entries are exactly what the index must still name.
        self._index.rebuild(self._log[_HASH][:live], np.arange(self.lo, self.hi, dtype=np.int64))


_HASH, _TS = "\0hash", "\0ts"  # the log's own columns (payload names are plain)
