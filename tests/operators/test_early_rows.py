"""Early rows in unbounded runs: paced to their share of processing time, never at the
cost of a final row or of a changed cell."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from connectors.sink_demand import SinkDemand
from operators.batches import RawBatch, TableRows
from operators.early_handoff import MAX_OVERTAKEN
from operators.merge_stage import SINK_WAIT_MAX_MS, MergeStage
from operators.partition_stage import PartitionStage
from operators.slices import PartialBatch
from operators.stats import FlowStats
from tests.harness import (
    CUBE,
    DEFAULT_WINDOWS,
    Output,
    configs,
    notified,
    semantics,
    sink_gets,
    sink_writes,
    sink_writes_all,
)

T0 = 1_767_225_600_000  # a minute boundary


class Clock:
    """Processing time that a test moves by hand. Each reading through `costly` also
    moves it by `cost` ms: the merge stage reads it before and after an emission, so
    every emission takes `cost` ms for the pacing."""

    def __init__(self, cost: float) -> None:
        self.now = 1_000_000.0
        self.cost = cost

    def __call__(self) -> float:
        return self.now

    def costly(self) -> float:
        self.now += self.cost
        return self.now


def _inference(request_id: str, ts: int, segment: str) -> bytes:
    return json.dumps({"type": "inference", "request_id": request_id, "ts": ts, "model_id": "m",
                       "model_version": "v1", "endpoint": "/e", "segment": segment}).encode()  # fmt: skip


class Flow:
    """One partition and the merge stage, with the `1m` window only unless `windows` are
    given (the budget is shared by the window specs: one spec has all of it)."""

    def __init__(
        self, cost: float, budget: float, windows: tuple[Any, ...] = DEFAULT_WINDOWS[:1]
    ) -> None:
        sem = semantics(partitions=1, windows=windows)
        partition_config, merge_config = configs(sem, bounded=False)
        self.clock, self.stats = Clock(cost), FlowStats()
        self.stage = PartitionStage(partition_config, self.stats, clock=self.clock)
        self.merge = MergeStage(
            replace(merge_config, early_emit_budget=budget), self.stats, clock=self.clock.costly
        )
        self.offset = 0
        # No feedback at all: the stream says it is caught up, so inferences need not wait.
        self.stage.on_item(RawBatch(0, "feedback", "feedback", caught_up=True))

    def send(self, *lines: bytes) -> None:
        """Lines into the partition, its tick through the merge (no merge tick)."""
        offsets = list(range(self.offset, self.offset + len(lines)))
        self.offset += len(lines)
        items = self.stage.on_item(RawBatch(0, "inferences", "inferences", list(lines), offsets,
                                            caught_up=True))[0]  # fmt: skip
        items += self.stage.on_notify()[0]
        for item in items:
            if isinstance(item, PartialBatch):
                assert self.merge.on_item(item)[0] == []

    def tick(self, after_ms: float) -> list[dict[str, Any]]:
        """A merge tick `after_ms` later: the 1m window's metrics rows it emitted."""
        self.clock.now += after_ms
        return _rows_1m(notified(self.merge, self.clock.now))


def _rows_1m(tables: list[TableRows], window: str = "1m") -> list[dict[str, Any]]:
    out = Output()
    out.tables["metrics"] = [t for t in tables if t.table == "metrics"]
    return [
        {"segment": r["segment"], "final": r["final"], "start": r["window_start"],
         "inferences": r["inference_count"]}
        for r in out.column_rows("metrics") if r["window"] == window
    ]  # fmt: skip


def _segments(rows: list[dict[str, Any]], start: int = T0) -> set[str]:
    return {r["segment"] for r in rows if r["start"] == start and r["segment"] != "*"}


def test_cheap_early_rows_come_every_tick() -> None:
    flow = Flow(cost=1.0, budget=0.25)  # an emission takes 1 ms: 3 ms pause < emit_interval
    flow.send(_inference("r1", T0, "a"))
    assert _segments(flow.tick(1000)) == {"a"}
    flow.send(_inference("r2", T0 + 1000, "b"))
    assert _segments(flow.tick(1000)) == {"b"}  # only the changed cell (and its rollups)
    assert flow.stats.early_deferred == 0


