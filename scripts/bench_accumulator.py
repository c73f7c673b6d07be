#!/usr/bin/env python3
"""Per-event cost of the columnar accumulator next to the partition stage's `_accumulate`
as it was before it (git 6c4f4c4), on the same counted events.

    python scripts/bench_accumulator.py [--events 200000] [--dims 10000] [--batch 50000]

Generates the bench's kind of traffic (operators.synthetic, as scripts/bench.py and
scripts/bench_columnar.py), runs it through that commit's partition stage (one
partition, 1-minute slices) and keeps what each `_accumulate` call counted. Those
records are regrouped into batches of about --batch counted events, and each batch is
timed both ways, alternating A/B --rounds times on fresh deltas:

* today: the old `_accumulate` (lists to arrays, field vectors, slice sums per family);
* columnar: the same rows as :class:`JoinedRecords` -> ``take()`` ->
  :class:`Accumulator` over the Family objects (the code the stage runs now).

Both include the lists-to-arrays step. Late rows are left out of both (the old stage
added them one by one as they came; they are rare). Prints µs per counted event, each
pair and the best of each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operators.batches import RawBatch
from operators.columnar.accumulator import Accumulator
from operators.columnar.joined import NONE, JoinedRecords
from operators.families import registry, widths
from operators.metrics import MainLayout
from operators.slices import NO_CUTOFF, SliceDeltas
from operators.stats import FlowStats
from operators.synthetic import TrafficGenerator, TrafficProfile
from operators.windows import WindowSpec

BEFORE = "6c4f4c4"  # the last commit whose partition stage had its own _accumulate
BINS = 10


def old_stage_module() -> types.ModuleType:
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:operators/partition_stage.py"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    module = types.ModuleType("partition_stage_before")
    sys.modules[module.__name__] = module
    exec(compile(source, f"{BEFORE}:operators/partition_stage.py", "exec"), module.__dict__)
    return module


def counted_records(old: Any, events: int, dims: int, seed: int) -> list[Any]:
    """What the old stage's `_accumulate` calls counted on the generated traffic."""
    rate = 2000.0
    profile = TrafficProfile(seed=seed, duration_s=events / (rate * 1.85), rate=rate, dims=dims)
    generated = list(TrafficGenerator(profile).events())[:events]
    config = old.PartitionConfig(
        partitions=1, specs=(WindowSpec("1m", 60_000, 60_000),), grouping_sets=((),),
        allowed_lateness=60_000, max_out_of_orderness=5_000, idle_timeout=5_000,
        emit_interval=1_000, bounded=True, join_ttl=600_000, join_max_entries=1_000_000,
        join_wait=30_000, dedup_horizon=86_400_000, dedup_max_entries=1_000_000,
        extra_dims=(), confidence_bins=BINS, max_event_bytes=65_536, min_ts=0,
        max_ts=1 << 62, snapshots=False,
    )  # fmt: skip
    captured: list[Any] = []

    class Capturing(old.PartitionStage):
        def _accumulate(self) -> None:
            self._resolve_released()
            captured.append(self._counted)
            super()._accumulate()

    stage = Capturing(config, FlowStats(), clock=lambda: 0.0)
    by_stream: dict[str, list[bytes]] = {"inferences": [], "feedback": []}
    for event in generated:
        by_stream[event.stream].append(event.line)
    step = 5_000
    longest = max(len(lines) for lines in by_stream.values())
    for start in range(0, longest + step, step):
        for stream, lines in by_stream.items():
            chunk = lines[start : start + step]
            ended = start + step >= len(lines)
            offsets = list(range(start, start + len(chunk)))
            stage.on_item(RawBatch(0, stream, stream, chunk, offsets, True, ended))  # type: ignore[arg-type]
    return [c for c in captured if c.inference_cells or c.feedback_cells]


def regrouped(old: Any, captured: list[Any], size: int) -> list[Any]:
    """The counted records concatenated, cut into batches of about `size` events."""
    out, current = [], old._Counted()
    for counted in captured:
        for name in current.__dataclass_fields__:
            getattr(current, name).extend(getattr(counted, name))
        if len(current.inference_cells) + len(current.feedback_cells) >= size:
            out.append(current)
            current = old._Counted()
    if current.inference_cells or current.feedback_cells:
        out.append(current)
    return out


