#!/usr/bin/env python3
"""CPU per counted event of the partition stage's accumulate (records -> slice deltas).

    python scripts/bench_accumulator.py capture FILE [--events 300000] [--dims 10000]
    python scripts/bench_accumulator.py time FILE [--rounds 3]

`capture` replays the bench's kind of traffic (:mod:`operators.synthetic`, as
scripts/bench.py) through the partition stage (the settings of $PULSE_CONFIG over
config/pulse.yaml, bounded, no snapshots; as ``scripts/bench_columnar.py --stage``),
keeps what every ``_add_counted`` call counted (its :class:`JoinedRecords`' sides) and
pickles them with the partition they came from. The stage of this replay ticks only at
its end; `time` drains every --tick-every counted events of a partition, as a live run
ticks about once a second.

`time` runs the accumulate of the checkout it is run from (or of PULSE_BENCH_CODE=DIR,
another worktree: an A/B pair runs the same FILE on two versions) on those records:
``take()``, :class:`Accumulator` ``.add`` and the ticks' ``drain()``, timed in this
process's CPU time, best of --rounds. It prints µs per counted event and a digest of
every drained delta (canonically ordered), which two versions must share.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(
    0, os.environ.get("PULSE_BENCH_CODE") or str(Path(__file__).resolve().parent.parent)
)

from operators.columnar.accumulator import Accumulator
from operators.columnar.joined import JoinedRecords
from operators.families import registry, widths
from operators.metrics import MainLayout
from operators.slices import FamilyDelta, SliceDeltas

Captured = list[tuple[int, dict[str, list[Any]]]]  # (partition, JoinedRecords' sides)


def capture(events: int, dims: int, batch: int, seed: int) -> tuple[int, Captured]:
    """Every `_add_counted` call's counted events of a replay, in call order."""
    from config.settings import load_settings
    from operators.partition_stage import PartitionStage
    from operators.stats import FlowStats
    from scripts.bench_columnar import feed_stages, stage_config, stage_queues

    settings = load_settings()
    config = stage_config(settings)
    captured: Captured = []

    class Capturing(PartitionStage):
        def _add_counted(self) -> None:
            if self._counted:
                lists = {name: list(getattr(self._counted, name))
                         for name in JoinedRecords.__dataclass_fields__}  # fmt: skip
                captured.append((self.partition, lists))
            super()._add_counted()

    queues = stage_queues(events, dims, seed, config.partitions)
    stats = FlowStats()
    stages = {p: Capturing(config, stats, clock=lambda: 0.0) for p in range(config.partitions)}
    feed_stages(stages, queues, batch)
    return settings.aggregation.confidence_bins, captured


def run(bins: int, captured: Captured, tick_every: int) -> tuple[float, int, str]:
    """CPU seconds of the accumulate and ticks, counted events, digest of the deltas."""
    layout = MainLayout(bins)
    accumulator = Accumulator(registry(layout))
    deltas: dict[int, dict[str, SliceDeltas]] = {}
    since: dict[int, int] = defaultdict(int)
    inputs = []
    for partition, lists in captured:
        records = JoinedRecords(**{name: list(v) for name, v in lists.items()})
        inputs.append((partition, records))
        if partition not in deltas:
            deltas[partition] = {n: SliceDeltas(w) for n, w in widths(layout.width).items()}
    drained: list[tuple[int, str, FamilyDelta]] = []
    n = 0
    start = time.process_time()
    for partition, records in inputs:
        count = sum(map(len, records.inferences)) + sum(map(len, records.feedback))
        n += count
        accumulator.add(records.take(), deltas[partition])
        since[partition] += count
        if since[partition] >= tick_every:
            since[partition] = 0
            for name, family in deltas[partition].items():
                delta = family.drain()
                if delta is not None:
                    drained.append((partition, name, delta))
    for partition, families in deltas.items():
        for name, family in families.items():
            delta = family.drain()
            if delta is not None:
                drained.append((partition, name, delta))
    took = time.process_time() - start
    return took, n, digest(drained)


def digest(drained: list[tuple[int, str, FamilyDelta]]) -> str:
    """The deltas' rows, each delta in (slice, cutoff, cell, extra) order."""
    h = hashlib.sha256()
    for partition, name, d in drained:
        order = np.lexsort((d.extras, d.cell_ids, d.cutoffs, d.slice_starts))
        h.update(f"{partition}:{name}:{len(d)}".encode())
        for column in (d.slice_starts, d.cutoffs, d.cell_ids, d.extras, d.values):
            h.update(np.ascontiguousarray(column[order]).tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("capture", "time"))
    ap.add_argument("file", type=Path)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--dims", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=5_000, help="lines per stream and poll")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tick-every", type=int, default=10_000)
    args = ap.parse_args()
    if args.command == "capture":
        bins, captured = capture(args.events, args.dims, args.batch, args.seed)
        args.file.write_bytes(pickle.dumps((bins, captured), pickle.HIGHEST_PROTOCOL))
        print(f"{len(captured)} accumulate calls captured to {args.file}")
        return
    bins, captured = pickle.loads(args.file.read_bytes())
    results = [run(bins, captured, args.tick_every) for _ in range(args.rounds)]
    took, n, dig = min(results)
    assert all(r[2] == dig for r in results)
    print(f"{took / n * 1e6:.3f} µs per counted event ({n:,} events, {len(captured)} calls; "
          f"code {os.environ.get('PULSE_BENCH_CODE', 'this checkout')}) digest {dig}")  # fmt: skip


if __name__ == "__main__":
    main()