def test_costly_early_rows_wait_for_their_budget_and_lose_no_changed_cell() -> None:
    # Each emission takes 2 s; with a 10 % budget the next may start 18 s after it ended
    # (a tick's reading of the clock costs 2 s too: each tick below is 3 s).
    flow = Flow(cost=2000.0, budget=0.1)
    flow.send(_inference("r1", T0, "a"))
    assert _segments(flow.tick(1000)) == {"a"}
    flow.send(_inference("r2", T0 + 1000, "b"))
    assert flow.tick(1000) == []  # 1 s later: deferred
    flow.send(_inference("r3", T0 + 2000, "c"))
    assert flow.tick(1000) == []
    assert flow.stats.early_deferred == 2
    rows = flow.tick(20_000)  # past the pause: both cells changed meanwhile come now
    assert _segments(rows) == {"b", "c"}
    assert all(r["final"] == 0 for r in rows)
    total = next(r for r in rows if r["segment"] == "*")
    assert total["inferences"] == 3.0  # the running value includes everything so far


def test_a_costly_spec_defers_only_its_own_early_rows() -> None:
    """Each window spec is paced by its own work (operators/early_budget.py): the hour
    window's costly early rows (2 s of work) wait, while the minute window's (1 ms) come
    at the next tick; paced together, the minute's waited too. And the budget is not
    split into fixed parts: what the minute does not need goes to the hour, whose debt
    is paid at the whole budget's rate (0.2 / 0.8 per ms: ~8 s), not at half of it (18 s)."""
    flow = Flow(cost=0.0, budget=0.2, windows=DEFAULT_WINDOWS[:2])
    work = Clock(cost=0.0)
    cost = {"1m": 1.0, "1h": 2000.0}

    class CostlyHour(MergeStage):
        def _tables(self, parts: Any, final: bool, version: int, tick: int = 0) -> list[TableRows]:
            if not final:
                work.now += sum(cost[state.layout.spec.name] for state, _, _ in parts)
            return super()._tables(parts, final, version, tick)

    flow.merge = CostlyHour(flow.merge.config, flow.stats, clock=flow.clock, work_clock=work)

    def tick(after_ms: float) -> list[TableRows]:
        flow.clock.now += after_ms
        return notified(flow.merge, flow.clock.now)

    flow.send(_inference("r1", T0, "a"))
    tables = tick(1000)
    assert _segments(_rows_1m(tables)) == {"a"} == _segments(_rows_1m(tables, "1h"))
    flow.send(_inference("r2", T0 + 1000, "b"))
    tables = tick(1000)
    assert _segments(_rows_1m(tables)) == {"b"}  # the minute's rows are not held
    assert _rows_1m(tables, "1h") == []  # the hour's debt: 2,000 - 249 ms of work
    assert _rows_1m(tick(6000), "1h") == []  # 7 s after its rows: 252 ms still owed
    assert flow.stats.early_deferred == 2
    assert _segments(_rows_1m(tick(1100), "1h")) == {"b"}  # paid by 8.1 s: nothing lost


def test_a_ticks_early_rows_go_one_spec_per_call_the_most_frequent_first() -> None:
    """When several specs' early rows are due at a tick, a call hands over one spec's and
    the stage asks to be called again at once for the next (operators/early_handoff.py):
    the minute's rows are not held while the hour's are built. The spec whose early rows
    go most often first, then the shorter window; the rows are those one call gave."""

    def calls(intervals: tuple[int, ...]) -> list[list[tuple[set[str], set[str]]]]:
        """Per tick, per call: the segments of the call's 1m and 1h early rows."""
        flow = Flow(cost=0.0, budget=0.9, windows=DEFAULT_WINDOWS[:2])
        config = replace(flow.merge.config, early_intervals=intervals)
        flow.merge = MergeStage(config, flow.stats, clock=flow.clock, work_clock=lambda: 0.0)
        ticks = []
        for i, segment in enumerate("ab"):
            flow.send(_inference(f"r{i}", T0 + 1000 * i, segment))
            flow.clock.now += 1000
            out = [flow.merge.on_notify()[0]]
            while flow.merge.call_again_now(flow.clock.now):
                out.append(flow.merge.on_notify()[0])
            ticks.append([(_segments(_rows_1m(t)), _segments(_rows_1m(t, "1h"))) for t in out])
        assert not flow.merge.call_again_now(flow.clock.now)
        return ticks

    # Both every tick (1 s): the shorter window first.
    assert calls(()) == [[({"a"}, set()), (set(), {"a"})], [({"b"}, set()), (set(), {"b"})]]
    # The hour's every 500 ms (still at every 1 s tick): it goes first.
    assert calls((1000, 500)) == [[(set(), {"a"}), ({"a"}, set())],
                                  [(set(), {"b"}), ({"b"}, set())]]  # fmt: skip


