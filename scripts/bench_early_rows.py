#!/usr/bin/env python3
"""Early rows alone: what each emission writes and costs, replayed in one process.

    python scripts/bench_early_rows.py --rate 2000 --seconds 40 [--warm 20] [--digest]

The live freshness bench (:mod:`scripts.bench_freshness`) measures the whole process on
a shared machine; this replays the same traffic (its `_traffic`: the bench's cube, event
time ≈ the tick's time) through the partition stages and the merge stage with the
default settings and a clock moved by hand, one tick of `emit_interval` at a time, and
reports per early emission: rows by table and window spec, and the merge stage's CPU
(thread time). Same input, same rows, run after run: an A/B of the early-row rules
without the noise of the neighbours (the writer's and chDB's cost follows the rows).
The settings are the defaults and `PULSE_*` variables (e.g. `PULSE_TIME_EMIT_INTERVAL`,
`PULSE_WINDOWS` with another `early_interval`). `--warm`: seconds replayed before the
measured ones (the hour window's cache grows with them); `--digest`: a hash of every row
written (all but `version`), to tell that two checkouts write the same rows (give both
the same `--start-ms`).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

# As a flow process (connectors/run_control.py), on any checkout: numpy reads this at
# import. `NUMPY_MADVISE_HUGEPAGE=1 scripts/bench_early_rows.py …` measures with them.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from operators.batches import STREAMS, Categorical, RawBatch, TableRows  # noqa: E402
from operators.partitioning import partition_for  # noqa: E402
from operators.slices import PartialBatch  # noqa: E402
from operators.stats import FlowStats  # noqa: E402

PARTITIONS = 4
WARM_S = 20  # ticks before the measured ones: every open window has cells and a cache


def _configs() -> tuple[Any, Any]:
    """The flow's configs from the settings (defaults, then PULSE_* variables), live."""
    from dataclasses import fields

    from config.settings import load_settings
    from dataflows import feedback
    from dataflows.feedback import window_specs
    from operators.merge_stage import MergeConfig
    from operators.partition_stage import PartitionConfig

    settings = load_settings()
    # Run on an older checkout too (copied there, for A/B pairs): no per-spec intervals.
    per_spec: dict[str, Any] = {}
    if "early_intervals" in {f.name for f in fields(MergeConfig)}:
        per_spec["early_intervals"] = feedback.early_intervals(settings)
    if "early_latest" in {f.name for f in fields(MergeConfig)}:
        per_spec["early_latest"] = feedback.early_latest(settings)
    t, a = settings.time, settings.aggregation
    specs, sets = window_specs(settings), tuple(a.grouping_set_tuples())
    partition = PartitionConfig(
        partitions=PARTITIONS, specs=specs, grouping_sets=sets,
        allowed_lateness=t.allowed_lateness, max_out_of_orderness=t.max_out_of_orderness,
        idle_timeout=t.idle_timeout, emit_interval=t.emit_interval, bounded=False,
        join_ttl=settings.join.ttl, join_max_entries=settings.join.max_entries,
        join_wait=settings.join.wait, dedup_horizon=settings.dedup.horizon,
        dedup_max_entries=settings.dedup.max_entries, extra_dims=tuple(a.extra_dims),
        confidence_bins=a.confidence_bins, max_event_bytes=settings.validation.max_event_bytes,
        min_ts=settings.validation.min_ts, max_ts=settings.validation.max_ts,
        session_shards=0, snapshots=False,
    )  # fmt: skip
    merge = MergeConfig(
        partitions=PARTITIONS, specs=specs, grouping_sets=sets, extra_dims=tuple(a.extra_dims),
        allowed_lateness=t.allowed_lateness, emit_interval=t.emit_interval,
        confidence_bins=a.confidence_bins, early_emit_budget=t.early_emit_budget,
        snapshots=False, **per_spec,
    )  # fmt: skip
    return partition, merge


