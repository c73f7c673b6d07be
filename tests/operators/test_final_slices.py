"""Final rows in bounded slices: many windows closing at once (the end of a bounded run, a
watermark jump) come out a window at a time across calls, with the same rows as one big
emission, and a snapshot between two slices resumes with the rest."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import replace
from typing import Any

from connectors.sink_demand import SinkDemand
from operators.batches import RawBatch, TableRows
from operators.merge_stage import MergeConfig, MergeStage
from operators.partition_stage import PartitionStage
from operators.partitioning import partition_for
from operators.slices import PartialBatch
from operators.stats import FlowStats
from operators.synthetic import TrafficGenerator, TrafficProfile
from tests import reference as ref
from tests.harness import Output, configs, semantics, sink_gets, sink_writes, sink_writes_all

T0 = 1_767_225_600_000  # a minute boundary


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _partials(partitions: int) -> tuple[MergeConfig, list[PartialBatch]]:
    """A bounded run's partition stages to the end: every partial the merge stage gets."""
    profile = TrafficProfile(seed=5, duration_s=240, rate=15, late_rate=0.02, dims=40)
    partition_config, merge_config = configs(semantics(partitions=partitions))
    stages = [
        PartitionStage(partition_config, FlowStats(), clock=Clock()) for _ in range(partitions)
    ]
    lines: dict[tuple[int, str], list[bytes]] = defaultdict(list)
    for event in TrafficGenerator(profile).events():
        lines[(partition_for(event.key, partitions), event.stream)].append(event.line)
    items: list[Any] = []
    for (p, stream), chunk in sorted(lines.items()):
        batch = RawBatch(p, stream, stream, chunk, list(range(len(chunk))), caught_up=True,
                         end_of_input=True)  # fmt: skip
        items += stages[p].on_item(batch)[0]
    for stage in stages:
        items += stage.on_eof()[0]
    partials = [item for item in items if isinstance(item, PartialBatch)]
    assert sum(p.ended for p in partials) == partitions
    return replace(merge_config, early_rows=False), partials


def _windows(tables: list[TableRows]) -> list[tuple[str, int]]:
    """(window, start) of the final `metrics` rows, one entry per TableRows slice."""
    out = []
    for t in tables:
        if t.table != "metrics" or not t.columns["final"].any():
            continue
        names = t.columns["window"].categories
        pairs = {(names[c], int(s)) for c, s in zip(t.columns["window"].codes.tolist(),
                                                       t.columns["window_start"].tolist(), strict=True)}  # fmt: skip
        assert len(pairs) == 1, f"a slice holds one window, got {sorted(pairs)[:3]}"
        out.append(pairs.pop())
    return out


def _final_rows(tables: list[TableRows]) -> list[str]:
    out = Output()
    for t in tables:
        out.tables[t.table].append(t)
    return sorted(
        t + repr({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()})
        for t in list(out.tables) for r in out.column_rows(t) if r["final"]
    )  # fmt: skip