def test_a_queued_spec_is_overtaken_at_most_max_overtaken_times() -> None:
    """On a busy worker the stage may be called again only at the next tick, where the
    minute's new rows come first again: the hour's, queued at a tick, go with them once
    overtaken `MAX_OVERTAKEN` times instead of being queued behind them tick after tick
    (they starved for 7 s at 24,000 events/s, then 7 s of deltas were rolled up in one
    0.7 s call that held every other row)."""
    flow = Flow(cost=0.0, budget=0.9, windows=DEFAULT_WINDOWS[:2])
    config = replace(flow.merge.config, early_intervals=(1000, 10_000))  # the hour in shares
    flow.merge = MergeStage(config, flow.stats, clock=flow.clock, work_clock=lambda: 0.0)
    calls = []
    for i, segment in enumerate("abcdefghij"):
        flow.send(_inference(f"r{i}", T0 + 1000 * i, segment))
        flow.clock.now += 1000
        tables = flow.merge.on_notify()[0]  # once a tick: never called again at once
        calls.append((_segments(_rows_1m(tables)), len(_rows_1m(tables, "1h"))))
    assert [minute for minute, _ in calls] == [{segment} for segment in "abcdefghij"]
    # Queued at a tick, overtaken at the next MAX_OVERTAKEN, with the minute's after.
    went = [i for i, (_, hour) in enumerate(calls) if hour]
    assert went == [MAX_OVERTAKEN + 1, 2 * MAX_OVERTAKEN + 3]  # [4, 9]


def test_a_spec_waits_for_the_sink_to_write_its_own_early_rows_only() -> None:
    """The sink's gate is per spec: the minute window's next rows wait until its own last
    ones are written, not until the hour window's, handed after them, are too, nor
    until rows the sink writes after them are."""
    flow = Flow(cost=1.0, budget=0.9, windows=DEFAULT_WINDOWS[:2])
    sink = SinkDemand()
    sink.attach(lambda: None)
    flow.merge = MergeStage(
        replace(flow.merge.config, sink_slack=0), flow.stats, clock=flow.clock.costly, sink=sink
    )

    def handed(tables: list[TableRows], written: bool) -> tuple[set[str], set[str]]:
        rows, now = sink_gets(flow.stats, tables)
        if written:
            sink_writes(flow.stats, rows, now)
        return _segments(_rows_1m(tables)), _segments(_rows_1m(tables, "1h"))

    flow.send(_inference("r1", T0, "a"))
    flow.clock.now += 1000
    assert handed(flow.merge.on_notify()[0], written=True) == ({"a"}, set())
    assert handed(flow.merge.on_notify()[0], written=False) == (set(), {"a"})
    flow.send(_inference("r2", T0 + 1000, "b"))
    flow.clock.now += 1000
    assert handed(flow.merge.on_notify()[0], written=True) == ({"b"}, set())  # not held
    assert not flow.merge.call_again_now(flow.clock.now)  # the hour's wait for the sink
    sink_writes_all(flow.stats)
    flow.clock.now += 1000
    assert _segments(_rows_1m(notified(flow.merge, flow.clock.now), "1h")) == {"b"}  # now
    # Rows handed before the minute's and not written yet, of those the sink does not
    # write at once (a window's final rows: it writes the minute's early rows ahead of
    # them), do not hold the minute's next rows either.
    flow.stats.sink_rows_in += 100_000
    for i, segment in enumerate("cd", start=3):
        flow.send(_inference(f"r{i}", T0 + 1000 * i, segment))
        flow.clock.now += 1000
        assert handed(flow.merge.on_notify()[0], written=True)[0] == {segment}


def test_final_rows_do_not_wait_for_the_early_budget() -> None:
    flow = Flow(cost=2000.0, budget=0.1)
    flow.send(_inference("r1", T0, "a"))
    assert _segments(flow.tick(1000)) == {"a"}  # early row; the next early rows wait 18 s
    # Event time moves 2 minutes on: the watermark passes the end of [T0, T0 + 1 min).
    flow.send(_inference("r2", T0 + 130_000, "b"))
    rows = flow.tick(1000)
    finals = [r for r in rows if r["final"]]
    assert _segments(finals) == {"a"}
    assert [r for r in rows if not r["final"]] == []  # the early rows still wait
    assert flow.stats.early_deferred == 1


