"""The merge stage: partial slice deltas from every partition become window rows.

Low volume by design: one :class:`PartialBatch` per partition per tick. Each slice delta
is added (vectorized, :mod:`operators.keyed_sums`) to one pane per window spec
(:mod:`operators.panes`), at its finest cells; rollups are summed only when a window is
emitted (once when final, once per tick while open), not on every tick a pane receives
deltas — far less work when panes are fed many times. A window is final when every
partition's watermark has passed its end + allowed lateness
(:func:`~operators.windows.is_final`); until then its changed cells are emitted every
`emit_interval` as early rows (``final = 0``, ``version`` = emission time in ms), then
once as the final row (``final = 1``, ``version`` = :data:`FINAL_VERSION`) that
``ReplacingMergeTree(version)`` keeps over every early one, also after a replay.

Early rows roll up only the deltas each open window got since its last early emission,
onto that window's cached rollups (:mod:`operators.panes`); their cost still grows with
the number of changed cells (their rows are found in each window's sorted rollups). In
the `metrics` table an early row covers every rollup cell of a changed cell (each has a
new count); in the keyed families' tables only the (cell, key) rows whose sums changed:
a row left out keeps its previous early row, which is still true. A spec's windows emit
within `early_intervals` (default `emit_interval`): when that is several ticks, a share of
a window's changed rows at every tick (:mod:`operators.early_shares`; its cached rollups
take every tick's deltas, rolled up once for all specs), not all of them in one
emission that held the minute window's next rows. Of the ten open windows of a 5-minute
window sliding by 30 s, each rewrites the same changed cells (at every tick they were 5/6
of the rows): by default only the latest emits (`early_latest`,
:meth:`SpecState.latest_window`: the latest `length` of events); otherwise they take
turns, a share of them per tick (:meth:`SpecState.early_due`,
:meth:`SpecState.early_share`). They get at most `early_emit_budget` of processing time,
counted as the worker thread's CPU time and shared by the window specs
(:class:`~operators.early_budget.EarlyBudget`): when one spec's emissions take longer
than its part of the interval for longer than a second's banked credit covers, that
spec's next waits (the interval stretches, never shrinks), so a flow catching up, or one
with a very large cube, keeps ingesting instead of spending its time on rows that will
soon be replaced. Each spec is paced by its own work:
paced together, one emission of a sliding spec's windows (~0.1-0.5 s of work at 3,000
events/s on the bench's cube) held the minute window's next rows for 3x that, and that was
the tail of freshness (docs/performance.md). They also wait until the sink has written
their spec's previous early rows (all but `sink_slack` rows): handed over sooner, they
would only block the worker on the sink's bound while the writer inserts (a spec whose
rows the sink writes at once counts only such rows, which jump the sink's queue: not the
final rows handed before them, :mod:`operators.sink_wait`). When several
specs' early rows are due at a tick, a call hands over one spec's, the most frequent
first, and the stage asks to be called again at once for the rest
(:class:`~operators.early_handoff.EarlyHandOff`), so the minute window's rows are not
held while the hour's are built (a queued spec lets a spec chosen anew go first at most
`MAX_OVERTAKEN` times, then goes with it: it does not starve behind them). The rows of a
spec that emits at every tick are marked for the sink to write as they arrive and ahead
of other rows (`TableRows.write_now`), not at the flush interval that the other specs'
rows, handed over just after, restart. Final rows never wait for any of this.

Final rows go out in bounded slices: one window at a time (its rollups, then its rows,
before the next window's; the rollups a grouping set at a time, so one set's are alive,
not the whole cube's; its panes evicted before the next), oldest end first, and at most
`final_rows_per_call` rows per call (in whole windows: 50k lets a large window go alone).
When more windows are final than that (the end of a bounded run closes every open window,
~1.3M rows on the bench log; a quiet partition's watermark jump closes many), the rest
stay in state, still final by the same rule, and go out in later calls, each once the
sink has got and written the slice before the last (all but `sink_slack` of the rows up
to it, :class:`~operators.sink_wait.SinkWait`, the rule early rows wait on too; after
`SINK_WAIT_MAX_MS` whatever it holds; the sink is asked to write it at once, not at its
tables' flush interval: `sink`), so the sink writes one slice while the next is built,
and two slices' rows, not all of them, are alive at a time
(`final_slices_in_flight`). A snapshot between two slices holds
the windows not yet emitted; a resume emits them.

Bytewax calls nothing after `on_eof`, which would have to emit every window still waiting
as one list. In a bounded run the sources hold their end of input until this stage has
drained (`end`, :class:`connectors.end_gate.EndGate`: held when the stage is built,
released once every partition ended and no final window waits), so `on_eof` finds none
left; it still emits any that are (a stop, a source of a cluster's other process).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from bytewax.operators import StatefulLogic

from operators.batches import Categorical, TableRows
from operators.cells import EXTRA_KEY_BITS, ROLLUP_DIMS, CellIndex, GlobalIds
from operators.early_budget import EarlyBudget
from operators.early_handoff import EarlyHandOff
from operators.families import KEYED, MAIN, registry
from operators.keyed_sums import (
    Run,
    rank_ids,
    run_starts,
    sum_by_dense_keys,
    sum_by_key,
    sum_by_keys,
)
from operators.metrics import METRIC_COLUMNS, MainLayout
from operators.panes import PaneLayout, SpecState, window_sums
from operators.rollup_cache import RollupCache
from operators.sink_wait import SinkWait
from operators.slices import NO_CUTOFF, FamilyDelta, PartialBatch
from operators.snapshots import decode_state, encode_state
from operators.stage_states import MergeState
from operators.stats import FlowStats, timed
from operators.ticks import merge_lag, next_tick
from operators.window_metrics import WindowMetrics
from operators.windows import WindowSpec, is_final, slice_length

FINAL_VERSION = 1 << 62
DENSE_ROLLUP_LIMIT = 1 << 24  # ids (cells x distinct extra keys) for a bincount rollup
# Ids (cells x span of extra keys) for offsets instead of ranks: a wide span costs memory
# (8 bytes per id, twice) but saves sorting the extra keys.
DENSE_OFFSET_LIMIT = 1 << 23
SORT_OVER_DENSE = 16  # sort rows x sets keys when they are this many times fewer than ids
_EXTRA_MASK = (1 << EXTRA_KEY_BITS) - 1
_ALL_SETS = slice(None)


@dataclass(frozen=True)
class MergeConfig:
    partitions: int
    specs: tuple[WindowSpec, ...]
    grouping_sets: tuple[tuple[str, ...], ...]
    extra_dims: tuple[str, ...]
    allowed_lateness: int
    emit_interval: int
    confidence_bins: int
    # Early rows feed live dashboards; a bounded run (replay, backfill) writes final rows only.
    early_rows: bool = True
    # Without recovery Bytewax still asks for snapshots every epoch; skip the pickling.
    snapshots: bool = True
    # At most this share of processing time goes to early rows, shared by the window
    # specs (operators/early_budget.py).
    early_emit_budget: float = 0.25
    # Per spec (in `specs` order; missing: emit_interval): how often one of its windows
    # emits early rows; a sliding spec's windows take turns unless `early_latest`
    # (SpecState.early_due).
    early_intervals: tuple[int, ...] = ()
    # Per spec (missing: False): only its latest window emits early rows, the one ending
    # soonest of those over the newest pane (a sliding spec's default, `early_windows`).
    early_latest: tuple[bool, ...] = ()
    # Final rows per call, in whole windows (at least one): the rest wait for the next call
    # (50k: a large window, ~90k rows on the bench log, goes alone; 100k let a call hold two).
    final_rows_per_call: int = 50_000
    # Final windows that waited go out once the sink has written all but this many of the
    # rows up to the slice before the last (operators/sink_wait.py). Early rows wait
    # likewise on the rows up to their spec's last ones.
    sink_slack: int = 20_000
    # Final slices the sink may hold unwritten when the next is built: with 2 it writes one
    # while the stage builds the next (the bench log's bounded run, whose end emits ~1.3M
    # rows: 0.0-1.1 s less of ~19 s in three pairs, peak RSS no higher), with two slices'
    # rows alive instead of one.
    final_slices_in_flight: int = 2


log = logging.getLogger("pulse.merge")
DEFERRAL_LOG_EVERY_MS = 60_000
# Final windows that wait for the sink are looked at again this often. They, and early
# rows, go out after waiting this long whatever the sink holds: a live flow's other rows,
# or a sink partition in another process of a cluster (whose writes this process's
# stats do not count), must not starve them.
FINAL_POLL_MS = 20.0
SINK_WAIT_MAX_MS = 5_000.0


def _now_ms() -> float:
    return time.time() * 1000.0


def _thread_cpu_ms() -> float:
    return time.thread_time() * 1000.0


Emitted = tuple[SpecState, int, bool]  # (spec, window start, early rows or final ones)
# (family, ids of the deltas' keys) -> (the deltas, kept so no id is reused; their rollup)
_DeltaMemo = dict[tuple[object, ...], tuple[list[Run], Run]]


class EndOfInput(Protocol):
    """What holds a bounded run's end of input until this stage has drained
    (:class:`connectors.end_gate.EndGate`)."""

    def hold(self) -> None: ...

    def release(self) -> None: ...


class SinkDemand(Protocol):
    """How final windows that wait on the sink ask it to write now
    (:class:`connectors.sink_demand.SinkDemand`)."""

    def ask(self) -> None: ...

    @property
    def in_process(self) -> bool: ...


class MergeStage(StatefulLogic[PartialBatch, TableRows, bytes]):
    """Sums partials per pane and cell, decides finality, emits `metrics` rows."""

    # Final windows left for the next call (not state: a resume finds them final again).
    _finals_waiting = False

    def __init__(
        self,
        config: MergeConfig,
        stats: FlowStats,
        resume: bytes | None = None,
        clock: Callable[[], float] = _now_ms,
        work_clock: Callable[[], float] | None = None,
        end: EndOfInput | None = None,
        sink: SinkDemand | None = None,
    ) -> None:
        """`end`: held from now, released once every partition ended and every final
        window is out (see the module docstring). `sink`: asked to write at once while
        final windows wait on it."""
        self.config = config
        self.stats = stats
        self._now = clock
        # What an early emission costs, for its budget: the worker thread's CPU time, not
        # wall time (on a loaded machine mostly waits for the GIL, held by the sink's
        # writer, or for a core: 1.5 s of wall time for ~0.3 s of CPU, paused 3x that).
        # A test's own clock measures emissions too unless it gives a `work_clock`.
        self._work = work_clock or (_thread_cpu_ms if clock is _now_ms else clock)
        self._slice = slice_length(config.specs)
        self._layout = MainLayout(config.confidence_bins)
        # Every family's rollups and derived metrics come from its object.
        self._families = {family.name: family for family in registry(self._layout)}
        self._widths = {name: family.width for name, family in self._families.items()}
        self._shares = {spec.name: self._early_shares(i) for i, spec in enumerate(config.specs)}
        self._latest_only = {s.name: self._early_latest(i) for i, s in enumerate(config.specs)}
        # The deltas rolled up for early rows at this tick, for the other specs' calls.
        self._memo: _DeltaMemo = {}
        # Processing-time pacing of early rows: not state (a restart starts afresh).
        self._early_budget = EarlyBudget(len(config.specs), config.early_emit_budget)
        # A tick's early rows go one spec per call, the most frequent first (not state).
        self._handoff = EarlyHandOff(
            [self._early_every(i) for i in range(len(config.specs))],
            [spec.length for spec in config.specs],
        )
        # Specs whose early rows go at every tick: the sink writes them at once.
        self._write_now = [
            self._early_every(i) <= config.emit_interval for i in range(len(config.specs))
        ]
        # What the sink was handed up to each spec's last early rows (of the rows it
        # writes at once, for those specs), and the last final slice.
        self._early_handed = [SinkWait(SINK_WAIT_MAX_MS, write_now=now) for now in self._write_now]
        self._final_handed = SinkWait(SINK_WAIT_MAX_MS, in_flight=config.final_slices_in_flight)
        self._deferral_logged_at = -math.inf
        if resume is None:
            self.from_state(
                MergeState(
                    cells=CellIndex(config.grouping_sets, config.extra_dims),
                    local_cells={},
                    keys={family: GlobalIds() for family in KEYED},
                    specs=[SpecState(PaneLayout(spec), self._widths) for spec in config.specs],
                    watermarks={},
                    ended=set(),
                    next_tick=self._next_tick(),
                )
            )
        else:
            self.from_state(decode_state(MergeState, resume))
        self._end = end
        self._sink = sink
        if end is not None:
            end.hold()

    def to_state(self) -> MergeState:
        """What a snapshot stores (:mod:`operators.stage_states`)."""
        return MergeState(
            cells=self.cells,
            local_cells=self.local_cells,
            keys=self.keys,
            specs=self.specs,
            watermarks=self.watermarks,
            ended=self.ended,
            next_tick=self.next_tick,
        )

    def from_state(self, state: MergeState) -> None:
        """Take `state` (a fresh one, or a snapshot's) as this stage's own."""
        self.cells = state.cells
        # Per partition: its cell id -> our finest-cell row (see CellIndex.finest_ids).
        self.local_cells = state.local_cells
        self.keys = state.keys
        self.specs = state.specs
        self.watermarks = state.watermarks
        self.ended = state.ended
        self.next_tick = state.next_tick

    # ---- bytewax hooks -----------------------------------------------------------------

    def on_item(self, value: PartialBatch) -> tuple[list[TableRows], bool]:
        if value.new_cells:
            known = self.local_cells.get(value.partition, np.empty(0, dtype=np.int64))
            added = self.cells.finest_ids(value.new_cells)
            self.local_cells[value.partition] = np.concatenate((known, added))
        for family, new in value.new_keys.items():
            self.keys[family].announce(value.partition, new)
        for name, delta in value.families.items():
            self._apply(value.partition, name, delta)
        previous = self.watermarks.get(value.partition, -float("inf"))
        self.watermarks[value.partition] = max(previous, value.watermark)
        if value.ended:
            self.ended.add(value.partition)
            if len(self.ended) >= self.config.partitions:
                out = self._emit()
                self._release_if_drained()
                return out, StatefulLogic.RETAIN
        return [], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[TableRows], bool]:
        # Called early for final windows that waited (their slice only) or for the rest of
        # a tick's early rows (operators/early_handoff.py): no new early rows.
        tick = self._now() >= self.next_tick
        if tick:
            self._memo.clear()  # a new tick's deltas
        out = self._emit(early=tick)
        if tick:
            self.next_tick = self._next_tick()
        self._release_if_drained()
        return out, StatefulLogic.RETAIN

    def _release_if_drained(self) -> None:
        """Every partition ended and no final window waits: the sources may end."""
        drained = len(self.ended) >= self.config.partitions and not self._finals_waiting
        if self._end is not None and drained:
            self._end.release()

    def _next_tick(self) -> float:
        """Just after the partition stages' next tick (operators/ticks.py)."""
        interval = self.config.emit_interval
        return next_tick(self._now(), interval, merge_lag(interval))

    def on_eof(self) -> tuple[list[TableRows], bool]:
        """End of this execution: a bounded run has ended every partition; flush the rest
        (no call follows: every final window now, one window per slice)."""
        return self._emit(final_rows=math.inf), StatefulLogic.RETAIN

    def notify_at(self) -> datetime:
        at, now = self.next_tick, self._now()
        if self.call_again_now(now):
            at = now
        elif self._finals_waiting:
            at = min(at, now + FINAL_POLL_MS)
        return datetime.fromtimestamp(at / 1000.0, tz=UTC)

    def call_again_now(self, now: float) -> bool:
        """Whether this stage has more to hand over at once: the rest of a tick's early
        rows (one spec per call), or final windows the sink is ready for."""
        return self._handoff.waiting or (self._finals_waiting and self._sink_ready(now))

    def _sink_ready(self, now: float) -> bool:
        """Whether final windows that wait may go out: the sink has written the slice
        before the last (`final_slices_in_flight`; all but `sink_slack` rows), or it
        waited `SINK_WAIT_MAX_MS`."""
        return not self._sink_counted or self._final_handed.written(
            self.stats, self.config.sink_slack, now
        )

    @property
    def _sink_counted(self) -> bool:
        """Whether this process's stats count what the sink writes: a sink is wired and
        its writer runs here. Otherwise nothing is ever counted as written, and waiting
        on it would only wait out `SINK_WAIT_MAX_MS` (a cluster's other process)."""
        return self._sink is not None and self._sink.in_process

    def snapshot(self) -> bytes | None:  # type: ignore[override]
        if not self.config.snapshots:
            return None
        return encode_state(self.to_state(), self.stats)

    # ---- merging -----------------------------------------------------------------------

    @property
    def watermark(self) -> float:
        """The minimum over all partitions (a partition not heard from yet is at -inf)."""
        if len(self.watermarks) < self.config.partitions:
            return -float("inf")
        return min(self.watermarks.values())

    def _apply(self, partition: int, family: str, delta: FamilyDelta) -> None:
        finest = self.local_cells[partition][delta.cell_ids]
        extras = delta.extras
        if family in self.keys:
            extras = self.keys[family].to_global(partition, extras)
        keys = (finest << EXTRA_KEY_BITS) | extras
        g, lateness = self._slice, self.config.allowed_lateness
        early = self.config.early_rows
        for (slice_start, cutoff), rows in _groups(delta.slice_starts, delta.cutoffs):
            group_keys, group_values = sum_by_key(keys[rows], delta.values[rows])
            # Cells changed, for early rows (keys are sorted: no sort needed for unique).
            touched = None
            if early:
                owners = group_keys >> EXTRA_KEY_BITS
                touched = owners[run_starts(owners)]
            for state in self.specs:
                spec = state.layout.spec
                if cutoff == NO_CUTOFF:
                    pane = state.layout.pane_of(slice_start)
                    if state.layout.first_end_of_pane(pane) <= state.final_before:
                        self.stats.after_final += len(rows)  # should not happen: see README
                        continue
                    state.pane(pane).add(family, group_keys, group_values, touched)
                    continue
                # Late for some windows: only the ones still open at the cutoff get it.
                for start in spec.starts_containing_slice(slice_start, g):
                    end = start + spec.length
                    if is_final(end, cutoff, lateness):
                        continue  # counted in metrics_late by the partition
                    if end <= state.final_before:
                        self.stats.after_final += len(rows)
                        continue
                    state.extra(start).add(family, group_keys, group_values, touched)

    @timed("emissions", "emission_us", only_if_result=True)
    def _emit(self, final_rows: float | None = None, early: bool = True) -> list[TableRows]:
        """Final rows for windows the watermark has passed (up to `final_rows`, default
        `final_rows_per_call`), early rows for changed ones (unless the early-row budget
        defers their spec's: then their changed cells wait; `early` False: no new ones),
        one spec's per call (:class:`~operators.early_handoff.EarlyHandOff`)."""
        watermark = self.watermark
        lateness = self.config.allowed_lateness
        now, interval = self._now(), self.config.emit_interval
        early_due = early and self.config.early_rows
        paced = [
            early_due and self._early_rows_written(i, now) and self._early_budget.ready(i, now)
            for i in range(len(self.specs))
        ]
        finals: list[Emitted] = []
        chosen: list[list[int]] = []
        queued = self._handoff.take_queued()  # chosen at the tick before, not yet out
        for i, state in enumerate(self.specs):
            length = state.layout.spec.length
            every = self._early_every(i)
            due: list[int] = []
            still_open: set[int] = set()
            latest = self._early_latest(i)
            newest = state.latest_window() if latest else None
            shares = self._shares[state.layout.spec.name]
            for start in sorted(state.window_starts()):
                end = start + length
                if end <= state.final_before:
                    continue
                if is_final(end, watermark, lateness):
                    finals.append((state, start, False))
                    continue
                still_open.add(start)
                if latest and start != newest:
                    continue  # early rows from the spec's latest window only
                if (
                    i not in queued and paced[i]
                    and (shares > 1 or state.early_due(start, now, interval, every))
                    and state.changed(start)
                ):  # fmt: skip
                    due.append(start)
            if i in queued:
                chosen.append([start for start in queued[i] if start in still_open])
            elif shares > 1:
                chosen.append(due)  # every tick, a share of each window's changed rows
            else:
                chosen.append(state.early_share(due, now, interval, every))
        early_rows = [
            [(self.specs[i], start, True) for start in starts]
            for i, starts in enumerate(self._handoff.split(chosen, carried=queued))
        ]
        limit = self.config.final_rows_per_call if final_rows is None else final_rows
        if final_rows is None and self._finals_waiting and not self._sink_ready(self._now()):
            limit = 0  # the sink still writes the previous slice: these wait on
        out = self._final_slices(finals, limit)
        if out:
            self._final_handed.handed(self.stats, sum(len(rows) for rows in out), now)
        if any(early_rows):
            version = int(self._now())
            for i, windows in enumerate(early_rows):
                if windows:
                    started = self._work()
                    emitted = self._tables(windows, False, version, int(now // interval))
                    for table_rows in emitted:
                        table_rows.write_now = self._write_now[i]
                    out.extend(emitted)
                    self._pace_early_rows(i, len(windows), self._work() - started, self._now())
                    handed = emitted if self._write_now[i] else out  # what the wait counts
                    self._early_handed[i].handed(self.stats, sum(map(len, handed)), now)
        if not self.config.early_rows:
            for state in self.specs:
                state.clear_touched()
        else:
            for i, (state, windows) in enumerate(zip(self.specs, early_rows, strict=True)):
                if windows:
                    state.take([start for _, start, _ in windows], now, self._early_latest(i))
        if early and self.config.early_rows and not all(paced):
            self.stats.early_deferred += 1
        for state in self.specs:
            state.evict_final()
        for rows in out:
            if rows.table == "metrics":
                self.stats.metric_rows += len(rows)
        return [rows for rows in out if len(rows)]

    def _early_shares(self, spec: int) -> int:
        """Ticks in a round of the spec's early rows when they go in shares, a part of the
        changed rows at every tick (operators/early_shares.py): a window whose
        `early_interval` is several ticks, tumbling or a sliding spec's latest; 1 for the
        others (a sliding spec's windows that take turns instead)."""
        spec_of = self.config.specs[spec]
        if spec_of.slide != spec_of.length and not self._early_latest(spec):
            return 1
        return max(1, round(self._early_every(spec) / self.config.emit_interval))

    def _early_latest(self, spec: int) -> bool:
        latest = self.config.early_latest
        return spec < len(latest) and latest[spec]

    def _early_every(self, spec: int) -> float:
        intervals = self.config.early_intervals
        return intervals[spec] if spec < len(intervals) else self.config.emit_interval

    def _final_slices(self, finals: list[Emitted], limit: float) -> list[TableRows]:
        """Final rows of the given final windows, oldest end first, one window per slice,
        until `limit` rows (at least one window). The windows left wait for the next call
        (still in state; their cached rollups dropped: the early rows' fresh deltas that
        kept them current are cleared below)."""
        finals.sort(key=lambda f: f[1] + f[0].layout.spec.length)  # stable: per spec in order
        out: list[TableRows] = []
        rows = 0
        for done, (state, start, _) in enumerate(finals):
            if rows >= limit:
                for waiting, waiting_start, _ in finals[done:]:
                    waiting.rolled.pop(waiting_start, None)
                self._finals_waiting = True
                if self._sink is not None:
                    self._sink.ask()  # the slice above is written as soon as it arrives
                return out
            tables = self._tables([(state, start, False)], final=True, version=FINAL_VERSION)
            rows += sum(len(t) for t in tables)
            out.extend(tables)
            self.stats.windows_final += 1
            state.final_before = max(state.final_before, start + state.layout.spec.length)
            state.evict_final()  # its panes go now, not after every window of the call
        self._finals_waiting = False
        return out

    def _early_rows_written(self, spec: int, now: float) -> bool:
        """Whether the sink has written the spec's last early rows: all but `sink_slack`
        of the rows it had been handed up to and with them. Until then, new early rows of
        the spec would only wait behind them (the worker blocked on the sink's bound
        while the writer inserts) and its changed cells are better carried by the next
        emission. Per spec: the minute window's rows, handed first, are not held until
        the sink has also written the hour window's and a sliding window's handed after
        them (~45k rows each at 6,000 events/s, docs/performance.md). Only with a sink
        counted here (`_sink_counted`); at most `SINK_WAIT_MAX_MS` after the last ones."""
        return not self._sink_counted or self._early_handed[spec].written(
            self.stats, self.config.sink_slack, now
        )

    def _pace_early_rows(self, spec: int, windows: int, took: float, ended: float) -> None:
        """Charge a spec's early rows to the budget (:class:`EarlyBudget`): after an
        emission that took `took` ms of work, the spec's next waits until its credit is
        paid back; the other specs' do not."""
        pause = self._early_budget.spend(spec, took, ended)
        if pause > self.config.emit_interval and (
            ended - self._deferral_logged_at >= DEFERRAL_LOG_EVERY_MS
        ):
            self._deferral_logged_at = ended
            log.info(
                "early rows of %d open %s windows took %.0f ms; its next come %.1f s later or "
                "more (time.early_emit_budget = %.0f%%, shared by the window specs)",
                windows, self.specs[spec].layout.spec.name, took, pause / 1000.0,
                self.config.early_emit_budget * 100,
            )  # fmt: skip

    def _rollup(
        self,
        keys: np.ndarray,
        values: np.ndarray,
        sets: slice = _ALL_SETS,
        finest: FinestCells | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Finest-cell rows -> rows of every rollup cell they belong to in the grouping
        sets `sets` (all by default), summed. `finest`: the keys' :class:`FinestCells`
        when the caller rolls the same rows up a set at a time (found once, not per set)."""
        if len(keys) == 0:
            return keys, values
        # The distinct finest cells (few: a window's rows are cells x extra keys) and
        # their rollups, ranked: ids stay within the cells present, not the whole index.
        if finest is None:
            finest = FinestCells.of(keys, self.cells)
        rollups = finest.rollups[:, sets]
        present_cells, rank = rank_ids(rollups, len(self.cells))
        extras = keys & _EXTRA_MASK
        if rollups.shape[1] == 1 and _rising(rank[:, 0]):
            # One set that keeps every finest cell apart, in order: nothing to add up.
            return (present_cells[finest.per_row(rank[:, 0])] << EXTRA_KEY_BITS) | extras, values
        return _sum_ranked(present_cells, finest.per_row(rank), extras, values)

    def _rollup_rolled(self, run: Run, finer: int, coarser: int) -> Run:
        """Rows rolled up to grouping set `finer` -> rows of set `coarser` (whose dims
        `finer` keeps all of), summed: what `_rollup` of the finest rows would give, as
        sums are exact in any order (:mod:`operators.metrics`)."""
        keys, values = run
        if len(keys) == 0:
            return run
        cells = self.cells.coarser(finer, coarser)[keys >> EXTRA_KEY_BITS]
        present_cells, rank = rank_ids(cells[:, None], len(self.cells))
        return _sum_ranked(present_cells, rank, keys & _EXTRA_MASK, values)

    def _cached(
        self, state: SpecState, start: int, changed: dict[str, np.ndarray], memo: _DeltaMemo
    ) -> dict[str, RollupCache] | None:
        """The window's cached rollups with the deltas it got since added (early rows
        every tick cost only those), or None when it has none yet; `changed`: each
        family's keys those deltas changed. `memo`: deltas already rolled up at this
        tick, by the arrays they came from (every spec's windows get the same: the `1m`,
        the `1h` and a sliding spec's latest window each take a tick's deltas, one spec
        per call)."""
        cached = state.rolled.get(start)
        if cached is None:
            return None
        for family, cache in cached.items():
            fresh = state.fresh(start, family)
            if not fresh:
                changed[family] = cache.keys[:0]
                continue
            of = (family, *(id(keys) for keys, _ in fresh))
            hit = memo.get(of)
            if hit is None:
                # Summed first: the rollup keeps a single set's repeated keys apart.
                delta = self._rollup(*sum_by_key(*_joined(fresh)))
                memo[of] = (fresh, delta)
            else:
                delta = hit[1]
            cache.add(delta)
            changed[family] = delta[0]
        return cached

    def _tables(
        self, parts: list[Emitted], final: bool, version: int, tick: int = 0
    ) -> list[TableRows]:
        """Rows of `metrics` and the keyed families' tables for the given windows; `tick`
        (``now // emit_interval``): whose share of a window's changed rows goes out."""
        chunks: dict[str, dict[str, list[np.ndarray]]] = {}
        names = [spec.name for spec in self.config.specs]
        memo = self._memo
        for state, start, early in parts:
            if not early and start not in state.rolled:
                window = self._final_columns(state, start, names)
            else:
                changed: dict[str, np.ndarray] = {}
                cached = self._cached(state, start, changed, memo)
                # The window's first early rows since this stage started are all of it:
                # its logged changes are kept only once it has emitted (SpecState.changed).
                whole = early and not state.emitted_early(start)
                if cached is None and early and self._latest_only[state.layout.spec.name]:
                    cached = self._passed_on(state, start, memo)
                if cached is None:  # built from its parts in full
                    window_parts = state.parts(start)
                    cached = {
                        f: RollupCache(self._rollup(*window_sums(window_parts, f, None)))
                        for f in self._widths
                    }
                state.rolled[start] = cached
                keyed = None
                in_shares = early and self._shares[state.layout.spec.name] > 1
                if not early or (whole and not in_shares):
                    # From the cache (a final one's dropped with it).
                    rolled = {family: cache.run() for family, cache in cached.items()}
                else:
                    # Early rows: only the rollup cells of the finest cells that changed,
                    # found in the window's sorted runs (a cost in proportion to them);
                    # of the keyed families' tables only the rows that changed.
                    if whole:  # every row has changed; they go in shares
                        changed = {f: cached[f].run()[0] for f in (MAIN, *KEYED)}
                    cells, keys = self._changed_rows(state, start, cached, changed, tick)
                    if keys is not None:
                        keyed = {name: cached[name].of_keys(keys[name]) for name in KEYED}
                    low, high = cells << EXTRA_KEY_BITS, (cells + 1) << EXTRA_KEY_BITS
                    rolled = {family: cache.of_cells(low, high) for family, cache in cached.items()}
                window = self._window_columns(rolled, state, start, names, keyed)
            for table, window_columns in window.items():
                target = chunks.setdefault(table, {})
                for name, column in window_columns.items():
                    target.setdefault(name, []).append(column)
        out = []
        for table, columns in chunks.items():
            merged = {name: np.concatenate(parts) for name, parts in columns.items()}
            out.append(self._table_rows(table, merged, names, final, version))
        return out

    def _passed_on(
        self, state: SpecState, start: int, memo: _DeltaMemo
    ) -> dict[str, RollupCache] | None:
        """A sliding spec's new latest window's rollups, from the cache of the window that
        was latest before (dropped at this tick anyway: only the latest emits early
        rows): brought up to date, less the parts only it covers (its oldest pane, its
        extras), plus those only the new window covers. Two panes' rollups instead of
        the whole window's (the `5m_30s` window's were ~260 ms of one call every 30 s at
        24,000 events/s). None when there is no such cache (after a restart) or the two
        windows share too little for it to pay."""
        older = [w for w in state.rolled if w < start]
        if not older:
            return None
        donor = max(older)
        leaving, joining = state.parts_apart(donor, start)
        if len(leaving) + len(joining) >= len(state.parts(start)):
            return None
        cached = self._cached(state, donor, {}, memo)
        assert cached is not None
        del state.rolled[donor]
        for family, cache in cached.items():
            runs = [window_sums(joining, family, None)] if joining else []
            if leaving:
                keys, values = window_sums(leaving, family, None)
                runs.append((keys, -values))
            if not runs:
                break  # the same parts (the ones between never filled)
            delta = self._rollup(*sum_by_key(*_joined(runs)))
            cache.add(delta)
            cache.drop_emptied(delta[0])
        return cached

    def _changed_rows(
        self,
        state: SpecState,
        start: int,
        cached: dict[str, RollupCache],
        changed: dict[str, np.ndarray],
        tick: int,
    ) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """What a window's early rows write: the rollup cells, and the keyed families'
        keys (None: every key of those cells), that its fresh deltas (`changed`, each
        family's rolled-up keys; empty when the cache was just rebuilt) changed; for a
        spec in shares, those whose share's tick came (:mod:`operators.early_shares`)."""
        keys = {name: changed[name] for name in KEYED} if changed else None
        if changed and len(changed[MAIN]):
            # Every event adds a main row (with the same slice, cutoff and cell as its
            # other families' rows): the rolled-up main deltas' keys (extra key 0:
            # sorted, unique) are the changed rollup cells.
            cells = changed[MAIN] >> EXTRA_KEY_BITS
        else:
            cells = np.unique(self.cells.rollups(state.touched(start)))
        shares = self._shares[state.layout.spec.name]
        if shares == 1:
            return cells, keys
        if keys is None:  # rebuilt after a restart: every key of the changed cells
            low, high = cells << EXTRA_KEY_BITS, (cells + 1) << EXTRA_KEY_BITS
            keys = {name: cached[name].of_cells(low, high)[0] for name in KEYED}
        pending = state.pending_rows(start)
        pending.add({MAIN: cells << EXTRA_KEY_BITS, **keys})
        due = pending.take(tick, shares)
        empty = cells[:0]
        return due[MAIN] >> EXTRA_KEY_BITS, {name: due.get(name, empty) for name in KEYED}

    def _final_columns(
        self, state: SpecState, start: int, names: list[str]
    ) -> dict[str, dict[str, np.ndarray]]:
        """A final window's columns (no cached rollups), built a grouping set at a time:
        only one set's rollups are alive at once, and those of the sets coarser ones are
        rolled up from (the whole cube of the largest `5m_30s` window at 10k dims held
        ~135 MiB, mostly latency buckets x 8 sets). A set is rolled up from the smallest
        finer set already rolled up (:func:`rollup_sources`), not from the finest cells:
        in the cube, the one-dim sets and the grand total read a two-dim set's rows. A
        set's rollup cells are its own, so the rows are the whole cube's, put back in
        cell order."""
        window_parts = state.parts(start)
        finest = {family: window_sums(window_parts, family, None) for family in self._widths}
        cells_of = {
            family: FinestCells.of(keys, self.cells) for family, (keys, _) in finest.items()
        }
        order, sources = rollup_sources(self.cells.grouping_sets)
        # Each source's last reader, by place in `order`: kept until then, no longer.
        last_read = {s: at for at, g in enumerate(order) for s in sources[g]}
        kept: dict[int, dict[str, Run]] = {}  # rolled-up sets a later one rolls up from
        pieces: dict[str, list[dict[str, np.ndarray]]] = {}
        for at, g in enumerate(order):
            rolled: dict[str, Run] = {}
            for family, run in finest.items():
                # The finer set (already rolled up) with the fewest rows, if any.
                source = min(sources[g], key=lambda s: len(kept[s][family][0]), default=None)
                if source is None:
                    rolled[family] = self._rollup(*run, slice(g, g + 1), cells_of[family])
                else:
                    rolled[family] = self._rollup_rolled(kept[source][family], source, g)
            for table, columns in self._window_columns(rolled, state, start, names).items():
                pieces.setdefault(table, []).append(columns)
            if g in last_read:
                kept[g] = rolled
            kept = {s: runs for s, runs in kept.items() if last_read[s] > at}
            del rolled
        return {table: _in_cell_order(chunks) for table, chunks in pieces.items()}

    def _window_columns(
        self,
        rolled: dict[str, Run],
        state: SpecState,
        start: int,
        names: list[str],
        keyed: dict[str, Run] | None = None,
    ) -> dict[str, dict[str, np.ndarray]]:
        """One window's columns per table from rolled-up sums: rows for every cell they
        hold (the whole cube, a grouping set's cells, or the changed cells' rollups);
        `keyed`: the keyed families' rows to write instead (an early row's changed keys)."""
        spec = state.layout.spec
        main_keys, main_values = rolled[MAIN]
        # Every event adds a main row (its other families' rows come with it), so the
        # main keys (extra key 0: sorted, unique) are the cells.
        cells = main_keys >> EXTRA_KEY_BITS
        cell_metrics: dict[str, np.ndarray] = {}
        for family in self._families.values():
            cell_metrics.update(family.cell_metrics(*rolled[family.name], cells))
        window_id = names.index(spec.name)
        out = {
            MAIN: {
                "cells": cells,
                "window": np.full(len(cells), window_id, dtype=np.int32),
                "fields": main_values,  # a row per cell, in order (read only: can be cached)
                "start": np.full(len(cells), start, dtype=np.int64),
                "end": np.full(len(cells), start + spec.length, dtype=np.int64),
                **cell_metrics,
            }
        }
        for name in KEYED:
            keys, values = (keyed or rolled)[name]
            owners = keys >> EXTRA_KEY_BITS
            out[name] = {
                "cells": owners,
                "window": np.full(len(keys), window_id, dtype=np.int32),
                "extras": keys & _EXTRA_MASK,
                "values": values,
                "start": np.full(len(keys), start, dtype=np.int64),
                "end": np.full(len(keys), start + spec.length, dtype=np.int64),
            }
        return out

    def _table_rows(
        self, family: str, c: dict[str, np.ndarray], names: list[str], final: bool, version: int
    ) -> TableRows:
        n = len(c["cells"])
        columns: dict[str, Any] = {
            "window": Categorical(c["window"], names),
            "window_start": c["start"],
            "window_end": c["end"],
        }
        columns.update(self.cells.dim_columns(c["cells"]))
        columns["final"] = np.full(n, 1 if final else 0, dtype=np.uint8)
        columns["version"] = np.full(n, version, dtype=np.uint64)
        of = self._families[family]
        if family == MAIN:
            fields = c["fields"]
            derived = {**of.metrics(fields, (c["end"] - c["start"]) / 1000.0), **c}
            columns.update((name, derived[name]) for name in METRIC_COLUMNS)
            # Typed for the rules too: final or early, the watermark, the field matrix,
            # the cell ids.
            return WindowMetrics(
                str(of.table), columns, final, self.watermark, self._layout.names, fields,
                c["cells"],
            )  # fmt: skip
        columns.update(of.key_columns(c["extras"], self.keys[family].values))
        columns.update(of.metrics(c["values"], (c["end"] - c["start"]) / 1000.0))
        return TableRows(str(of.table), columns)


def _groups(
    slice_starts: np.ndarray, cutoffs: np.ndarray
) -> list[tuple[tuple[int, float], np.ndarray]]:
    """Row indices grouped by (slice start, cutoff)."""
    if (cutoffs == NO_CUTOFF).all():
        uniques, inverse = np.unique(slice_starts, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniques) + 1))
        return [
            ((int(s), NO_CUTOFF), order[bounds[i] : bounds[i + 1]])
            for i, s in enumerate(uniques.tolist())
        ]
    by_key: dict[tuple[int, float], list[int]] = {}
    for i, key in enumerate(zip(slice_starts.tolist(), cutoffs.tolist(), strict=True)):
        by_key.setdefault(key, []).append(i)
    return [(key, np.array(rows, dtype=np.int64)) for key, rows in by_key.items()]


@dataclass(frozen=True, slots=True)
class FinestCells:
    """The finest cells of rows keyed (cell << EXTRA_KEY_BITS) | extra key, and each
    cell's rollup cells in every grouping set: what `_rollup` needs of the rows whatever
    the sets. Sorted keys (a window's rows are) are described by each cell's number of
    rows, so a per-cell value reaches the rows by a repeat, not a gather by row; unsorted
    ones keep each row's cell index."""

    rollups: np.ndarray  # [distinct finest cells, grouping sets]: CellIndex ids
    counts: np.ndarray | None  # rows of each distinct cell, when the keys are sorted
    row_of: np.ndarray | None  # each row's distinct cell, when they are not

    @classmethod
    def of(cls, keys: np.ndarray, index: CellIndex) -> FinestCells:
        cells = keys >> EXTRA_KEY_BITS
        if len(cells) == 0 or not (cells[1:] >= cells[:-1]).all():
            distinct, row_of = np.unique(cells, return_inverse=True)
            return cls(index.rollups(distinct), None, row_of)
        starts = run_starts(cells)
        counts = np.diff(starts, append=len(cells))
        return cls(index.rollups(cells[starts]), counts, None)

    def per_row(self, per_cell: np.ndarray) -> np.ndarray:
        """A value per distinct cell (rows of `per_cell`) as one per row, a fresh array."""
        if self.counts is not None:
            return np.repeat(per_cell, self.counts, axis=0)
        assert self.row_of is not None
        return per_cell[self.row_of]


def _sum_ranked(
    present_cells: np.ndarray, rolled: np.ndarray, extras: np.ndarray, values: np.ndarray
) -> Run:
    """Rows summed by (rollup cell, extra key): `rolled` [rows, sets] holds each row's
    rollup cells as ranks among `present_cells` (a fresh array: used in place)."""
    # Dense ids (cell, extra key) when they fit: no sort of rows * sets keys. The extra
    # keys are small ids (classes, pairs, categories) or latency buckets, usually in a
    # narrow range: offsets from the smallest need no sort either; ranks do.
    low = int(extras.min())
    span = int(extras.max()) - low + 1
    if len(present_cells) * span <= min(DENSE_OFFSET_LIMIT, DENSE_ROLLUP_LIMIT):
        extra_values, extra_ids = np.arange(low, low + span), extras - low
    else:
        extra_values, extra_ids = np.unique(extras, return_inverse=True)
    size = len(present_cells) * len(extra_values)
    # A bincount costs the whole id range; a few rows (an early emission's deltas) sort
    # faster than that.
    if size > DENSE_ROLLUP_LIMIT or rolled.size * SORT_OVER_DENSE < size:
        cells = present_cells[rolled]
        return sum_by_keys((cells << EXTRA_KEY_BITS) | extras[:, None], values)
    dense = rolled  # dense ids in place, no copy
    dense *= len(extra_values)
    dense += extra_ids[:, None]
    present, sums = sum_by_dense_keys(dense, values, size)
    cells, at = np.divmod(present, len(extra_values))
    return (present_cells[cells] << EXTRA_KEY_BITS) | extra_values[at], sums


def rollup_sources(sets: list[frozenset[str]]) -> tuple[list[int], list[list[int]]]:
    """The order in which to roll up grouping sets (more dims first) and, for each set,
    the sets it can be rolled up from instead of the finest cells: those before it in
    that order that keep all its dims, the fewest more (in the cube, a one-dim set's
    two two-dim sets). Not the set that keeps every rollup dim: its rows are the
    finest cells' own, so reading them gains nothing, and keeping them costs memory."""
    order = sorted(range(len(sets)), key=lambda g: -len(sets[g]))
    finest = frozenset(ROLLUP_DIMS)
    sources: list[list[int]] = [[] for _ in sets]
    for at, g in enumerate(order):
        finer = [s for s in order[:at] if sets[g] < sets[s] != finest]
        fewest = min((len(sets[s]) for s in finer), default=0)
        sources[g] = [s for s in finer if len(sets[s]) == fewest]
    return order, sources


def _joined(runs: list[Run]) -> Run:
    """Runs as one (keys may repeat)."""
    if len(runs) == 1:
        return runs[0]
    return np.concatenate([k for k, _ in runs]), np.concatenate([v for _, v in runs])


def _in_cell_order(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One window's columns from chunks of disjoint cells, each in key order: all of
    them in key order (by cell; a cell's keyed rows stay in their chunk's order)."""
    if len(chunks) == 1:
        return chunks[0]
    order = np.argsort(np.concatenate([c["cells"] for c in chunks]), kind="stable")
    return {name: np.concatenate([c[name] for c in chunks])[order] for name in chunks[0]}


def _rising(values: np.ndarray) -> bool:
    return bool((values[1:] > values[:-1]).all())