def main(
    rate: float, seconds: int, seed: int, warm: int = WARM_S, digest: bool = False,
    start: int | None = None,
) -> None:  # fmt: skip
    from operators.merge_stage import MergeStage
    from operators.partition_stage import PartitionStage
    from scripts.bench_freshness import _traffic

    partition_config, merge_config = _configs()
    start_ms = (int(time.time()) // 60 + 1) * 60_000 if start is None else start
    traffic = _traffic(rate, seconds + warm, start_ms, seed)
    now = [float(start_ms)]
    stats = FlowStats()
    stages = {p: PartitionStage(partition_config, stats, clock=lambda: now[0])
              for p in range(PARTITIONS)}  # fmt: skip
    merge = MergeStage(merge_config, stats, clock=lambda: now[0], work_clock=lambda: 0.0)
    offsets: Counter[tuple[int, str]] = Counter()
    i = 0
    interval = merge_config.emit_interval
    rows: dict[tuple[str, str], int] = defaultdict(int)
    cpu = emissions = measured_events = 0.0
    per_tick: list[float] = []
    ticks = int((seconds + warm) * 1000 / interval)
    hashed = hashlib.sha256()
    for tick in range(ticks):
        end = start_ms + (tick + 1) * interval
        lines: dict[tuple[int, str], list[bytes]] = defaultdict(list)
        n = 0
        while i < len(traffic) and traffic[i][0] < end:
            stream, key, line = traffic[i][1]
            lines[(partition_for(key, PARTITIONS), stream)].append(line)
            i += 1
            n += 1
        now[0] = float(end)
        partials: list[PartialBatch] = []
        for p, stage in stages.items():
            for stream in STREAMS:
                chunk = lines.get((p, stream), [])
                first = offsets[(p, stream)]
                offsets[(p, stream)] += len(chunk)
                batch = RawBatch(p, stream, stream, chunk, list(range(first, first + len(chunk))),
                                 caught_up=True)  # fmt: skip
                partials += [x for x in stage.on_item(batch)[0] if isinstance(x, PartialBatch)]
            partials += [x for x in stage.on_notify()[0] if isinstance(x, PartialBatch)]
        for item in partials:
            merge.on_item(item)
        now[0] = float(end + 100)
        measure = tick >= warm * 1000 / interval
        t = time.thread_time()
        out = merge.on_notify()[0]
        # Called again at once while it has more to hand over, as Bytewax does (one
        # spec's early rows per call since operators/early_handoff.py; older checkouts
        # have no such call).
        while getattr(merge, "call_again_now", lambda _now: False)(now[0]):
            out += merge.on_notify()[0]
        took = time.thread_time() - t
        if digest:
            for emitted in out:
                _hash_rows(hashed, emitted)
        if not measure:
            continue
        measured_events += n
        cpu += took
        per_tick.append(took)
        emissions += 1
        for emitted in out:
            final = bool(emitted.columns["final"][0]) if len(emitted) else False
            for name, count in _by_window(emitted).items():
                rows[(f"{emitted.table}{' (final)' if final else ''}", name)] += count
    print(f"{rate:,.0f} events/s, {seconds} s measured after {warm} s, tick {interval} ms; "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"merge on_notify CPU {cpu / emissions * 1000:.1f} ms per tick, "
          f"{cpu / measured_events * 1e6:.1f} µs per event")  # fmt: skip
    p50, p99 = np.percentile(per_tick, [50, 99]) * 1000
    print(
        f"  per tick p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(per_tick) * 1000:.1f} ms "
        "(the slowest ticks hold the next early rows: freshness's tail)"
    )
    total = sum(rows.values())
    print(f"rows per tick {total / emissions:,.0f}, per event {total / measured_events:.2f}")
    for (table_name, window), count in sorted(rows.items()):
        print(f"  {table_name:<28} {window:<8} {count / emissions:>9,.0f} per tick  "
              f"{count / measured_events:6.2f} per event")  # fmt: skip
    if digest:
        print(f"rows digest {hashed.hexdigest()[:16]}")


def _hash_rows(hashed: Any, table: TableRows) -> None:
    """Add a table's rows (every column but `version`) to the hash."""
    hashed.update(table.table.encode())
    for name in sorted(table.columns):
        if name == "version":
            continue
        column = table.columns[name]
        hashed.update(name.encode())
        if isinstance(column, Categorical):
            hashed.update(repr([column.categories[c] for c in column.codes.tolist()]).encode())
        elif hasattr(column, "tobytes"):
            hashed.update(column.tobytes())
        else:
            hashed.update(repr(list(column)).encode())


def _by_window(table: TableRows) -> Counter[str]:
    window = table.columns["window"]
    assert isinstance(window, Categorical)
    return Counter(window.categories[c] for c in window.codes.tolist())


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warm", type=int, default=WARM_S)
    parser.add_argument("--digest", action="store_true")
    parser.add_argument("--start-ms", type=int, help="event time of the first event (ms)")
    args = parser.parse_args()
    main(args.rate, args.seconds, args.seed, args.warm, args.digest, args.start_ms)