# What a ReplacingMergeTree table's sorting key is made of, beyond the dims and window.
TABLE_KEYS = {"metrics": (), "metrics_classes": ("class",),
              "metrics_preferences": ("policy_a", "policy_b"), "metrics_reports": ("category",)}  # fmt: skip
ROW_KEY = ("window", "window_start", "tenant", "model_id", "deployment", "model_version",
           "segment", "endpoint", "extra_dims")  # fmt: skip


@pytest.mark.parametrize("sets", [CUBE, CUBE[:1]], ids=["cube", "one set"])
def test_rows_from_cached_rollups_equal_a_full_recomputation_at_every_tick(
    sets: tuple[tuple[str, ...], ...],
) -> None:
    """Early rows roll up only the deltas since the last emission onto each window's
    cached rollups; every emission's `metrics` rows, early and final, must equal rolling
    up in full. The keyed families' early rows are only the keys that changed (a full
    recomputation writes every key of a changed cell): after every emission, the tables
    as ReplacingMergeTree reads them (each key's latest row) are equal. One grouping set
    too: its rollup keeps keys apart, so deltas that repeat a key are summed first (they
    broke the merge into the cache: 86 rows for 79 keys)."""

    from operators.synthetic import TrafficProfile

    profile = TrafficProfile(seed=8, duration_s=150, rate=12, late_rate=0.02, dims=60)
    sem = semantics(partitions=2, grouping_sets=sets)
    partition_config, merge_config = configs(sem, bounded=False)
    clock = Clock(cost=0.0)
    stats = FlowStats()
    stages = {p: PartitionStage(partition_config, stats, clock=clock) for p in range(2)}
    cached = MergeStage(merge_config, stats, clock=clock)
    full = MergeStage(merge_config, FlowStats(), clock=clock)
    queues = _queued_lines(profile, partitions=2)

    def rows(tables: list[TableRows]) -> dict[str, dict[tuple[Any, ...], str]]:
        """Each table's rows (without the version) by their key in the table."""
        by_table: dict[str, dict[tuple[Any, ...], str]] = {}
        for key, r in _keyed_rows(tables):
            got = by_table.setdefault(key[0], {})
            assert key[1:] not in got
            got[key[1:]] = repr(r)
        return by_table

    reused = skipped = 0
    stored: dict[str, dict[str, dict[tuple[Any, ...], str]]] = {"cached": {}, "full": {}}

    def both(tables_of: Any) -> int:
        nonlocal reused, skipped
        reused += any(state.rolled for state in cached.specs)
        for state in full.specs:
            state.rolled.clear()  # `full` never reuses a rollup
        got, want = rows(tables_of(cached)), rows(tables_of(full))
        assert got.get("metrics", {}) == want.get("metrics", {})
        for table, table_rows in got.items():  # never a row the full recomputation lacks
            assert table_rows.items() <= want[table].items()
            stored["cached"].setdefault(table, {}).update(table_rows)
        for table, table_rows in want.items():  # every key written now reads the same
            skipped += len(table_rows) - len(got.get(table, {}))
            stored["full"].setdefault(table, {}).update(table_rows)
            latest = stored["cached"].get(table, {})
            assert all(latest.get(key) == row for key, row in table_rows.items())
        return sum(len(r) for r in got.values())

    emitted = 0
    for batches in _rounds(queues, 40):
        for p, batch in batches:
            items = stages[p].on_item(batch)[0] + stages[p].on_notify()[0]
            for item in items:
                if isinstance(item, PartialBatch):
                    emitted += both(lambda merge, item=item: merge.on_item(item)[0])
        clock.now += 1_000
        emitted += both(lambda merge: notified(merge, clock.now))
    for stage in stages.values():
        for item in stage.on_eof()[0]:
            if isinstance(item, PartialBatch):
                emitted += both(lambda merge, item=item: merge.on_item(item)[0])
    emitted += both(lambda merge: merge.on_eof()[0])
    assert stats.windows_final > 10 and emitted > 1000 and reused > 30
    assert skipped > 100  # keyed rows that did not change were left out
    assert stored["cached"] == stored["full"]


