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
adds them to the cache, in place (:class:`~operators.rollup_cache.RollupCache`). Sums
stay exact in any order (operators.metrics keeps every value on a grid), so a cached
window's rows equal a full recomputation's. The price is memory:
rollups are larger than the finest sums (measured at 10k dims: 69 MiB of cache for the 12
open windows against 12 MiB of panes), held only while a window is open.

The windows over a pane need not emit at the same ticks (a sliding spec's windows take
turns, :meth:`SpecState.early_due`, or only the latest emits): each part keeps its changes
as a log, and each window that has emitted early rows a cursor per part (`taken`: how many
it has emitted); a change leaves the log once every such window over the part has taken
it. A window's first early rows are all of it, built from its parts' sums (or from the
previous latest window's cache, less the parts only that one covered and plus those only
the new one covers: :meth:`SpecState.parts_apart`), so the log is not kept for windows
that have not emitted (the newer windows of a sliding spec that emits
only its latest would otherwise hold every change until their turn). The log's cells, the
cursors and the rows waiting for a share (:mod:`operators.early_shares`) are snapshotted,
the log's deltas are not: a restart rebuilds each window's rollups in full and emits the
cells its cursors had not taken, as the run before would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from operators.cells import EXTRA_KEY_BITS
from operators.early_shares import PendingRows
from operators.families import MAIN
from operators.keyed_sums import KeyedSums, Run, sum_by_key, summed
from operators.rollup_cache import RollupCache
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


PANE, EXTRA = 0, 1
PartKey = tuple[int, int]  # (PANE, pane start) or (EXTRA, window start)
_NOT_SNAPSHOTTED = frozenset({"rolled", "early_at"})


@dataclass
class Sums:
    """One pane's (or one window's extra) sums per family, and its log of changes not
    yet emitted by every window over it: `touched` (the cells each change touched) and,
    in the same order, `fresh` (its family and delta, for the windows' cached rollups;
    not part of a snapshot: None after a restore)."""

    families: dict[str, KeyedSums]
    touched: list[np.ndarray] = field(default_factory=list)
    fresh: list[tuple[str, Run] | None] = field(default_factory=list)

    @classmethod
    def empty(cls, widths: dict[str, int]) -> Sums:
        """The main family's sums are a dense table by cell while they fill one (its keys
        are cell << EXTRA_KEY_BITS: :class:`~operators.keyed_sums.KeyedSums`)."""
        return cls(
            {
                name: KeyedSums(width, EXTRA_KEY_BITS if name == MAIN else None)
                for name, width in widths.items()
            }
        )

    def add(
        self, family: str, keys: np.ndarray, values: np.ndarray, touched: np.ndarray | None
    ) -> None:
        """`touched`: the cells changed, or None when nobody emits early rows (then
        neither they nor the fresh deltas are kept)."""
        self.families[family].add_unique(keys, values)
        if touched is not None:
            self.touched.append(touched)
            self.fresh.append((family, (keys, values)))

    def drop_log(self, taken: int) -> None:
        """Forget the first `taken` changes (every window over this part emitted them)."""
        del self.touched[:taken], self.fresh[:taken]

    def __getstate__(self) -> dict[str, object]:
        return {"families": self.families, "touched": self.touched}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.fresh = [None] * len(self.touched)