def test_windows_closing_at_once_come_a_window_per_call_and_resume_after_a_snapshot() -> None:
    config, partials = _partials(partitions=2)
    whole = MergeStage(replace(config, final_rows_per_call=10**9), FlowStats())
    want: list[TableRows] = []
    for item in partials:
        want += whole.on_item(item)[0]
    want += whole.on_eof()[0]
    final_windows = len(set(_windows(want)))
    assert final_windows > 20

    clock = Clock()
    sliced = MergeStage(replace(config, final_rows_per_call=1), FlowStats(), clock=clock)
    got: list[TableRows] = []
    for item in partials[:-1]:
        got += sliced.on_item(item)[0]
    before_end = len(set(_windows(got)))
    first = sliced.on_item(partials[-1])[0]  # the last partition ends: every window is final
    assert len(set(_windows(first))) == 1  # one window (at least one row) per call
    assert sliced.notify_at().timestamp() * 1000 <= clock.now  # the next call is asked for now
    got += first
    head = list(got)

    # A snapshot between two slices: the resumed stage emits the windows not yet emitted.
    resumed = MergeStage(sliced.config, FlowStats(), resume=sliced.snapshot(), clock=clock)
    clock.now = resumed.notify_at().timestamp() * 1000
    calls = 0
    while resumed.notify_at().timestamp() * 1000 <= clock.now:
        out = resumed.on_notify()[0]
        assert len(set(_windows(out))) == 1
        got += out
        calls += 1
    waiting = final_windows - before_end - 1
    assert calls == waiting
    assert resumed.on_eof()[0] == []
    emitted = _windows(got)
    assert len(emitted) == len(set(emitted)) == final_windows  # each window once
    assert _final_rows(got) == _final_rows(want)

    # on_eof has no call after it: every window that waits comes now, still one per slice.
    rest = sliced.on_eof()[0]
    assert len(_windows(rest)) == len(set(_windows(rest))) == waiting
    assert _final_rows(head + rest) == _final_rows(want)


def test_windows_left_waiting_ask_the_sink_to_write_now() -> None:
    """While final windows wait on the sink (the slice before them unwritten), the stage
    asks it to write at once (connectors/sink_demand.py): the sink's flush interval and
    the stage's wait do not add up. A stage with nothing waiting does not ask."""
    config, partials = _partials(partitions=2)
    asks: list[int] = []
    demand = SinkDemand()
    demand.attach(lambda: asks.append(1))
    whole = MergeStage(replace(config, final_rows_per_call=10**9), FlowStats(), sink=demand)
    for item in partials:
        whole.on_item(item)
    assert asks == []  # every window went out in one call: nothing waits

    stats, clock = FlowStats(), Clock()
    one_at_a_time = replace(config, final_rows_per_call=1, sink_slack=0, final_slices_in_flight=1)
    sliced = MergeStage(one_at_a_time, stats, clock=clock, sink=demand)
    first = [rows for item in partials for rows in sliced.on_item(item)[0]]
    assert len(asks) == 1  # the first window went out, the rest wait for the next calls
    sink_gets(stats, first)  # the sink has not written it
    clock.now += 1
    assert sliced.on_notify()[0] == []
    assert len(asks) == 2  # still waiting: asked again
    sink_writes_all(stats)  # written
    clock.now += 1
    assert len(set(_windows(sliced.on_notify()[0]))) == 1


def test_the_next_slice_waits_for_the_sink_to_get_and_write_the_one_before() -> None:
    """A slice reaches the sink only after the stage's call returns, so a second call of
    the same activation must not read "the sink holds nothing" as "the previous slice is
    written": it waits until the sink got it and wrote it. A sink whose writer runs in
    another process (never attached here) is not waited on."""
    config, partials = _partials(partitions=2)
    config = replace(config, final_rows_per_call=1, sink_slack=0, final_slices_in_flight=1)
    demand = SinkDemand()
    demand.attach(lambda: None)
    stats, clock = FlowStats(), Clock()
    stage = MergeStage(config, stats, clock=clock, sink=demand)
    first = [rows for item in partials for rows in stage.on_item(item)[0]]
    assert len(set(_windows(first))) == 1
    clock.now += 1
    assert stage.on_notify()[0] == []  # handed, not yet seen by the sink: it waits
    sink_gets(stats, first)  # the sink got it
    assert stage.on_notify()[0] == []
    sink_writes_all(stats)  # and wrote it
    assert len(set(_windows(stage.on_notify()[0]))) == 1

    elsewhere = MergeStage(config, FlowStats(), clock=clock, sink=SinkDemand())
    for item in partials:
        elsewhere.on_item(item)
    assert len(set(_windows(elsewhere.on_notify()[0]))) == 1