def test_the_budget_counts_the_work_of_an_emission_not_the_wall_time_it_waited() -> None:
    """Live on a loaded machine an emission's wall time is mostly waiting (for the GIL,
    held by the sink's writer, or for a core): 2 s of wall time for 1 ms of work must not
    defer the next early rows by 18 s (a 10 % budget)."""
    flow = Flow(cost=2000.0, budget=0.1)
    work = Clock(cost=1.0)
    flow.merge = MergeStage(
        replace(flow.merge.config), flow.stats, clock=flow.clock.costly, work_clock=work.costly
    )
    flow.send(_inference("r1", T0, "a"))
    assert _segments(flow.tick(1000)) == {"a"}
    flow.send(_inference("r2", T0 + 1000, "b"))
    assert _segments(flow.tick(1000)) == {"b"}  # not deferred
    assert flow.stats.early_deferred == 0


def test_early_rows_wait_until_the_sink_has_written_the_last_ones() -> None:
    """Early rows handed to a sink still inserting the previous ones would only block the
    worker on its bound: they wait, and the next emission carries every cell changed
    meanwhile (`sink_slack` 0 here: every row of the last early rows must be written)."""
    flow = Flow(cost=1.0, budget=0.25)
    sink = SinkDemand()
    sink.attach(lambda: None)  # its writer runs in this process: these stats count it
    flow.merge = MergeStage(
        replace(flow.merge.config, sink_slack=0), flow.stats, clock=flow.clock.costly, sink=sink
    )
    flow.send(_inference("r1", T0, "a"))
    flow.clock.now += 1000
    tables = flow.merge.on_notify()[0]  # every row as the sink gets it, to count them
    assert _segments(_rows_1m(tables)) == {"a"}
    handed, now = sink_gets(flow.stats, tables)  # the sink holds them, writes none yet
    assert now == handed  # the minute's early rows (every tick): written at once
    flow.send(_inference("r2", T0 + 1000, "b"))
    assert flow.tick(1000) == []  # the sink still holds the last early rows
    flow.send(_inference("r3", T0 + 2000, "c"))
    sink_writes(flow.stats, handed - 1, now - 1)
    assert flow.tick(1000) == []  # one row still unwritten
    assert flow.stats.early_deferred == 2
    sink_writes(flow.stats, 1, 1)
    assert _segments(flow.tick(1000)) == {"b", "c"}
    # The sink writes none of these: the next early rows wait, at most SINK_WAIT_MAX_MS.
    flow.send(_inference("r4", T0 + 3000, "d"))
    assert flow.tick(1000) == []
    flow.send(_inference("r5", T0 + 4000, "e"))
    assert _segments(flow.tick(SINK_WAIT_MAX_MS)) == {"d", "e"}  # they go anyway

    # A sink whose writer runs in another process (not attached here): never waited on.
    elsewhere = Flow(cost=1.0, budget=0.25)
    elsewhere.merge = MergeStage(
        replace(elsewhere.merge.config, sink_slack=0), elsewhere.stats,
        clock=elsewhere.clock.costly, sink=SinkDemand(),
    )  # fmt: skip
    elsewhere.send(_inference("r1", T0, "a"))
    assert _segments(elsewhere.tick(1000)) == {"a"}
    elsewhere.send(_inference("r2", T0 + 1000, "b"))
    assert _segments(elsewhere.tick(1000)) == {"b"}  # none written, none counted: no wait


