"""The end of a bounded run in bounded slices (issue 10): the real bounded local-log
source, partition stages and merge stage under Bytewax, one and two workers. The sources
hold their end of input until the merge stage has emitted every final window, so the
windows that close at the end reach the sink a slice at a time, never as `on_eof`'s one
list of every window still waiting."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import cluster_main, run_main

from connectors.end_gate import EndGate, SourceEnd
from connectors.local_log import LocalLog
from connectors.local_log_source import LocalLogSource
from connectors.run_control import STOP
from connectors.sink_demand import SinkDemand
from operators.batches import TableRows
from operators.merge_stage import MergeStage
from operators.partition_stage import PartitionStage
from operators.partitioning import partition_for
from operators.slices import PartialBatch
from operators.stats import FlowStats
from operators.synthetic import TrafficGenerator, TrafficProfile
from tests.harness import configs, semantics, sink_gets, sink_writes_all

PARTITIONS = 2


class _Batches(StatelessSinkPartition[Any]):
    def __init__(self, recorder: BatchRecorder) -> None:
        self.recorder = recorder

    def write_batch(self, items: list[Any]) -> None:
        windows = []
        for _key, rows in items:
            if rows.table == "metrics" and rows.columns["final"].any():
                windows += _windows(rows)
        with self.recorder.lock:
            self.recorder.batches.append(windows)
            # Counted in and written at once, as the ClickHouse sink counts its rows.
            sink_gets(self.recorder.stats, [rows for _key, rows in items])
            sink_writes_all(self.recorder.stats)


class BatchRecorder(DynamicSink[Any]):
    """Per batch the sink is given: the (window, start) of each final `metrics` slice;
    its rows counted in `stats` as written, and `demand` attached, as the real sink's."""

    def __init__(self, stats: FlowStats, demand: SinkDemand) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.lock = threading.Lock()
        self.stats, self.demand = stats, demand

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Batches:
        self.demand.attach(lambda: None)
        return _Batches(self)


def _windows(rows: TableRows) -> list[tuple[str, int]]:
    names = rows.columns["window"].categories
    pairs = zip(rows.columns["window"].codes.tolist(), rows.columns["window_start"].tolist(),
                strict=True)  # fmt: skip
    return sorted({(names[code], int(start)) for code, start in pairs})


def _log(root: Path) -> None:
    log = LocalLog(root, PARTITIONS)
    profile = TrafficProfile(seed=5, duration_s=240, rate=15, late_rate=0.02, dims=40)
    lines: dict[tuple[str, int], list[bytes]] = defaultdict(list)
    for event in TrafficGenerator(profile).events():
        lines[(event.stream, partition_for(event.key, PARTITIONS))].append(event.line)
    for (stream, partition), chunk in lines.items():
        log.append(stream, partition, chunk)


def _flow(root: Path, gate: EndGate | None, sink: BatchRecorder) -> Dataflow:
    """The main flow's source and stages (dataflows/feedback.py), metric rows to `sink`
    (a slice waits until the sink has written every row of the one before)."""
    partition_config, merge_config = configs(semantics(partitions=PARTITIONS))
    merge_config = replace(
        merge_config,
        early_rows=False,
        final_rows_per_call=1,
        sink_slack=0,
        final_slices_in_flight=1,
    )
    stats = sink.stats
    source = LocalLogSource(root, read_bytes=1 << 20, poll_interval_ms=10, bounded=True,
                            end_gate=gate)  # fmt: skip
    flow = Dataflow("end_gate")
    raw = op.key_on("by_partition", op.input("events", flow, source), lambda b: str(b.partition))
    staged = op.stateful(
        "partition_stage", raw, lambda r: PartitionStage(partition_config, stats, r)
    )
    partials = op.filter_map(
        "partials", staged, lambda kv: ("merge", kv[1]) if isinstance(kv[1], PartialBatch) else None
    )
    merged = op.stateful(
        "merge_stage",
        partials,
        lambda r: MergeStage(merge_config, stats, r, end=gate, sink=sink.demand),
    )
    op.output("sink", merged, sink)
    return flow


def _run(root: Path, workers: int, gated: bool) -> list[list[tuple[str, int]]]:
    sink = BatchRecorder(FlowStats(), SinkDemand())
    flow = _flow(root, EndGate() if gated else None, sink)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return [batch for batch in sink.batches if batch]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_windows_a_bounded_run_closes_at_its_end_reach_the_sink_a_window_at_a_time(
    tmp_path: Path, workers: int
) -> None:
    _log(tmp_path)
    batches = _run(tmp_path, workers, gated=True)
    emitted = [window for batch in batches for window in batch]
    assert len(emitted) == len(set(emitted)) > 20  # every window once
    # final_rows_per_call = 1: one window per merge stage call, and one call per sink batch:
    # the next waits until the sink has written it (before the gate: the windows still
    # waiting at Bytewax's end came as one list; before the stage waited on the rows it
    # handed, not on what the sink had counted, two calls of one activation could share
    # a batch).
    assert max(len(batch) for batch in batches) == 1, batches
    # The same windows as without the gate.
    assert sorted(emitted) == sorted(w for b in _run(tmp_path, workers, gated=False) for w in b)


def test_a_source_waits_for_the_merge_stage_only_in_its_process() -> None:
    now = [0.0]
    gate = EndGate(grace_s=10.0, clock=lambda: now[0])
    end = SourceEnd(gate)
    assert not end.waiting and not end.over()
    end.input_ended()
    assert end.waiting and not end.over()  # no merge stage here yet: the grace
    now[0] = 10.0
    assert end.over()  # none came: a cluster's other process ends as before

    held = EndGate(grace_s=10.0, clock=lambda: now[0])
    end = SourceEnd(held)
    end.input_ended()
    held.hold()  # the merge stage runs here: wait for it, however long
    now[0] = 1_000.0
    assert not end.over()
    held.release()
    assert end.over()

    end = SourceEnd(EndGate())
    end.input_ended()
    STOP.set()  # a stop ends the input at once
    try:
        assert end.over()
    finally:
        STOP.clear()
    assert SourceEnd(None).over() is False
    ungated = SourceEnd(None)
    ungated.input_ended()
    assert ungated.over()