def test_with_two_slices_in_flight_the_next_is_built_while_the_sink_writes_one() -> None:
    """`final_slices_in_flight` 2 (the default): the next slice goes while the sink still
    holds the last one unwritten, and the one after waits until the sink has written the
    first (all but `sink_slack` rows): two slices unwritten at most, not all of them."""
    config, partials = _partials(partitions=2)
    config = replace(config, final_rows_per_call=1, sink_slack=0)
    assert config.final_slices_in_flight == 2
    demand = SinkDemand()
    demand.attach(lambda: None)
    stats, clock = FlowStats(), Clock()
    stage = MergeStage(config, stats, clock=clock, sink=demand)
    first = [rows for item in partials for rows in stage.on_item(item)[0]]
    clock.now += 1
    second = stage.on_notify()[0]  # the first is unwritten: this one goes all the same
    assert len(set(_windows(first))) == len(set(_windows(second))) == 1
    assert _windows(first) != _windows(second)
    sink_gets(stats, first + second)
    clock.now += 1
    assert stage.on_notify()[0] == []  # two unwritten: the third waits
    sink_writes(stats, sum(map(len, first)) - 1, 0)
    assert stage.on_notify()[0] == []  # the first not written whole yet
    sink_writes(stats, 1, 0)
    assert len(set(_windows(stage.on_notify()[0]))) == 1  # the second may still be unwritten


def _inference(request_id: str, ts: int, segment: str) -> bytes:
    return json.dumps({"type": "inference", "request_id": request_id, "ts": ts, "model_id": "m",
                       "model_version": "v1", "endpoint": "/e", "segment": segment}).encode()  # fmt: skip


def test_a_final_window_that_waits_keeps_the_deltas_its_cached_early_rows_lacked() -> None:
    """Early rows cache a window's rollups and clear the fresh deltas once every window
    took them; a window final but left for the next call must not lose deltas that came
    after its cache."""
    sem = semantics(partitions=1, windows=(ref.Window("1m", 60_000, 60_000),))
    partition_config, merge_config = configs(sem, bounded=False)
    clock, stats = Clock(), FlowStats()
    stage = PartitionStage(partition_config, stats, clock=clock)
    merge = MergeStage(replace(merge_config, final_rows_per_call=1), stats, clock=clock)
    stage.on_item(RawBatch(0, "feedback", "feedback", caught_up=True))
    offset = 0

    def send(*lines: bytes) -> None:
        nonlocal offset
        batch = RawBatch(0, "inferences", "inferences", list(lines),
                         list(range(offset, offset + len(lines))), caught_up=True)  # fmt: skip
        offset += len(lines)
        for item in stage.on_item(batch)[0] + stage.on_notify()[0]:
            if isinstance(item, PartialBatch):
                assert merge.on_item(item)[0] == []

    def tick() -> dict[tuple[int, str, int], float]:
        clock.now += 1000
        out = Output()
        for t in merge.on_notify()[0]:
            out.tables[t.table].append(t)
        return {(r["window_start"], r["segment"], r["final"]): r["inference_count"]
                for r in out.column_rows("metrics") if r["model_version"] == "*"}  # fmt: skip

    send(_inference("r1", T0 + 1_000, "a"), _inference("r2", T0 + 61_000, "a"))
    early = tick()  # early rows of both windows: their rollups are cached
    assert early[(T0, "*", 0)] == 1 and early[(T0 + 60_000, "*", 0)] == 1
    send(_inference("r3", T0 + 30_000, "b"), _inference("r4", T0 + 90_000, "b"))
    send(_inference("r5", T0 + 250_000, "c"))  # the watermark passes both windows' ends
    rows = tick()  # one final window; early rows of the open one clear the fresh deltas
    assert rows[(T0, "*", 1)] == 2 and (T0 + 60_000, "*", 1) not in rows
    assert rows[(T0 + 240_000, "*", 0)] == 1
    rows = tick()
    assert rows[(T0 + 60_000, "*", 1)] == 2  # r2 and r4, though the cache held r2 only
    assert rows[(T0 + 60_000, "b", 1)] == 1