def test_sliding_windows_take_turns_and_each_one_carries_every_change_since_its_last() -> None:
    """`early_windows: all`. With `early_interval` 5 s on the 5m_30s spec (ten windows
    open at once, 1 s ticks)
    a tick emits a share of its windows; when a window's turn comes its rows, read as the
    table keeps them (each key's latest row), equal those of a stage that emits every
    window at every tick; final rows are the same bit for bit."""

    from operators.synthetic import TrafficProfile

    profile = TrafficProfile(seed=5, duration_s=120, rate=10, late_rate=0.02, dims=40)
    sem = semantics(partitions=2)
    partition_config, merge_config = configs(sem, bounded=False)
    names = [w.name for w in sem.windows]
    sliding = names.index("5m_30s")
    clock = Clock(cost=0.0)
    stats = FlowStats()
    stages = {p: PartitionStage(partition_config, stats, clock=clock) for p in range(2)}
    intervals = tuple(5_000 if i == sliding else 1_000 for i in range(len(names)))
    merge_config = replace(merge_config, early_latest=())  # every open window emits
    turns = MergeStage(replace(merge_config, early_intervals=intervals), stats, clock=clock)
    every = MergeStage(merge_config, FlowStats(), clock=clock)
    queues = _queued_lines(profile, partitions=2)
    latest: dict[str, dict[tuple[Any, ...], str]] = {"turns": {}, "every": {}}
    counts: list[int] = []
    finals: dict[str, list[str]] = {"turns": [], "every": []}

    def keep(side: str, tables: list[TableRows]) -> set[tuple[str, int]]:
        """Store the rows as the tables keep them; the (window, start) pairs emitted early."""
        windows = set()
        for key, r in _keyed_rows(tables):
            if r["final"]:
                finals[side].append(repr(r))
            else:
                windows.add((r["window"], r["window_start"]))
            latest[side][key] = repr(r)
        return windows

    def window_rows(side: str, window: tuple[str, int]) -> dict[tuple[Any, ...], str]:
        return {k: v for k, v in latest[side].items() if (k[1], k[2]) == window}

    for batches in _rounds(queues, 3):
        for p, batch in batches:
            for item in stages[p].on_item(batch)[0] + stages[p].on_notify()[0]:
                if isinstance(item, PartialBatch):
                    keep("turns", turns.on_item(item)[0])
                    keep("every", every.on_item(item)[0])
        clock.now += 1_000
        took_turn = keep("turns", turns.on_notify()[0])
        keep("every", every.on_notify()[0])
        counts.append(sum(name == "5m_30s" for name, _ in took_turn))
        for window in took_turn:
            assert window_rows("turns", window) == window_rows("every", window)
    for stage in stages.values():
        for item in stage.on_eof()[0]:
            if isinstance(item, PartialBatch):
                keep("turns", turns.on_item(item)[0])
                keep("every", every.on_item(item)[0])
    keep("turns", turns.on_eof()[0])
    keep("every", every.on_eof()[0])
    assert sorted(finals["turns"]) == sorted(finals["every"]) and finals["turns"]
    assert latest["turns"] == latest["every"]  # in the end the tables read the same
    # After the first ticks, a share of the ten at each tick, not all: at most
    # ceil(10 x 1 s / 5 s) = 2 (SpecState.early_share), also when turns were missed.
    later = counts[1:-1]
    assert len(later) > 100 and max(later) <= 2 and sum(later) / len(later) < 2.5