@dataclass
class SpecState:
    """Panes, per-window extras, and how far this spec's windows are final."""

    layout: PaneLayout
    widths: dict[str, int]
    panes: dict[int, Sums] = field(default_factory=dict)
    extras: dict[int, Sums] = field(default_factory=dict)  # by window start
    final_before: float = -math.inf  # windows ending at or before this were emitted final
    # Window start -> family -> rolled-up sums as of the last early emission (a cache).
    rolled: dict[int, dict[str, RollupCache]] = field(default_factory=dict)
    # Window start -> part -> changes of that part's log the window has emitted.
    taken: dict[int, dict[PartKey, int]] = field(default_factory=dict)
    # Window start -> when it last emitted early rows (ms, processing time).
    early_at: dict[int, float] = field(default_factory=dict)
    # Window start -> its changed rows waiting for their share's tick (a spec whose early
    # rows go in shares, operators/early_shares.py).
    pending: dict[int, PendingRows] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k not in _NOT_SNAPSHOTTED}

    def __setstate__(self, state: dict[str, object]) -> None:
        # A snapshot without `taken` (before early_windows): no window has emitted, so
        # each emits all of itself first (SpecState.changed); none has rows waiting.
        self.__dict__.update({"taken": {}, "pending": {}, **state})
        self.rolled, self.early_at = {}, {}

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
        return [sums for _, sums in self._keyed_parts(window_start)]

    def parts_apart(self, older: int, newer: int) -> tuple[list[Sums], list[Sums]]:
        """The parts only window `older` covers (its oldest panes, its extras), and those
        only window `newer` covers: what turns one window's sums into the other's."""
        old, new = dict(self._keyed_parts(older)), dict(self._keyed_parts(newer))
        return (
            [sums for key, sums in old.items() if key not in new],
            [sums for key, sums in new.items() if key not in old],
        )

    def _keyed_parts(self, window_start: int) -> list[tuple[PartKey, Sums]]:
        parts: list[tuple[PartKey, Sums]] = [
            ((PANE, p), self.panes[p])
            for p in self.layout.panes_of_window(window_start)
            if p in self.panes
        ]
        extra = self.extras.get(window_start)
        return [*parts, ((EXTRA, window_start), extra)] if extra is not None else parts

    def _untaken(self, window_start: int) -> Iterator[tuple[Sums, int]]:
        """Each part of the window with how many of its logged changes it has emitted."""
        taken = self.taken.get(window_start, {})
        for key, part in self._keyed_parts(window_start):
            yield part, taken.get(key, 0)

    def emitted_early(self, window_start: int) -> bool:
        """Whether the window has emitted early rows since this stage started."""
        return window_start in self.taken

    def pending_rows(self, window_start: int) -> PendingRows:
        """The window's changed rows that wait for their share's tick."""
        pending = self.pending.get(window_start)
        if pending is None:
            pending = self.pending[window_start] = PendingRows()
        return pending

    def changed(self, window_start: int) -> bool:
        """Whether the window changed since its last early emission, or has changed rows
        that wait for their share (:mod:`operators.early_shares`); one that has not
        emitted any (since this stage started) has if it holds anything: its first
        early rows are built from its parts in full, not from the logged changes
        (which are kept only for the windows that emitted, :meth:`_drop_taken`)."""
        if not self.emitted_early(window_start):
            return bool(self._keyed_parts(window_start))
        if self.pending.get(window_start):
            return True  # rows still wait for their share
        return any(len(part.touched) > n for part, n in self._untaken(window_start))

    def touched(self, window_start: int) -> np.ndarray:
        """Cells changed in the window since its last early emission (sorted, unique)."""
        chunks = [t for part, n in self._untaken(window_start) for t in part.touched[n:]]
        return np.unique(np.concatenate(chunks)) if chunks else np.empty(0, dtype=np.int64)

    def fresh(self, window_start: int, family: str) -> list[Run]:
        """Deltas of one family that reached the window since its last early emission."""
        return [
            entry[1]
            for part, n in self._untaken(window_start)
            for entry in part.fresh[n:]
            if entry is not None and entry[0] == family
        ]

    def early_due(self, window_start: int, now: float, interval: float, every: float) -> bool:
        """Whether the window's early rows go out at this tick (`interval` apart) when
        its spec's go out `every` ms: the windows of a sliding spec take turns, one tick
        each, spread evenly over the `every / interval` ticks of a round (a window's turn
        from its index, ``start // slide``), so a tick carries a share of them rather than
        all at once every `every` ms, nor all within a few consecutive ticks; a window
        that missed its turn (the early-row budget deferred it) is due at every tick
        after (:meth:`early_share` picks which of those go)."""
        if every <= interval:
            return True
        turns = _turns(interval, every)
        spec = self.layout.spec
        offset = (window_start // spec.slide) % spec.overlap * turns // spec.overlap
        turn = (int(now // interval) + offset) % turns == 0
        return turn or now - self.early_at.get(window_start, -math.inf) >= every

    def early_share(self, due: list[int], now: float, interval: float, every: float) -> list[int]:
        """Which of the windows `due` for early rows go at this tick: all when the spec
        emits every tick; otherwise its share of a round's turns, ``ceil(open windows /
        ticks of a round)``, the longest waiting first. Windows the early-row budget
        deferred are due together once it lets rows out again; sent at once they made one
        emission of several windows' rows (~0.5 s of work at 3,000 events/s) and one
        long pause after it. The rest stay due for the next tick."""
        if every <= interval or not due:
            return due
        share = math.ceil(self.layout.spec.overlap / _turns(interval, every))
        waited = sorted(due, key=lambda start: self.early_at.get(start, -math.inf))
        return sorted(waited[:share])

    def latest_window(self) -> int | None:
        """The window ending soonest of those over the newest pane: the spec's latest
        `length` of event time, the one window with early rows under `early_windows:
        latest` (not the oldest open one: a lagging watermark would hold that one's rows
        while newer panes fill)."""
        if not self.panes:
            return None
        return min(self.layout.windows_of_pane(max(self.panes)))

    def take(self, window_starts: list[int], now: float, latest: bool = False) -> None:
        """After an early emission of these windows: each has emitted its parts' logged
        changes; a part's changes that every window over it which emitted early rows has
        emitted leave its log (all of them when none has: the parts only newer windows
        cover, a late event's extras of a window that has not emitted). `latest`: the
        spec emits only its latest window, so the older ones never again: their
        cursors go, and the changes they held with them, and so do their cached rollups
        (which those changes would have kept current: their final rows are built from
        their parts) and the rows that waited for a share (their final rows carry them)."""
        if latest:
            first = min(window_starts)
            self.taken = {w: cursors for w, cursors in self.taken.items() if w >= first}
            self.rolled = {w: cached for w, cached in self.rolled.items() if w >= first}
            self.pending = {w: rows for w, rows in self.pending.items() if w >= first}
        for start in window_starts:
            self.early_at[start] = now
            self.taken[start] = {key: len(part.touched) for key, part in self._keyed_parts(start)}
        for pane_start, pane in self.panes.items():
            self._drop_taken((PANE, pane_start), pane, self.layout.windows_of_pane(pane_start))
        for start, extra in self.extras.items():
            self._drop_taken((EXTRA, start), extra, iter((start,)))

    def _drop_taken(self, key: PartKey, part: Sums, windows: Iterator[int]) -> None:
        """Forget the part's changes every window over it that emitted early rows has
        emitted: a window that has not yet builds its first ones in full."""
        if not part.touched:
            return
        emitted = [
            w
            for w in windows
            if w + self.layout.spec.length > self.final_before and self.emitted_early(w)
        ]
        done = min((self.taken[w].get(key, 0) for w in emitted), default=len(part.touched))
        if done:
            part.drop_log(done)
            for w in emitted:
                self.taken[w][key] -= done

    def clear_touched(self) -> None:
        """No early rows (a bounded run): no window needs the logged changes."""
        for sums in (*self.panes.values(), *self.extras.values()):
            sums.drop_log(len(sums.touched))
        self.taken = {}

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
        open_ = self.layout.spec.length
        self.rolled = {w: r for w, r in self.rolled.items() if w + open_ > self.final_before}
        self.taken = {w: t for w, t in self.taken.items() if w + open_ > self.final_before}
        self.early_at = {w: t for w, t in self.early_at.items() if w + open_ > self.final_before}
        self.pending = {w: p for w, p in self.pending.items() if w + open_ > self.final_before}


def window_sums(
    parts: list[Sums], family: str, cells: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """A window's (keys, values) of one family: the sum of its parts, only `cells` if given.

    A whole window's parts are merged one at a time into a running sum (each part is one
    sorted run; the main family's dense tables are added as tables,
    :func:`~operators.keyed_sums.summed`): what is alive is that sum and one part, not
    every part's rows at once
    (concatenated for one sort, the ten panes of a `5m_30s` window were 40–49 MiB of
    values in the end of the bench log's bounded run, issue 10). The same sums in any
    order (values on a grid, :mod:`operators.metrics`)."""
    if cells is None:
        total = summed([part.families[family] for part in parts])
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


def _turns(interval: float, every: float) -> int:
    """Ticks in a round of a spec's early rows: `interval` apart, each window once per
    `every` (early_due gives each its tick of the round, early_share a tick's share)."""
    return max(1, round(every / interval))
