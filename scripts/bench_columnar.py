#!/usr/bin/env python3
"""Per-event cost of each columnar part next to today's row-wise component, same lines.

    python scripts/bench_columnar.py [--events 200000] [--dims 10000] [--batch 50000] [--seed 1]

Generates the bench's kind of lines (operators.synthetic, as scripts/bench.py: mixed
RFC 3339 / epoch `ts`, duplicates, a few invalid lines) in memory, then times, per event
of the part's input and best of --repeat, in CPU time of this process (the machine is
shared: compare the ratios of one run, not runs; the load is printed), with the garbage
collector tuned as a flow run tunes it (``connectors.run_control``):

1. parse: today's BatchDecoder vs the ColumnarParser, in batches of --batch lines; and the
   candidate readers alone on the valid lines (msgspec ``decode_lines``, polars
   ``read_ndjson`` when installed, ``pyarrow.json``), which chose the parser's reader;
2. clock: PartitionClock.observe + is_final per event vs ColumnarClock on the columns;
3. dedup: RecentIds.add per feedback event vs DedupSet.add per batch;
4. join: InferenceCache.add per inference and .get per feedback vs JoinBuffer add/probe.

    python scripts/bench_columnar.py --stage [--events 300000] [--batch 5000] [--repeat 2]

instead replays the lines through the partition stage alone: routed to the configured
partitions by request_id (Kafka's partitioner), each partition's two streams fed to a
`PartitionStage` (config/pulse.yaml's defaults, bounded, no snapshots, no join store) in
batches of --batch lines per stream, read as the bounded local-log source reads them (a
stream read ahead of the other in event time waits), then `on_eof`. It prints this
process's CPU time for all of it per line, best of --repeat (fresh stages each time).
With PULSE_BENCH_CODE=DIR the code comes from another checkout (a `git worktree` of an
earlier commit), so an A/B pair runs this same harness on two versions of the stage.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(
    0, os.environ.get("PULSE_BENCH_CODE") or str(Path(__file__).resolve().parent.parent)
)

from connectors.run_control import tune_garbage_collection
from operators.batches import Stream
from operators.clock import PartitionClock
from operators.columnar.clock import ColumnarClock
from operators.columnar.dedup_set import DedupSet
from operators.columnar.join_buffer import InferenceColumns, JoinBuffer
from operators.columnar.parser import ColumnarParser
from operators.decode import BatchDecoder, decode_fast
from operators.dedup import RecentIds
from operators.events import Feedback, Inference
from operators.join import InferenceCache
from operators.synthetic import TrafficGenerator, TrafficProfile
from operators.windows import is_final

HORIZON, MAX_ENTRIES = 600_000, 1_000_000


def lines_of(events: int, dims: int, seed: int) -> list[bytes]:
    rate = 2000.0
    profile = TrafficProfile(seed=seed, duration_s=events / (rate * 1.85), rate=rate, dims=dims)
    return [event.line for event in TrafficGenerator(profile).events()][:events]


def best(fn: Callable[[], Any], repeat: int) -> float:
    """Fastest of `repeat` runs, CPU seconds."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def row(part: str, n: int, today: float | None, columnar: float | None) -> None:
    def us(t: float | None) -> str:
        return "      —" if t is None else f"{t / n * 1e6:7.3f}"

    ratio = f"{today / columnar:6.1f}×" if today and columnar else "      "
    print(f"{part:<34} {us(today)} {us(columnar)}  {ratio}   ({n:,} events)")


def batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--dims", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stage", action="store_true", help="replay through the partition stage")
    args = ap.parse_args()
    if args.stage:
        stage_replay(args.events or 300_000, args.dims, args.batch, args.seed, args.repeat)
        return
    lines = lines_of(args.events or 200_000, args.dims, args.seed)
    n, repeat = len(lines), args.repeat
    tune_garbage_collection()
    decoder = BatchDecoder(65_536, 946_684_800_000, 4_102_444_800_000)
    parser = ColumnarParser(decoder)
    chunks = batches(lines, args.batch)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{n:,} lines, batches of {args.batch:,}, load {load}; CPU µs per event: today, "
          "columnar, ratio")  # fmt: skip

    def today_parse() -> None:
        for chunk in chunks:
            decoder.decode("t", 0, chunk, list(range(len(chunk))))

    def columnar_parse() -> None:
        for chunk in chunks:
            parser.parse("t", 0, chunk, list(range(len(chunk))))

    row("parse + validate", n, best(today_parse, repeat), best(columnar_parse, repeat))
    parsed = parser.parse("t", 0, lines, list(range(n)))
    clean = [line for line in (lines[i] for i in parsed.offsets.tolist()) if _fast(line)]
    clean_chunks = batches(clean, args.batch)

    def today_clean() -> None:
        for chunk in clean_chunks:
            decoder.decode("t", 0, chunk, list(range(len(chunk))))

    def columnar_clean() -> None:
        for chunk in clean_chunks:
            parser.parse("t", 0, chunk, list(range(len(chunk))))

    row("  the same, lines the Structs take", len(clean), best(today_clean, repeat),
        best(columnar_clean, repeat))  # fmt: skip
    readers(clean, args.batch, repeat)

    ts = parsed.ts
    ends = ts - ts % 60_000 + 60_000

    def today_clock() -> None:
        clock = PartitionClock(5_000, 2_000, 10_000, False, 0.0)
        for t, end in zip(ts.tolist(), ends.tolist(), strict=True):
            clock.observe(t)
            is_final(end, clock.emitted, 0)

    def columnar_clock() -> None:
        clock = ColumnarClock(PartitionClock(5_000, 2_000, 10_000, False, 0.0))
        for a in range(0, len(ts), args.batch):
            marks = clock.observe(ts[a : a + args.batch])
            clock.late(ends[a : a + args.batch], clock.emitted(marks), 0)

    row("clock: watermark + lateness", len(ts), best(today_clock, repeat),
        best(columnar_clock, repeat))  # fmt: skip

    feedback = [e for e in parsed.events if type(e) is Feedback]
    ids = [e.event_id for e in feedback]
    fts = np.array([e.ts for e in feedback], dtype=np.int64)

    def today_dedup() -> None:
        seen = RecentIds(HORIZON, MAX_ENTRIES)
        for key, t in zip(ids, fts.tolist(), strict=True):
            seen.add(key, t)

    def columnar_dedup() -> None:
        seen = DedupSet(HORIZON, MAX_ENTRIES)
        for a in range(0, len(ids), args.batch):
            seen.add(ids[a : a + args.batch], fts[a : a + args.batch])

    row("dedup (feedback)", len(ids), best(today_dedup, repeat), best(columnar_dedup, repeat))

    inferences = [e for e in parsed.events if type(e) is Inference]
    join(inferences, feedback, args.batch, repeat)


def stage_config(settings: Any) -> Any:
    """The flow's partition config from `settings`, bounded and without snapshots."""
    from dataflows.feedback import partition_config_of

    return replace(
        partition_config_of(settings, settings.log.partitions, snapshots=False), bounded=True
    )


def stage_queues(events: int, dims: int, seed: int, partitions: int) -> dict[Any, list[bytes]]:
    """The bench's kind of traffic (:mod:`operators.synthetic`), lines by (partition, stream)."""
    from collections import defaultdict

    from operators.partitioning import partition_for
    from operators.synthetic import TrafficGenerator, TrafficProfile

    rate = 2000.0
    profile = TrafficProfile(seed=seed, duration_s=events / (rate * 1.85), rate=rate, dims=dims)
    queues: dict[Any, list[bytes]] = defaultdict(list)
    for event in list(TrafficGenerator(profile).events())[:events]:
        queues[(partition_for(event.key, partitions), event.stream)].append(event.line)
    return queues


def bounded_reads(
    queues: dict[Any, list[bytes]], partitions: list[int], batch: int
) -> Iterator[tuple[int, Stream, int, list[bytes], bool]]:
    """(partition, stream, first index, lines, ended) in the order the bounded local-log
    source reads (connectors/local_log_source.py): up to `batch` lines per stream and
    poll, a stream read ahead of the other in event time held back (ReadAlignment),
    caught up only at its end; a stream with no lines ends at once. (Feeding both streams
    as caught up from the start let the sparser feedback stream run ahead and made ~8 %
    of the events late, with ~1M metrics_late rows on 300k lines.)"""
    from operators.batches import STREAMS
    from operators.stream_merge import ReadAlignment

    position = dict.fromkeys(queues, 0)
    alignment = {p: ReadAlignment() for p in partitions}
    ended: dict[int, set[str]] = {p: set() for p in partitions}
    caught_up: dict[int, dict[str, bool | None]] = {p: dict.fromkeys(STREAMS) for p in partitions}
    for p in partitions:
        for stream in STREAMS:
            if not queues.get((p, stream)):
                ended[p].add(stream)
                yield p, stream, 0, [], True
    while any(len(ended[p]) < len(STREAMS) for p in partitions):
        for p in partitions:
            for stream in STREAMS:
                if stream in ended[p] or alignment[p].ahead(stream, ended[p], caught_up[p]):
                    continue
                lines, a = queues[(p, stream)], position[(p, stream)]
                chunk = lines[a : a + batch]
                position[(p, stream)] = a + len(chunk)
                end = a + len(chunk) >= len(lines)
                alignment[p].read(stream, chunk)
                caught_up[p][stream] = end
                if end:
                    ended[p].add(stream)
                yield p, stream, a, chunk, end