def test_only_the_latest_sliding_window_emits_early_rows_first_all_of_it() -> None:
    """`early_windows: latest` (the default): at a tick the 5m_30s spec's early rows are
    those of its latest window (the one ending soonest of those over the newest event
    time), if it changed; read as the tables keep them they equal those of a stage that
    emits every open window at every tick. A window's first early rows are all of it,
    though the changes before were dropped from the log (no window that emitted needed
    them). The log holds only what the latest window has not taken yet: a tick's
    changes, not all since the newer windows' panes began (the partitions' watermarks
    lag by tens of seconds here). A new latest window's rollups are the previous one's
    less its oldest pane and extras plus the new pane and extras (counted: it happened);
    they must equal a window built from its parts. Final rows are the same bit for bit."""
    import math

    from operators.synthetic import TrafficProfile

    profile = TrafficProfile(seed=5, duration_s=240, rate=10, late_rate=0.02, dims=40)
    sem = semantics(partitions=2)
    partition_config, merge_config = configs(sem, bounded=False)
    clock = Clock(cost=0.0)
    stats = FlowStats()
    stages = {p: PartitionStage(partition_config, stats, clock=clock) for p in range(2)}

    class PassingOn(MergeStage):
        passed_on = 0

        def _passed_on(self, *args: Any) -> Any:
            cached = super()._passed_on(*args)
            self.passed_on += cached is not None
            return cached

    latest = PassingOn(merge_config, stats, clock=clock)
    every = MergeStage(replace(merge_config, early_latest=()), FlowStats(), clock=clock)
    sliding = [s.layout.spec.name for s in latest.specs].index("5m_30s")
    assert latest.config.early_latest[sliding]  # the harness's default, as the settings'
    length, slide = 300_000, 30_000
    queues = _queued_lines(profile, partitions=2)
    rows: dict[str, dict[tuple[Any, ...], str]] = {"latest": {}, "every": {}}
    finals: dict[str, list[str]] = {"latest": [], "every": []}

    def keep(side: str, tables: list[TableRows]) -> set[int]:
        """Store the rows as the tables keep them; the 5m_30s windows emitted early."""
        starts = set()
        for key, r in _keyed_rows(tables):
            if r["final"]:
                finals[side].append(repr(r))
            elif r["window"] == "5m_30s":
                starts.add(r["window_start"])
            rows[side][key] = repr(r)
        return starts

    def window_rows(side: str, start: int) -> dict[tuple[Any, ...], str]:
        return {k: v for k, v in rows[side].items() if k[1:3] == ("5m_30s", start)}

    newest = -math.inf  # the newest slice any partial brought
    emitted: list[int] = []
    logged: list[int] = []
    lag: list[float] = []
    for batches in _rounds(queues, 3):
        for p, batch in batches:
            for item in stages[p].on_item(batch)[0] + stages[p].on_notify()[0]:
                if isinstance(item, PartialBatch):
                    for delta in item.families.values():
                        newest = max(newest, *delta.slice_starts.tolist())
                    keep("latest", latest.on_item(item)[0])
                    keep("every", every.on_item(item)[0])
        clock.now += 1_000
        took = keep("latest", notified(latest, clock.now))
        keep("every", notified(every, clock.now))
        newest_pane = int(newest) - int(newest) % slide
        assert took <= {newest_pane - length + slide}
        for start in took:
            assert window_rows("latest", start) == window_rows("every", start)
        emitted += took
        state = latest.specs[sliding]
        logged.append(sum(len(p.touched) for p in (*state.panes.values(), *state.extras.values())))
        lag.append(newest - latest.watermark)
    for stage in stages.values():
        for item in stage.on_eof()[0]:
            if isinstance(item, PartialBatch):
                keep("latest", latest.on_item(item)[0])
                keep("every", every.on_item(item)[0])
    keep("latest", latest.on_eof()[0])
    keep("every", every.on_eof()[0])
    assert sorted(finals["latest"]) == sorted(finals["every"]) and finals["latest"]
    assert rows["latest"] == rows["every"]  # in the end the tables read the same
    assert len(set(emitted)) >= 5 and len(emitted) > 100  # several windows, each many times
    assert latest.passed_on >= len(set(emitted)) - 1  # every new latest window but the first
    assert max(lag) > 30_000  # a newer window's pane fills while the older stay open
    # After a tick the latest window has taken every change it got, and no other window
    # needs any (a tick without its rows may leave one round's: 2 partitions x 3
    # families); parts only the older or newer windows cover kept theirs for minutes.
    assert max(logged) <= 2 * 3, max(logged)


