#!/usr/bin/env python3
"""Prototype and measurement: the partition stages in a child process (issue 13).

    python scripts/bench_two_process.py [--log DIR] [--config YAML] [--batch 5000]
        [--pairs 3] [--arms inproc,pickle,arrow] [--children 1] [--depth 2] [--check]

The Bytewax worker thread is the flow's critical path and the partition stage most of
it, while the second core idles: the embedded chDB allows one process and threads share
the GIL. But the stage needs chDB only for the join store's lookups and a restart's
rebuild. This measures what the worker would still pay if each `PartitionStage` lived
in a child process (state there) and the worker only shipped raw line batches to it and
took back its outputs. Not product code: a replay, no Bytewax, no sink, no join store.

Every arm replays the same schedule: the log's partitions (the bench log by default),
`--batch` lines per stream per batch, the two streams aligned in event time as the
bounded local-log source aligns them (`ReadAlignment`), the stages on a simulated
clock (`--rate` events per simulated second) that ticks them (`on_notify`) whenever
their next tick is due, so every arm produces the same outputs (`--check` compares
digests of every output). Arms, each in a fresh process, alternating per pair:

* ``inproc``: the stages in this process (today's shape). Timed: the stage calls, and
  apart from them the conversion of the raw tables' rows to Arrow that the sink's
  writer thread does today (``connectors.clickhouse.to_arrow``, per output) — it holds
  the GIL too.
* ``pickle``: the stages in ``--children`` child processes ('spawn', not fork: chDB's
  threads). The parent sends each batch as one bytes blob of its lines (what the
  source's read gives) and takes back the outputs pickled as they are (TableRows of
  column lists, PartialBatch, SessionBatch, FlowStats); it still converts the rows to
  Arrow for the sink (timed apart).
* ``arrow``: as ``pickle`` but the child converts each TableRows to an Arrow table (the
  sink's own conversion, with the raw tables' real schemas) and sends it as Arrow IPC;
  the parent opens the IPC stream (zero-copy) into a ``pa.Table``, what the sink's
  insert takes.

Pipelined: the parent sends batch N+`--depth`-1 before it takes batch N's outputs.
Neither side may block the other on a full channel: with ``--io socket`` (the default)
each child has a Unix socket pair whose kernel buffers (4 MiB) hold the batches in
flight; with ``--io thread`` a pipe, and a thread in the child drains it (a second
thread that takes the GIL for every 64 KiB the pipe holds; kept for comparison: the
child waited no longer for input with it).

Printed per arm: the parent's CPU per event (its main thread, which would be the
worker: ship, receive, deserialize; plus the Arrow conversion where the parent still
does it), the process's, the child's CPU per event (stage, decode of messages, encode of
outputs) and its wall time waiting for input, the replay's wall time, RSS of parent and
child (before the replay → peak).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import pickle
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BENCH_LOG = "/tmp/pulse-bench-zqknuwrs/log"
SOCKET_BUFFER = 4 << 20  # net.core.wmem_max here; the kernel doubles it
RAW_TABLES = ("inferences", "events", "metrics_late", "dead_letters")
Schemas = dict[str, list[tuple[str, str]]]


# ---- the replay's input: the log's lines, and one schedule of batches for every arm ----


@dataclass(slots=True)
class Step:
    """One batch of one stream of one partition, as the source would hand it over."""

    partition: int
    stream: str
    blob: bytes  # the lines joined by newlines (what one read of the log gives)
    first_offset: int  # byte position of the first line
    lines: int
    caught_up: bool
    end: bool


def read_log(root: Path) -> dict[tuple[int, str], tuple[list[bytes], list[int]]]:
    """Every line of every partition of both streams, with its byte position."""
    from connectors.local_log import LocalLog
    from operators.batches import STREAMS

    log = LocalLog(root)
    out: dict[tuple[int, str], tuple[list[bytes], list[int]]] = {}
    for p in range(log.partitions):
        for stream in STREAMS:
            reader = log.reader(stream, p)
            limit = log.end_position(stream, p)
            lines: list[bytes] = []
            offsets: list[int] = []
            while True:
                result = reader.read(64 << 20, limit)
                lines += result.lines
                offsets += result.offsets
                if result.position >= limit or not result.lines:
                    break
            reader.close()
            out[(p, stream)] = (lines, offsets)
    return out


def schedule(
    queues: dict[tuple[int, str], tuple[list[bytes], list[int]]], partitions: int, batch: int
) -> list[Step]:
    """Batches in the order the bounded local-log source reads them
    (:func:`scripts.bench_columnar.bounded_reads`, as ``--stage`` there replays)."""
    from scripts.bench_columnar import bounded_reads

    lines_of_queue = {key: lines for key, (lines, _) in queues.items()}
    steps: list[Step] = []
    for p, stream, a, chunk, end in bounded_reads(lines_of_queue, list(range(partitions)), batch):
        first = queues[(p, stream)][1][a] if chunk else 0
        steps.append(Step(p, stream, b"\n".join(chunk), first, len(chunk), end, end))
    return steps


def lines_of(step: Step) -> tuple[list[bytes], list[int]]:
    """A step's lines and their positions, split from its blob (the child's side)."""
    if not step.lines:
        return [], []
    lines = step.blob.split(b"\n")
    offsets = []
    at = step.first_offset
    for line in lines:
        offsets.append(at)
        at += len(line) + 1
    return lines, offsets


# ---- the stage, its clock and ticks: the same in every arm ------------------------------


def partition_config(config_file: str | None, partitions: int) -> Any:
    from config.settings import load_settings
    from dataflows.feedback import partition_config_of

    settings = load_settings(config_file, environ={})
    return replace(partition_config_of(settings, partitions, snapshots=False), bounded=True)


class Stages:
    """The partition stages one process holds, on a clock the parent sets with each
    batch (simulated processing time: every arm ticks at the same events)."""

    def __init__(self, config: Any) -> None:
        from operators.stats import FlowStats

        self.config = config
        self.stats = FlowStats()
        self.now = 0.0
        self.stages: dict[int, Any] = {}

    def _stage(self, p: int) -> Any:
        from operators.partition_stage import PartitionStage

        stage = self.stages.get(p)
        if stage is None:
            stage = self.stages[p] = PartitionStage(self.config, self.stats, clock=self._clock)
        return stage

    def _clock(self) -> float:
        return self.now

    def item(self, step: Step, now: float) -> list[Any]:
        """A batch into its stage; its tick too when due (as Bytewax's notify_at would)."""
        from operators.batches import RawBatch

        self.now = now
        lines, offsets = lines_of(step)
        stage = self._stage(step.partition)
        batch = RawBatch(step.partition, step.stream, step.stream,  # type: ignore[arg-type]
                         lines, offsets, step.caught_up, step.end)  # fmt: skip
        out, _ = stage.on_item(batch)
        if not stage.ended and now >= stage.next_tick:
            more, _ = stage.on_notify()
            out += more
        return list(out)

    def eof(self) -> list[Any]:
        out: list[Any] = []
        for p in sorted(self.stages):
            more, _ = self.stages[p].on_eof()
            out += more
        return out


def sim_now(events_before: int, rate: float) -> float:
    return events_before / rate * 1000.0


# ---- the raw tables' schemas (from a throwaway embedded store, in its own process) ------


def raw_schemas() -> Schemas:
    """(column, type) of each raw table, as the sink converts them (its `describe`)."""
    from connectors.clickhouse import migrations

    version = hashlib.sha256(repr(migrations()).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"pulse_two_process_schemas_{version}.json"
    if cache.is_file():
        loaded = json.loads(cache.read_text())
        return {
            table: [(name, kind) for name, kind in columns] for table, columns in loaded.items()
        }
    code = (
        "import json, sys, tempfile\n"
        "from connectors.clickhouse import Target, connect, migrate, describe\n"
        "d = tempfile.mkdtemp(prefix='pulse-schemas-')\n"
        "t = Target('chdb://' + d, 'pulse')\n"
        "c = connect(t); migrate(c, 'pulse')\n"
        f"print(json.dumps({{n: describe(c, 'pulse', n) for n in {RAW_TABLES!r}}}))\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )  # fmt: skip
    cache.write_text(done.stdout.strip().splitlines()[-1])
    return raw_schemas()


# ---- messages -------------------------------------------------------------------------


def encode_outputs(outputs: list[Any], stats: Any, schemas: Schemas | None) -> bytes:
    """The child's reply: outputs pickled as they are, or (schemas given) TableRows as
    Arrow IPC streams, the rest pickled."""
    if schemas is None:
        return pickle.dumps((outputs, stats), protocol=5)
    import pyarrow as pa

    from connectors.clickhouse import to_arrow
    from operators.batches import TableRows

    items: list[Any] = []
    for o in outputs:
        if isinstance(o, TableRows):
            table = to_arrow(o.columns, schemas[o.table])
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            items.append((o.table, sink.getvalue().to_pybytes()))
        else:
            items.append(o)
    return pickle.dumps((items, stats), protocol=5)


def decode_outputs(data: bytes, arrow: bool) -> tuple[list[Any], Any]:
    """The parent's side: TableRows, or (arrow) (table, pa.Table) over the received
    bytes, and the other outputs as objects."""
    items, stats = pickle.loads(data)
    if not arrow:
        return items, stats
    import pyarrow as pa

    out = [
        (o[0], pa.ipc.open_stream(pa.py_buffer(o[1])).read_all()) if type(o) is tuple else o
        for o in items
    ]
    return out, stats


def socket_pair() -> tuple[Connection, Connection]:
    """A duplex channel whose kernel buffers hold a few batches (no reader thread)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for end in (a, b):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    return Connection(a.detach()), Connection(b.detach())


def rss_peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> float:
    """Start the peak (VmHWM) over from now, so it is the replay's, not the loading's
    (Linux: 5 into clear_refs); the RSS now."""
    Path("/proc/self/clear_refs").write_text("5")
    return rss_now_mib()


def rss_now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- the child ------------------------------------------------------------------------


def child_main(
    inbox: Connection, outbox: Connection, config: Any, schemas: Schemas | None, threaded: bool
) -> None:
    """Hold stages; per message: a batch in, its outputs back (in order)."""
    from connectors.run_control import tune_garbage_collection

    if schemas is not None:
        import connectors.clickhouse  # noqa: F401  (import before the clock starts)
    stages = Stages(config)
    received: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def drain() -> None:  # keeps the parent's sends from blocking on a full pipe
        while True:
            try:
                received.put(inbox.recv_bytes())
            except EOFError:
                received.put(None)
                return

    def direct() -> bytes | None:
        try:
            return inbox.recv_bytes()
        except EOFError:
            return None

    if threaded:
        threading.Thread(target=drain, daemon=True).start()
    take = received.get if threaded else direct
    tune_garbage_collection()
    idle_rss = rss_now_mib()
    t_decode = t_stage = t_encode = t_wait = 0.0
    cpu0: float | None = None
    while True:
        w = time.perf_counter()
        data = take()
        if cpu0 is not None:
            t_wait += time.perf_counter() - w
        if data is None:
            return
        if data == b"ping":  # up and imported: the parent's clock starts after this
            import operators.partition_stage  # noqa: F401

            outbox.send_bytes(b"pong")
            continue
        if cpu0 is None:
            cpu0, wall0 = time.process_time(), time.perf_counter()
        a = time.thread_time()
        message = pickle.loads(data)
        b = time.thread_time()
        outputs = stages.item(message[2], message[1]) if message[0] == "item" else stages.eof()
        c = time.thread_time()
        reply = encode_outputs(outputs, stages.stats, schemas)
        d = time.thread_time()
        t_decode, t_stage, t_encode = t_decode + b - a, t_stage + c - b, t_encode + d - c
        if message[0] == "eof":
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            report = {"cpu": cpu, "decode": t_decode, "stage": t_stage, "encode": t_encode,
                      "wait": t_wait, "wall": wall, "idle_rss": idle_rss,
                      "peak_rss": rss_peak_mib()}  # fmt: skip
            outbox.send_bytes(reply)
            outbox.send_bytes(json.dumps(report).encode())
            return
        outbox.send_bytes(reply)


# ---- the arms -------------------------------------------------------------------------


@dataclass
class Result:
    arm: str
    events: int
    wall: float
    main_cpu: float  # the parent's main thread (the worker's share)
    process_cpu: float  # the parent process, every thread
    parts: dict[str, float]  # the main thread's parts
    child: list[dict[str, float]]
    peak_rss: float
    base_rss: float  # before the replay: the interpreter, its imports and the replay's input
    digest: str


def digest_of(outputs: list[Any], schemas: Schemas, h: Any) -> None:
    """Outputs in a form both transports share: tables as Arrow IPC, the rest pickled."""
    import pyarrow as pa

    from connectors.clickhouse import to_arrow
    from operators.batches import TableRows

    for o in outputs:
        if isinstance(o, TableRows):
            o = (o.table, to_arrow(o.columns, schemas[o.table]))
        if type(o) is tuple and isinstance(o[1], pa.Table):
            h.update(o[0].encode())
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, o[1].schema) as writer:
                writer.write_table(o[1])
            h.update(sink.getvalue().to_pybytes())
        else:
            h.update(pickle.dumps(o, protocol=5))


def to_sink_form(outputs: list[Any], schemas: Schemas) -> None:
    """What the sink's writer does to each TableRows before its insert (timed apart)."""
    from connectors.clickhouse import to_arrow
    from operators.batches import TableRows

    for o in outputs:
        if isinstance(o, TableRows):
            to_arrow(o.columns, schemas[o.table])


def run_inproc(
    steps: list[Step], config: Any, schemas: Schemas, rate: float, check: bool
) -> Result:
    import pyarrow  # noqa: F401  (the sink imports it at start-up)

    from connectors.run_control import tune_garbage_collection

    stages = Stages(config)
    tune_garbage_collection()
    h = hashlib.sha256()
    t_stage = t_arrow = 0.0
    base_rss = reset_peak_rss()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    events = 0
    for step in steps:
        a = time.thread_time()
        outputs = stages.item(step, sim_now(events, rate))
        b = time.thread_time()
        to_sink_form(outputs, schemas)
        t_stage, t_arrow = t_stage + b - a, t_arrow + time.thread_time() - b
        events += step.lines
        if check:
            digest_of(outputs, schemas, h)
    a = time.thread_time()
    outputs = stages.eof()
    b = time.thread_time()
    to_sink_form(outputs, schemas)
    t_stage, t_arrow = t_stage + b - a, t_arrow + time.thread_time() - b
    if check:
        digest_of(outputs, schemas, h)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    parts = {"stage": t_stage, "to_arrow": t_arrow}
    digest = h.hexdigest() if check else ""
    return Result("inproc", events, wall, t_stage + t_arrow, cpu, parts, [], rss_peak_mib(),
                  base_rss, digest)  # fmt: skip


def run_children(
    steps: list[Step], config: Any, schemas: Schemas, rate: float, check: bool,
    arrow: bool, children: int, depth: int, io: str,
) -> Result:  # fmt: skip
    import pyarrow  # noqa: F401

    from connectors.run_control import tune_garbage_collection

    ctx = mp.get_context("spawn")
    pipes = []
    procs = []
    for _ in range(children):
        if io == "thread":
            to_child_r, to_child_w = ctx.Pipe(duplex=False)
            from_child_r, from_child_w = ctx.Pipe(duplex=False)
        else:
            to_child_w, to_child_r = socket_pair()
            from_child_r = to_child_w
            from_child_w = to_child_r
        proc = ctx.Process(
            target=child_main,
            args=(to_child_r, from_child_w, config, schemas if arrow else None, io == "thread"),
            daemon=True,
        )
        proc.start()
        to_child_r.close()
        if io == "thread":
            from_child_w.close()
        pipes.append((to_child_w, from_child_r))
        procs.append(proc)
    tune_garbage_collection()
    # The children are up and have imported before the clock starts (a flow starts them
    # with itself): one empty round trip each.
    for w, _ in pipes:
        w.send_bytes(b"ping")
    for _, r in pipes:
        r.recv_bytes()
    h = hashlib.sha256()
    t_send = t_recv = t_arrow = 0.0
    base_rss = reset_peak_rss()
    pending: list[int] = []  # child of each batch sent and not yet taken, in order
    wall0, cpu0 = time.perf_counter(), time.process_time()
    events = 0

    def take() -> None:
        nonlocal t_recv, t_arrow
        c = pending.pop(0)
        a = time.thread_time()
        outputs, _stats = decode_outputs(pipes[c][1].recv_bytes(), arrow)
        b = time.thread_time()
        if not arrow:
            to_sink_form(outputs, schemas)
        t_recv, t_arrow = t_recv + b - a, t_arrow + time.thread_time() - b
        if check:
            digest_of(outputs, schemas, h)

    for step in steps:
        c = step.partition % children
        a = time.thread_time()
        pipes[c][0].send_bytes(pickle.dumps(("item", sim_now(events, rate), step), protocol=5))
        t_send += time.thread_time() - a
        events += step.lines
        pending.append(c)
        if len(pending) >= depth:
            take()
    while pending:
        take()
    reports = []
    for w, _ in pipes:  # each child's on_eof, in partition order across children
        w.send_bytes(pickle.dumps(("eof",)))
    eof_outputs = []
    for _, r in pipes:
        a = time.thread_time()
        outputs, _stats = decode_outputs(r.recv_bytes(), arrow)
        b = time.thread_time()
        if not arrow:
            to_sink_form(outputs, schemas)
        t_recv, t_arrow = t_recv + b - a, t_arrow + time.thread_time() - b
        eof_outputs += outputs
        reports.append(json.loads(r.recv_bytes()))
    if check:
        digest_of(eof_outputs, schemas, h)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    for w, _ in pipes:
        w.close()
    for proc in procs:
        proc.join(timeout=10)
    parts = {"send": t_send, "recv+decode": t_recv, "to_arrow": t_arrow}
    digest = h.hexdigest() if check else ""
    main_cpu = t_send + t_recv + t_arrow
    return Result("arrow" if arrow else "pickle", events, wall, main_cpu, cpu, parts, reports,
                  rss_peak_mib(), base_rss, digest)  # fmt: skip


def arm_main(args: argparse.Namespace) -> None:
    """One arm in this process; prints its Result as one JSON line."""
    queues = read_log(Path(args.log))
    partitions = 1 + max(p for p, _ in queues)
    steps = schedule(queues, partitions, args.batch)
    del queues
    config = partition_config(args.config, partitions)
    schemas = raw_schemas()
    if args.arm == "inproc":
        result = run_inproc(steps, config, schemas, args.rate, args.check)
    else:
        result = run_children(steps, config, schemas, args.rate, args.check,
                              args.arm == "arrow", args.children, args.depth, args.io)  # fmt: skip
    print(json.dumps(result.__dict__))


# ---- the driver: arms alternating, each in a fresh process ------------------------------


def us(seconds: float, n: int) -> str:
    return f"{seconds / n * 1e6:6.2f}"


def show(r: Result) -> str:
    n = r.events
    parts = " ".join(f"{k} {us(v, n).strip()}" for k, v in r.parts.items())
    line = (f"{r.arm:<7} main {us(r.main_cpu, n)} µs/ev ({parts}) | process {us(r.process_cpu, n)}"
            f" | wall {r.wall:5.1f} s | rss {r.base_rss:.0f}→{r.peak_rss:.0f} MiB")  # fmt: skip
    for c in r.child:
        line += (f" | child {us(c['cpu'], n)} (stage {us(c['stage'], n).strip()},"
                 f" in {us(c['decode'], n).strip()}, out {us(c['encode'], n).strip()};"
                 f" waited {c['wait']:.1f} of {c['wall']:.1f} s)"
                 f" rss {c['idle_rss']:.0f}→{c['peak_rss']:.0f} MiB")  # fmt: skip
    return line + (f" | {r.digest[:12]}" if r.digest else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", default=BENCH_LOG, help="a local log's directory (read only)")
    ap.add_argument("--config", default=None, help="a config file (e.g. one-minute.yaml)")
    ap.add_argument("--batch", type=int, default=5000, help="lines per stream per batch")
    ap.add_argument("--rate", type=float, default=40_000.0,
                    help="events per simulated second (when ticks fall)")  # fmt: skip
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--arms", default="inproc,pickle,arrow")
    ap.add_argument("--children", type=int, default=1)
    ap.add_argument("--depth", type=int, default=2, help="batches in flight per parent")
    ap.add_argument("--io", default="socket", choices=("socket", "thread"))
    ap.add_argument("--check", action="store_true", help="digest every output (slower)")
    ap.add_argument("--arm", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        arm_main(args)
        return
    raw_schemas()
    here = Path(__file__).resolve()
    forward = [f"--log={args.log}", f"--batch={args.batch}", f"--rate={args.rate}",
               f"--children={args.children}", f"--depth={args.depth}",
               f"--io={args.io}"]  # fmt: skip
    if args.config:
        forward.append(f"--config={args.config}")
    if args.check:
        forward.append("--check")
    print(f"log {args.log}, config {args.config or 'defaults'}, batch {args.batch}, children "
          f"{args.children}, depth {args.depth}, io {args.io}; µs per event, CPU")  # fmt: skip
    for pair in range(args.pairs):
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"-- round {pair + 1} (load {load})")
        for arm in args.arms.split(","):
            done = subprocess.run(
                [sys.executable, str(here), f"--arm={arm}", *forward],
                capture_output=True, text=True, env=os.environ,
            )  # fmt: skip
            if done.returncode:
                print(f"{arm}: failed\n{done.stderr[-3000:]}")
                continue
            r = Result(**json.loads(done.stdout.strip().splitlines()[-1]))
            print(show(r), flush=True)


if __name__ == "__main__":
    main()
