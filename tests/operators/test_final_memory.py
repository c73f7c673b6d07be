"""Memory of a final emission: a large window's rows are built a grouping set at a time,
so what the build holds besides the rows it returns stays well under the whole cube's
rollups (issue 10: the end of a bounded run closes every open window at once)."""

from __future__ import annotations

import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from operators.batches import RawBatch, TableRows
from operators.merge_stage import MergeStage
from operators.partition_stage import PartitionStage
from operators.slices import PartialBatch
from operators.stats import FlowStats
from operators.synthetic import TrafficGenerator, TrafficProfile
from tests import reference as ref
from tests.harness import configs, semantics


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _bytes(tables: list[TableRows]) -> int:
    """numpy bytes of the rows (the lists of key names are small)."""
    total = 0
    for table in tables:
        columns: list[Any] = list(table.columns.values())
        columns += [getattr(table, "fields", None), getattr(table, "cell_ids", None)]
        for column in columns:
            total += getattr(getattr(column, "codes", column), "nbytes", 0)
    return total


def _final_calls(window: ref.Window, profile: TrafficProfile) -> list[tuple[list[TableRows], int]]:
    """Every final window of one partition's traffic, one window per call: each call's
    rows and the traced peak it reached above what was alive before it."""
    sem = semantics(partitions=1, windows=(window,))
    partition_config, merge_config = configs(sem)
    stage = PartitionStage(partition_config, FlowStats(), clock=Clock())
    lines: dict[str, list[bytes]] = defaultdict(list)
    for event in TrafficGenerator(profile).events():
        lines[event.stream].append(event.line)
    partials: list[Any] = []
    for stream, chunk in sorted(lines.items()):
        batch = RawBatch(0, stream, stream, chunk, list(range(len(chunk))), caught_up=True,
                         end_of_input=True)  # fmt: skip
        partials += stage.on_item(batch)[0]
    partials += stage.on_eof()[0]
    partials = [p for p in partials if isinstance(p, PartialBatch)]
    clock = Clock()
    config = replace(merge_config, early_rows=False, snapshots=False, final_rows_per_call=1)
    merge = MergeStage(config, FlowStats(), clock=clock)
    for item in partials[:-1]:
        assert merge.on_item(item)[0] == []

    def measured(call: Callable[[], list[TableRows]]) -> tuple[list[TableRows], int]:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            out = call()
            return out, tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()

    # The partition ends: every window is final, one window per call.
    calls = [measured(lambda: merge.on_item(partials[-1])[0])]
    while merge.notify_at().timestamp() * 1000 <= clock.now:
        calls.append(measured(lambda: merge.on_notify()[0]))
    return calls


def test_a_large_final_window_is_built_with_little_besides_its_rows() -> None:
    # One 1-minute window of ~1,500 finest cells, latency buckets under each: its cube's
    # rollups (8 grouping sets) are several times its rows.
    profile = TrafficProfile(seed=3, duration_s=60, rate=400, dims=1500, late_rate=0.0)
    calls = _final_calls(ref.Window("1m", 60_000, 60_000), profile)
    out, peak = max(calls, key=lambda call: _bytes(call[0]))  # the largest window
    metrics = [t for t in out if t.table == "metrics"]
    assert len(metrics) == 1 and bool(metrics[0].columns["final"].all())
    assert len(metrics[0]) > 3_000  # finest cells and their rollups
    rows = _bytes(out)
    # Besides the rows returned: the window's finest sums and one grouping set's
    # rollups at a time (measured: 1.3x the rows; the whole cube at once: 3.5x).
    assert peak - rows < 2 * rows, f"built with {peak >> 10} KiB for {rows >> 10} KiB of rows"


def test_a_sliding_window_sums_its_panes_without_holding_them_all_at_once() -> None:
    # A 2-minute window sliding every 10 s is 12 panes of the same ~1,500 cells: their
    # rows concatenated for one sort were several times the window's own sums.
    profile = TrafficProfile(seed=3, duration_s=150, rate=400, dims=1500, late_rate=0.0)
    calls = _final_calls(ref.Window("2m_10s", 120_000, 10_000), profile)
    out, peak = max(calls, key=lambda call: _bytes(call[0]))
    metrics = [t for t in out if t.table == "metrics"]
    assert len(metrics) == 1 and len(metrics[0]) > 3_000
    rows = _bytes(out)
    assert peak - rows < 1.2 * rows, f"built with {peak >> 10} KiB for {rows >> 10} KiB of rows"