def test_a_long_windows_early_rows_go_in_shares_each_changed_row_within_its_interval() -> None:
    """With `early_interval` 4 ticks on `1h` and `5m_30s` (its latest window), each tick
    writes a share of their changed rows (operators/early_shares.py), not all of them
    every 4th tick; the `1m` rows, emitted every tick, are marked for the sink to write
    when they arrive (the shares and final rows are not). Read as the tables keep them
    (each key's latest row), every row of `1h` and of the latest `5m_30s` window is at
    most 4 ticks old: it equals what a stage writing every changed row at every tick had
    written at one of the last 4 ticks, and no row that stage had 3 ticks ago is
    missing. Final rows are the same bit for bit, and in the end the tables read the same."""

    from operators.synthetic import TrafficProfile

    profile = TrafficProfile(seed=11, duration_s=200, rate=10, late_rate=0.02, dims=40)
    sem = semantics(partitions=2)
    partition_config, merge_config = configs(sem, bounded=False)
    clock = Clock(cost=0.0)
    stats = FlowStats()
    stages = {p: PartitionStage(partition_config, stats, clock=clock) for p in range(2)}
    shares = 4
    spread = MergeStage(
        replace(merge_config, early_intervals=(1_000, shares * 1_000, shares * 1_000)),
        stats, clock=clock,
    )  # fmt: skip
    every = MergeStage(merge_config, FlowStats(), clock=clock)
    assert spread._shares == {"1m": 1, "1h": shares, "5m_30s": shares}
    queues = _queued_lines(profile, partitions=2)
    views: dict[str, dict[tuple[Any, ...], str]] = {"spread": {}, "every": {}}
    finals: dict[str, list[str]] = {"spread": [], "every": []}
    long_rows: dict[str, list[int]] = {"spread": [], "every": []}

    def keep(side: str, tables: list[TableRows]) -> None:
        every_tick = {"1m"} if side == "spread" else {"1m", "1h", "5m_30s"}
        for t in tables:  # the sink writes the 1m rows when they arrive, not the shares
            windows = {r["window"] for _, r in _keyed_rows([t])}
            assert t.write_now == (t.provisional and windows <= every_tick)
        count = 0
        for key, r in _keyed_rows(tables):
            if r["final"]:
                finals[side].append(repr(r))
            elif r["window"] != "1m":
                count += 1
            views[side][key] = repr(r)
        long_rows[side].append(count)

    def long_early(view: dict[tuple[Any, ...], str]) -> dict[tuple[Any, ...], str]:
        return {k: v for k, v in view.items() if k[1] != "1m" and "'final': 0" in v}

    history: list[dict[tuple[Any, ...], str]] = []  # `every`'s long early rows, per tick
    checked = 0
    for batches in _rounds(queues, 3):
        for p, batch in batches:
            for item in stages[p].on_item(batch)[0] + stages[p].on_notify()[0]:
                if isinstance(item, PartialBatch):
                    keep("spread", spread.on_item(item)[0])
                    keep("every", every.on_item(item)[0])
        clock.now += 1_000
        keep("spread", notified(spread, clock.now))
        keep("every", notified(every, clock.now))
        history = [*history[-(shares - 1) :], long_early(views["every"])]
        if len(history) < shares:
            continue
        latest = spread.specs[2].latest_window()
        for key in history[0]:
            if "'final': 0" not in views["spread"].get(key, "'final': 0"):
                continue  # final since: compared below
            if key[1] == "5m_30s" and key[2] != latest:
                continue  # no longer the latest: its rows that waited come with its final
            assert views["spread"].get(key) in {view.get(key) for view in history}, key
            checked += 1
    for stage in stages.values():
        for item in stage.on_eof()[0]:
            if isinstance(item, PartialBatch):
                keep("spread", spread.on_item(item)[0])
                keep("every", every.on_item(item)[0])
    keep("spread", spread.on_eof()[0])
    keep("every", every.on_eof()[0])
    assert sorted(finals["spread"]) == sorted(finals["every"]) and finals["spread"]
    assert views["spread"] == views["every"]
    assert checked > 10_000
    # The same rows, spread over the ticks: fewer at the busiest tick.
    assert max(long_rows["spread"]) < max(long_rows["every"]) / 2


def _queued_lines(profile: Any, partitions: int) -> dict[tuple[int, str], list[bytes]]:
    """The generator's lines in emission order, queued per (partition, stream)."""
    from collections import defaultdict

    from operators.partitioning import partition_for
    from operators.synthetic import TrafficGenerator

    queues: dict[tuple[int, str], list[bytes]] = defaultdict(list)
    for event in sorted(TrafficGenerator(profile).events(), key=lambda e: e.emit_ms):
        queues[(partition_for(event.key, partitions), event.stream)].append(event.line)
    return queues


def _keyed_rows(tables: list[TableRows]) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Each row (without the version; NaN as None, so equal rows compare equal) with its
    key as the table keeps it: (table, window, dims, start, and the family's key)."""
    import math

    out = Output()
    for t in tables:
        out.tables[t.table].append(t)
    for table in list(out.tables):
        for r in out.column_rows(table):
            r = {k: None if isinstance(v, float) and math.isnan(v) else v
                 for k, v in r.items() if k != "version"}  # fmt: skip
            yield (table, *(r[k] for k in ROW_KEY + TABLE_KEYS[table])), r


def _rounds(
    queues: dict[tuple[int, str], list[bytes]], size: int
) -> Iterator[list[tuple[int, RawBatch]]]:
    """The queued lines of each (partition, stream), `size` at a time, as rounds of one
    batch per queue (a queue's last batch ends its stream), until every queue is empty."""
    offsets: dict[tuple[int, str], int] = dict.fromkeys(queues, 0)
    while any(queues.values()):
        batches = []
        for (p, stream), queue in queues.items():
            chunk, queues[(p, stream)] = queue[:size], queue[size:]
            start = offsets[(p, stream)]
            offsets[(p, stream)] += len(chunk)
            ended = not queues[(p, stream)]
            batches.append((p, RawBatch(p, stream, stream, chunk,
                                        list(range(start, start + len(chunk))),
                                        caught_up=ended, end_of_input=ended)))  # fmt: skip
        yield batches
