"""A persistent, bounded set of 64-bit key hashes in arrival order, probed in bulk.

Both the dedup ids (:class:`operators.dedup.RecentIds`) and the join's inferences
(:class:`operators.join.InferenceCache`) are the same structure: the first occurrence of
a key wins, past `max_entries` the oldest go first (counted), and :meth:`expire` drops
the oldest while their event time is `horizon` or more behind the watermark (a prefix in
arrival order, as the row-wise ``OrderedDict`` pops it). Here that is a log of hashes and
event times in arrival order (the live entries are the sequence numbers ``[lo, hi)``)
plus a sorted index (hash → sequence number) probed with ``numpy.searchsorted``: a batch
costs a few array operations, not a Python step per key.

Exactness under the `max_entries` bound: whether a key is still held at event *i*
depends on how many keys the batch accepted before *i* (each may push out the oldest).
The accepted set is computed as a fixed point: start by assuming no eviction, recompute
who is gone with the accept counts found, repeat until nothing changes. More accepts only
push more out, so the iteration rises to the one fixed point, which is the sequential
answer; without eviction pressure it takes one pass. A batch longer than `max_entries`
is cut in chunks of it, so a key accepted in a chunk is never pushed out inside it.

Keys are hashed to 64 bits by :func:`hash_keys` (CPython's SipHash of the string): two
ids colliding (~n²/2⁶⁵: 3·10⁻⁸ at a million held) would count as one. The set is rebuilt
from ClickHouse after a restart, as today, so the hash needs no stability across processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

U64 = NDArray[np.uint64]
I64 = NDArray[np.int64]


def hash_keys(keys: Sequence[str]) -> U64:
    """64-bit hashes of string keys (one C-level map; ~40 ns a key)."""
    return np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys)).view(np.uint64)


class HashFifo:
    """Bounded, expiring set of key hashes in arrival order; bulk add and probe."""

    __slots__ = (
        "_base", "_index_keys", "_index_seqs", "_log_hash", "_log_payload", "_log_ts", "evicted",
        "hi", "horizon", "lo", "max_entries",
    )  # fmt: skip

    def __init__(self, horizon: int, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.horizon = horizon
        self.max_entries = max_entries
        self.evicted = 0
        self.lo = self.hi = 0  # live sequence numbers: [lo, hi)
        self._base = 0  # sequence number of the log's first element
        self._log_hash: U64 = np.empty(0, dtype=np.uint64)
        self._log_ts: I64 = np.empty(0, dtype=np.int64)
        self._log_payload: dict[str, NDArray[Any]] = {}  # columns carried per entry
        self._index_keys: U64 = np.empty(0, dtype=np.uint64)  # sorted, unique
        self._index_seqs: I64 = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return self.hi - self.lo

    def column(self, name: str, seqs: I64) -> NDArray[Any]:
        """A payload column's values for live sequence numbers (from :meth:`probe`)."""
        values = self._log_payload.get(name)
        if values is None:  # nothing added yet: nothing can be asked for
            return np.empty(0, dtype=np.object_)
        return values[seqs - self._base]

    def times(self, seqs: I64) -> I64:
        """The event times held for live sequence numbers."""
        return self._log_ts[seqs - self._base]

    def probe(self, hashes: U64) -> I64:
        """The live sequence number of each hash, or -1 when not held."""
        keys = self._index_keys
        if len(keys) == 0 or len(hashes) == 0:
            return np.full(len(hashes), -1, dtype=np.int64)
        pos = np.searchsorted(keys, hashes)
        np.minimum(pos, len(keys) - 1, out=pos)
        seqs = self._index_seqs[pos]
        held = (keys[pos] == hashes) & (seqs >= self.lo)
        return np.where(held, seqs, -1)

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
        accepted = self._accepted(hashes)
        count = int(accepted.sum())
        seqs = np.full(n, -1, dtype=np.int64)
        seqs[accepted] = np.arange(self.hi, self.hi + count, dtype=np.int64)
        if count:
            kept = {name: values[accepted] for name, values in payload.items()}
            self._append(hashes[accepted], ts[accepted], seqs[accepted], kept)
        return accepted, seqs

    def expire(self, watermark: float) -> None:
        """Drop the oldest entries while their event time is `horizon` behind `watermark`."""
        live = self._log_ts[self.lo - self._base : self.hi - self._base]
        keep = live > watermark - self.horizon
        self.lo += int(np.argmax(keep)) if keep.any() else len(live)
        self._compact()

    def _accepted(self, hashes: U64) -> NDArray[np.bool_]:
        """Which keys are added, as the row-wise FIFO decides it key by key."""
        n = len(hashes)
        _, inverse = np.unique(hashes, return_inverse=True)
        old = self.probe(hashes)  # -1 when not held at the batch's start
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
        self._log_hash = np.concatenate([self._log_hash, hashes])
        self._log_ts = np.concatenate([self._log_ts, ts])
        for name, values in payload.items():
            held = self._log_payload.get(name)
            self._log_payload[name] = (
                values.copy() if held is None else np.concatenate([held, values])
            )
        self.hi += len(hashes)
        lo = max(self.lo, self.hi - self.max_entries)
        self.evicted += lo - self.lo
        self.lo = lo
        keys, index_seqs = self._index_keys, self._index_seqs
        pos = np.searchsorted(keys, hashes)
        clipped = np.minimum(pos, max(len(keys) - 1, 0))
        known = (keys[clipped] == hashes) if len(keys) else np.zeros(len(hashes), np.bool_)
        index_seqs[clipped[known]] = seqs[known]  # a key back after it went: its new entry
        fresh = ~known
        order = np.argsort(hashes[fresh], kind="stable")
        self._index_keys = np.insert(keys, pos[fresh][order], hashes[fresh][order])
        self._index_seqs = np.insert(index_seqs, pos[fresh][order], seqs[fresh][order])
        self._compact()

    def _compact(self) -> None:
        """Drop gone entries from the log and index once they are most of it."""
        gone = self.lo - self._base
        if gone <= max(1024, self.hi - self.lo):
            return
        self._log_hash = self._log_hash[gone:].copy()
        self._log_ts = self._log_ts[gone:].copy()
        for name, values in self._log_payload.items():
            self._log_payload[name] = values[gone:].copy()
        self._base = self.lo
        held = self._index_seqs >= self.lo
        self._index_keys = self._index_keys[held]
        self._index_seqs = self._index_seqs[held]
