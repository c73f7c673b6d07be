"""A long window's early rows in shares: a part of its changed cells at every tick.

The hour window's early rows every 10 s, or a sliding window's latest, were one emission
of every rollup cell changed in those 10 s: ~73k rows and 190-400 ms of the worker's
time in one call at 24,000 events/s, and the minute window's next rows, the freshness
the flow is judged by, waited behind it (docs/performance.md). Spread instead: the
window's cached rollups take the new deltas at every tick (the same rolled-up deltas the
minute window takes, computed once), and the cells they changed wait here until their
share's tick. A rollup cell's share is its id modulo the shares in a round
(``early_interval / emit_interval``), so each changed cell still goes out at most
`early_interval` after it changed, and a tick carries a round's share of the rows.

What waits is kept per family, as the keys whose rows changed: the main family's are the
cells (every event adds a main row), the keyed families' are (cell, key) pairs, so only
the keys that changed are written, as for any early row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from operators.cells import EXTRA_KEY_BITS
from operators.keyed_sums import run_starts


@dataclass
class PendingRows:
    """One open window's changed keys, per family, not yet in an early row; and the
    last tick (``now // emit_interval``) whose share went out."""

    keys: dict[str, np.ndarray] = field(default_factory=dict)
    tick: int | None = None

    def __bool__(self) -> bool:
        return any(len(keys) for keys in self.keys.values())

    def add(self, changed: dict[str, np.ndarray]) -> None:
        """Keys whose rows changed (sorted, unique per family)."""
        for family, keys in changed.items():
            held = self.keys.get(family)
            if held is None or not len(held):
                self.keys[family] = keys
            elif len(keys):
                self.keys[family] = _union(held, keys)

    def take(self, tick: int, shares: int) -> dict[str, np.ndarray]:
        """The keys whose share came at a tick since the last one taken (only this one's
        at the first), up to `tick` (all after `shares` ticks or more); they no longer
        wait."""
        passed = 1 if self.tick is None else tick - self.tick
        self.tick = tick
        due: dict[str, np.ndarray] = {}
        for family, keys in self.keys.items():
            if passed >= shares:
                due[family], self.keys[family] = keys, keys[:0]
                continue
            # A cell's share comes at the ticks t with t % shares == cell % shares: due
            # when one of the `passed` ticks up to `tick` is such a t.
            share = (keys >> EXTRA_KEY_BITS) % shares
            goes = (tick - share) % shares < passed
            due[family], self.keys[family] = keys[goes], keys[~goes]
        return due


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two sorted runs of unique keys as one: a stable sort of the two runs (a merge of
    them, not a sort from scratch: np.union1d's was most of this module's time), each
    key once."""
    both = np.concatenate((a, b))
    both.sort(kind="stable")
    return both[run_starts(both)]