def as_joined(old: Any, counted: Any) -> JoinedRecords:
    """The same rows as the accumulator's input: each keyed record goes back to the
    feedback row it came from (records follow the rows' order; matched by slice and cell)."""
    records = JoinedRecords(
        list(counted.inference_slices), list(counted.inference_cells),
        list(counted.confidences), list(counted.latencies),
        [NO_CUTOFF] * len(counted.inference_cells),
        list(counted.feedback_slices), list(counted.feedback_cells), list(counted.kinds),
        list(counted.numbers), list(counted.correct), list(counted.unjoined),
        [NO_CUTOFF] * len(counted.feedback_cells),
    )  # fmt: skip
    codes = old.KIND_CODES
    keyed: dict[int, tuple[int, int, int, int, int]] = {}
    for records_of, kind, place in (
        (counted.classes, "label", lambda r: (r[2], r[3], NONE, 0, NONE)),
        (counted.preferences, "preference", lambda r: (NONE, NONE, r[2], int(r[3]), NONE)),
        (counted.reports, "report", lambda r: (NONE, NONE, NONE, 0, r[2])),
    ):
        pending = iter(records_of)
        record = next(pending, None)
        for i, code in enumerate(records.kinds):
            if record is None:
                break
            same_row = (records.feedback_slices[i], records.feedback_cells[i]) == record[:2]
            if code == codes[kind] and same_row:
                keyed[i] = place(record)
                record = next(pending, None)
    records.keyed = [(i, *keys) for i, keys in sorted(keyed.items())]
    return records


def same(a: dict[str, SliceDeltas], b: dict[str, SliceDeltas]) -> bool:
    """Both ways summed the same rows (each family's deltas in one canonical order)."""
    for name in a:
        x, y = a[name].drain(), b[name].drain()
        if (x is None) != (y is None):
            return False
        if x is None or y is None:
            continue
        ox = np.lexsort((x.extras, x.cell_ids, x.slice_starts))
        oy = np.lexsort((y.extras, y.cell_ids, y.slice_starts))
        if not (np.array_equal(x.cell_ids[ox], y.cell_ids[oy])
                and np.array_equal(x.extras[ox], y.extras[oy])
                and np.array_equal(x.values[ox], y.values[oy])):  # fmt: skip
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--dims", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    old = old_stage_module()
    batches = regrouped(old, counted_records(old, args.events, args.dims, args.seed), args.batch)
    layout = MainLayout(BINS)
    accumulator = Accumulator(registry(layout))
    n = sum(len(b.inference_cells) + len(b.feedback_cells) for b in batches)

    def fresh() -> dict[str, SliceDeltas]:
        return {name: SliceDeltas(width) for name, width in widths(layout.width).items()}

    results: dict[str, dict[str, SliceDeltas]] = {}

    def today() -> float:
        fake = types.SimpleNamespace(
            _resolve_released=lambda: None, deltas=fresh(), _width=layout.width,
            config=types.SimpleNamespace(confidence_bins=BINS),
        )  # fmt: skip
        start = time.perf_counter()
        for counted in batches:
            fake._counted = counted
            old.PartitionStage._accumulate(fake)
        took = time.perf_counter() - start
        results["today"] = fake.deltas
        return took

    def columnar() -> float:
        deltas = fresh()
        inputs = [as_joined(old, b) for b in batches]
        start = time.perf_counter()
        for records in inputs:
            accumulator.add(records.take(), deltas)
        took = time.perf_counter() - start
        results["columnar"] = deltas
        return took

    print(f"{n:,} counted events in {len(batches)} batches; µs per event: today, columnar")
    pairs = []
    for _ in range(args.rounds):
        pairs.append((today() / n * 1e6, columnar() / n * 1e6))
        print(
            f"  {pairs[-1][0]:6.3f}  {pairs[-1][1]:6.3f}  ratio {pairs[-1][0] / pairs[-1][1]:4.2f}"
        )
    print("same deltas both ways:", same(results["today"], results["columnar"]))
    best_today, best_columnar = min(p[0] for p in pairs), min(p[1] for p in pairs)
    print(f"best {best_today:6.3f}  {best_columnar:6.3f}  ratio {best_today / best_columnar:4.2f}")


if __name__ == "__main__":
    main()