def feed_stages(stages: dict[int, Any], queues: dict[Any, list[bytes]], batch: int) -> None:
    """Every queued line through the stages (:func:`bounded_reads`), then their ends."""
    from operators.batches import RawBatch

    for p, stream, a, chunk, end in bounded_reads(queues, list(stages), batch):
        offsets = list(range(a, a + len(chunk)))
        stages[p].on_item(RawBatch(p, stream, stream, chunk, offsets, end, end))
    for stage in stages.values():
        stage.on_eof()


def stage_replay(events: int, dims: int, batch: int, seed: int, repeat: int) -> None:
    """The partition stage alone, on the bench's lines (see the module's docstring)."""
    from config.settings import load_settings
    from operators.partition_stage import PartitionStage
    from operators.stats import FlowStats

    settings = load_settings(environ={})
    partitions = settings.log.partitions
    config = stage_config(settings)
    queues = stage_queues(events, dims, seed, partitions)
    n = sum(len(q) for q in queues.values())
    tune_garbage_collection()

    def replay() -> float:
        stats = FlowStats()
        stages = {p: PartitionStage(config, stats, clock=lambda: 0.0) for p in range(partitions)}
        start = time.process_time()
        feed_stages(stages, queues, batch)
        return time.process_time() - start

    took = min(replay() for _ in range(repeat))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{took / n * 1e6:.2f} µs/line  ({n:,} lines, batch {batch:,}, "
          f"code {os.environ.get('PULSE_BENCH_CODE', 'this checkout')}, load {load})")  # fmt: skip


def join(inferences: list[Inference], feedback: list[Feedback], size: int, repeat: int) -> None:
    def number(v: float | None) -> float:
        return math.nan if v is None else float(v)

    requests = [e.request_id for e in inferences]
    contexts = [(e.ts, i % 1000, None if e.prediction is None else str(e.prediction),
                 e.confidence, e.latency_ms) for i, e in enumerate(inferences)]  # fmt: skip
    columns = InferenceColumns(
        np.array([c[0] for c in contexts], dtype=np.int64),
        np.array([c[1] for c in contexts], dtype=np.int64),
        np.array([c[2] for c in contexts], dtype=np.object_),
        np.array([number(c[3]) for c in contexts], dtype=np.float64),
        np.array([number(c[4]) for c in contexts], dtype=np.float64),
    )
    wanted = [e.request_id for e in feedback]
    n = len(requests) + len(wanted)

    def today() -> None:
        cache = InferenceCache(HORIZON, MAX_ENTRIES)
        for request_id, context in zip(requests, contexts, strict=True):
            cache.add(request_id, context)
        for request_id in wanted:
            cache.get(request_id)

    def columnar() -> None:
        buffer = JoinBuffer(HORIZON, MAX_ENTRIES)
        for a in range(0, len(requests), size):
            part = slice(a, a + size)
            buffer.add(requests[part], InferenceColumns(
                columns.ts[part], columns.cells[part], columns.labels[part],
                columns.confidences[part], columns.latencies[part]))  # fmt: skip
        for a in range(0, len(wanted), size):
            buffer.probe(wanted[a : a + size])

    row("join (insert + probe)", n, best(today, repeat), best(columnar, repeat))


def readers(valid: list[bytes], size: int, repeat: int) -> None:
    """The candidate bulk readers alone, on the lines the Structs take as they are (not
    those whose unknown fields go to `attributes`): what chose the parser's reader."""
    import msgspec

    from operators.events import Event

    blobs = [b"\n".join(chunk) for chunk in batches(valid, size)]
    decoder = msgspec.json.Decoder(Event)
    n = len(valid)
    took = best(lambda: [decoder.decode_lines(blob) for blob in blobs], repeat)
    row("  reader: msgspec decode_lines", n, None, took)
    try:
        import polars as pl
    except ImportError:
        print("  reader: polars read_ndjson         (polars not installed)")
    else:
        took = best(lambda: [pl.read_ndjson(io.BytesIO(b), infer_schema_length=None)
                             for b in blobs], repeat)  # fmt: skip
        row("  reader: polars read_ndjson (lossy)", n, None, took)
    import pyarrow.json as pj

    try:
        pj.read_json(io.BytesIO(blobs[0]))
    except Exception as exc:  # a mixed-type column: pyarrow cannot read the batch at all
        print(f"  reader: pyarrow.json                refuses: {str(exc)[:60]}")


def _fast(line: bytes) -> bool:
    """The line is valid as it is (no unknown field to move into `attributes`)."""
    try:
        decode_fast(line)
    except Exception:
        return False
    return True


if __name__ == "__main__":
    main()
