"""Window state as panes (Li et al., "No pane, no gain"; Flink's window slicing).

Per window spec, state is kept per *pane* of gcd(length, slide): a tumbling window is one
pane, a 5-minute window sliding every 30 s is ten. Each slice delta is added to exactly
one pane per spec, however many windows overlap it; a window's values are the sum of its
panes, taken when the window is emitted. A contribution that must reach only some of the
windows over a pane (an event late for the older ones) goes to those windows' own
`extra` sums instead.

Early rows re-read open windows every tick. Each window's rollups from its last early
emission are cached (not snapshotted; rebuilt in full after a restart), and every part
keeps the deltas it received since (`fresh`): the next emission rolls up only those and
adds them to the cache. Sums stay exact in any order (operators.metrics keeps every value
on a grid), so a cached window's rows equal a full recomputation's. The price is memory:
rollups are larger than the finest sums (measured at 10k dims: 69 MiB of cache for the 12
open windows against 12 MiB of panes), held only while a window is open.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from operators.cells import EXTRA_KEY_BITS
from operators.keyed_sums import KeyedSums, Run, merge_runs, sum_by_key
from operators.windows import WindowSpec


@dataclass(frozen=True)
class PaneLayout:
    spec: WindowSpec

    @property
    def pane(self) -> int:
        return math.gcd(self.spec.length, self.spec.slide)

    def pane_of(self, slice_start: int) -> int:
        return slice_start - slice_start % self.pane

    def windows_of_pane(self, pane_start: int) -> Iterator[int]:
        return self.spec.starts_containing_slice(pane_start, self.pane)

    def panes_of_window(self, start: int) -> range:
        return range(start, start + self.spec.length, self.pane)

    def first_end_of_pane(self, pane_start: int) -> int:
        """End of the earliest window that contains the pane."""
        spec = self.spec
        lowest = -((-(pane_start + self.pane - spec.length)) // spec.slide) * spec.slide
        return lowest + spec.length

    def last_end_of_pane(self, pane_start: int) -> int:
        """End of the latest window that contains the pane."""
        return pane_start - pane_start % self.spec.slide + self.spec.length


@dataclass
class Sums:
    """One pane's (or one window's extra) sums per family, and cells touched this tick.

    `fresh`: the deltas added since the touched cells were last cleared, per family (for
    the windows' cached rollups; not part of a snapshot)."""

    families: dict[str, KeyedSums]
    touched: list[np.ndarray] = field(default_factory=list)
    fresh: dict[str, list[Run]] = field(default_factory=dict)

    @classmethod
    def empty(cls, widths: dict[str, int]) -> Sums:
        return cls({name: KeyedSums(width) for name, width in widths.items()})

    def add(
        self, family: str, keys: np.ndarray, values: np.ndarray, touched: np.ndarray | None
    ) -> None:
        """`touched`: the cells changed, or None when nobody emits early rows (then
        neither they nor the fresh deltas are kept)."""
        self.families[family].add_unique(keys, values)
        if touched is not None:
            self.touched.append(touched)
            self.fresh.setdefault(family, []).append((keys, values))

    def __getstate__(self) -> dict[str, object]:
        return {"families": self.families, "touched": self.touched}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.fresh = {}


@dataclass
class SpecState:
    """Panes, per-window extras, and how far this spec's windows are final."""

    layout: PaneLayout
    widths: dict[str, int]
    panes: dict[int, Sums] = field(default_factory=dict)
    extras: dict[int, Sums] = field(default_factory=dict)  # by window start
    final_before: float = -math.inf  # windows ending at or before this were emitted final
    # Window start -> family -> rolled-up sums as of the last early emission (a cache).
    rolled: dict[int, dict[str, Run]] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "rolled"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.rolled = {}

    def pane(self, pane_start: int) -> Sums:
        sums = self.panes.get(pane_start)
        if sums is None:
            sums = self.panes[pane_start] = Sums.empty(self.widths)
        return sums

    def extra(self, window_start: int) -> Sums:
        sums = self.extras.get(window_start)
        if sums is None:
            sums = self.extras[window_start] = Sums.empty(self.widths)
        return sums

    def window_starts(self) -> set[int]:
        """Starts of the windows that have any state."""
        starts = set(self.extras)
        for pane_start in self.panes:
            starts.update(self.layout.windows_of_pane(pane_start))
        return starts

    def parts(self, window_start: int) -> list[Sums]:
        parts = [
            self.panes[p] for p in self.layout.panes_of_window(window_start) if p in self.panes
        ]
        extra = self.extras.get(window_start)
        return [*parts, extra] if extra is not None else parts

    def touched(self, window_start: int) -> np.ndarray | None:
        chunks = [t for part in self.parts(window_start) for t in part.touched]
        return np.unique(np.concatenate(chunks)) if chunks else None

    def fresh(self, window_start: int, family: str) -> list[Run]:
        """Deltas of one family that reached the window since its touched cells were
        last cleared."""
        return [run for part in self.parts(window_start) for run in part.fresh.get(family, ())]

    def clear_touched(self) -> None:
        """After an early emission: every window with fresh deltas has taken them."""
        for sums in (*self.panes.values(), *self.extras.values()):
            sums.touched = []
            sums.fresh = {}

    def evict_final(self) -> None:
        """Drop panes and extras no open window needs."""
        self.panes = {
            p: s
            for p, s in self.panes.items()
            if self.layout.last_end_of_pane(p) > self.final_before
        }
        self.extras = {
            w: s for w, s in self.extras.items() if w + self.layout.spec.length > self.final_before
        }
        self.rolled = {
            w: r for w, r in self.rolled.items() if w + self.layout.spec.length > self.final_before
        }


def window_sums(
    parts: list[Sums], family: str, cells: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """A window's (keys, values) of one family: the sum of its parts, only `cells` if given.

    A whole window's parts are merged one at a time into a running sum (each part is one
    sorted run): what is alive is that sum and one part, not every part's rows at once
    (concatenated for one sort, the ten panes of a `5m_30s` window were 40–49 MiB of
    values in the end of the bench log's bounded run, issue 10). The same sums in any
    order (values on a grid, :mod:`operators.metrics`)."""
    if cells is None:
        total: Run | None = None
        for part in parts:
            sums = part.families[family]
            if len(sums):
                run = sums.compacted()
                total = run if total is None else merge_runs(total, run)
        if total is None:
            width = parts[0].families[family].width if parts else 1
            return np.empty(0, dtype=np.int64), np.empty((0, width))
        return total
    keys_chunks, value_chunks = [], []
    for part in parts:
        sums = part.families[family]
        if len(sums) == 0:
            continue
        keys, values = sums.gather(cells << EXTRA_KEY_BITS, (cells + 1) << EXTRA_KEY_BITS)
        keys_chunks.append(keys)
        value_chunks.append(values)
    width = parts[0].families[family].width if parts else 1
    if not keys_chunks:
        return np.empty(0, dtype=np.int64), np.empty((0, width))
    return sum_by_key(np.concatenate(keys_chunks), np.concatenate(value_chunks))
