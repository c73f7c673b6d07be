#!/usr/bin/env python3
"""Prototype and measurement: the merge stage in a process of its own (issue 13).

    python scripts/bench_merge_process.py --log DIR [--config YAML] [--batch 5000]
        [--rate 100000] [--pairs 2] [--check]

In the default config the merge and session stages hold the worker thread for ~4.4 s of
a ~14 s bounded run (docs/performance.md), while the worker is the run's critical path.
This measures what the worker would still pay if the merge stage lived in a child
process ('spawn') and the worker only shipped it the partition stages' partials and took
back its rows: the messages' pickling both ways, not the stage. Not product code: no
Bytewax, no sink (the stage never waits on one), no recovery, no end gate.

The partition stages run first, once, over the log (``scripts/bench_two_process.py``'s
replay: its schedule of batches and simulated clock, `--rate` events per simulated
second); their partials, with the simulated time each was made at, are the input of
every arm. A driver hands them to a merge stage in that order and calls its `on_notify`
whenever its `notify_at` is due on the same clock, then `on_eof`: the same calls in
every arm, so the rows are the same (`--check` compares digests). Arms, alternating per
pair, each in a fresh process:

* ``inproc``: the driver and the stage in this process: the CPU the worker spends today.
* ``child``: the driver and the stage in a child; this process pickles each partial
  (protocol 5) to it, and a thread here unpickles the rows it sends back (pipelined: no
  send waits for a reply). This process's CPU is what the worker would pay.

Printed per arm: this process's CPU (every thread), the child's, wall time, and peak RSS
of each.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import pickle
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Call = tuple[float, Any]  # (simulated ms, a PartialBatch)


def merge_config(config_file: str | None, partitions: int) -> Any:
    """The flow's merge config for a bounded run without recovery (dataflows/feedback.py)."""
    from config.settings import load_settings
    from dataflows.feedback import merge_config_of

    settings = load_settings(config_file, environ={})
    return replace(merge_config_of(settings, partitions, snapshots=False), early_rows=False)


def partials_of(log: Path, config_file: str | None, batch: int, rate: float) -> list[Call]:
    """The partition stages' partials over the whole log, each with its simulated time."""
    from operators.slices import PartialBatch
    from scripts.bench_two_process import Stages, partition_config, read_log, schedule, sim_now

    queues = read_log(log)
    partitions = 1 + max(p for p, _ in queues)
    stages = Stages(partition_config(config_file, partitions))
    calls: list[Call] = []
    events = 0
    for step in schedule(queues, partitions, batch):
        now = sim_now(events, rate)
        calls += [(now, o) for o in stages.item(step, now) if isinstance(o, PartialBatch)]
        events += step.lines
    calls += [(sim_now(events, rate), o) for o in stages.eof() if isinstance(o, PartialBatch)]
    return calls


class Driver:
    """A merge stage on the simulated clock: each partial in, `on_notify` whenever due."""

    def __init__(self, config: Any) -> None:
        from operators.merge_stage import MergeStage
        from operators.stats import FlowStats

        self.now = 0.0
        self.stage = MergeStage(config, FlowStats(), clock=lambda: self.now)

    def item(self, now: float, partial: Any) -> list[Any]:
        self.now = now
        out = self._due()
        more, _ = self.stage.on_item(partial)
        return out + list(more) + self._due()

    def _due(self) -> list[Any]:
        out: list[Any] = []
        while self.stage.notify_at().timestamp() * 1000.0 <= self.now:
            more, _ = self.stage.on_notify()
            out += more
            if not more and self.stage.notify_at().timestamp() * 1000.0 <= self.now:
                break  # due again at once with nothing out: the next call's turn
        return out

    def eof(self) -> list[Any]:
        out, _ = self.stage.on_eof()
        return list(out)


def digest_of(outputs: list[Any], h: Any) -> None:
    """Every output's table and columns, in order (numpy by bytes, the rest by repr)."""
    import numpy as np

    for o in outputs:
        h.update(o.table.encode())
        for name, values in o.columns.items():
            h.update(name.encode())
            if isinstance(values, np.ndarray):
                h.update(np.ascontiguousarray(values).tobytes())
            else:
                h.update(repr(values).encode())


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(inbox: Connection, outbox: Connection, config: Any) -> None:
    """Run the driver on the partials received; send each call's rows back."""
    driver = Driver(config)
    cpu = time.process_time()
    while True:
        data = inbox.recv_bytes()
        message = pickle.loads(data)
        if message is None:
            out = driver.eof()
            outbox.send_bytes(pickle.dumps(out, protocol=5))
            break
        now, partial = message
        outbox.send_bytes(pickle.dumps(driver.item(now, partial), protocol=5))
    outbox.send_bytes(pickle.dumps((time.process_time() - cpu, rss_peak_mib()), protocol=5))


@dataclass
class Result:
    arm: str
    cpu: float  # this process, every thread
    child_cpu: float
    wall: float
    rss: float
    child_rss: float
    rows: int
    digest: str


def run_inproc(calls: list[Call], config: Any) -> Result:
    h = hashlib.sha256()
    rows = 0
    start, cpu = time.perf_counter(), time.process_time()
    driver = Driver(config)
    outputs: list[Any] = []
    for now, partial in calls:
        outputs += driver.item(now, partial)
    outputs += driver.eof()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    rows = sum(len(o) for o in outputs)
    digest_of(outputs, h)
    return Result("inproc", cpu, 0.0, wall, rss_peak_mib(), 0.0, rows, h.hexdigest()[:16])


def run_child(calls: list[Call], config: Any) -> Result:
    ctx = mp.get_context("spawn")
    to_child_r, to_child_w = ctx.Pipe(duplex=False)
    from_child_r, from_child_w = ctx.Pipe(duplex=False)
    child = ctx.Process(target=child_main, args=(to_child_r, from_child_w, config))
    child.start()
    from_child_w.close()
    to_child_r.close()
    received: list[Any] = []
    tail: list[Any] = []
    # The child's start (spawn, imports) is not the stage's: wait until it is up.
    to_child_w.send_bytes(pickle.dumps((calls[0][0], calls[0][1]), protocol=5))
    first = pickle.loads(from_child_r.recv_bytes())
    start, cpu = time.perf_counter(), time.process_time()
    taker_calls = calls[1:]
    received.extend(first)

    def take_rest() -> None:  # the worker's side of the replies: unpickle the rows
        for _ in range(len(taker_calls) + 1):
            received.extend(pickle.loads(from_child_r.recv_bytes()))
        tail.append(pickle.loads(from_child_r.recv_bytes()))

    taker = threading.Thread(target=take_rest)
    taker.start()
    for now, partial in taker_calls:
        to_child_w.send_bytes(pickle.dumps((now, partial), protocol=5))
    to_child_w.send_bytes(pickle.dumps(None, protocol=5))
    taker.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    child.join()
    child_cpu, child_rss = tail[0]
    h = hashlib.sha256()
    digest_of(received, h)
    rows = sum(len(o) for o in received)
    return Result("child", cpu, child_cpu, wall, rss_peak_mib(), child_rss, rows,
                  h.hexdigest()[:16])  # fmt: skip


def arm_main(args: argparse.Namespace) -> None:
    """One arm in this (fresh) process: print its Result as one pickled hex line."""
    calls = partials_of(Path(args.log), args.config, args.batch, args.rate)
    partitions = max(c[1].partition for c in calls) + 1
    config = merge_config(args.config, partitions)
    from connectors.run_control import tune_garbage_collection

    tune_garbage_collection()
    result = run_inproc(calls, config) if args.arm == "inproc" else run_child(calls, config)
    print(pickle.dumps(result).hex())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", required=True, help="a local log's root (<home>/log)")
    parser.add_argument("--config", help="the flow's config (default: the default config)")
    parser.add_argument("--batch", type=int, default=5000, help="lines per batch")
    parser.add_argument("--rate", type=float, default=100_000.0, help="simulated events/s")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--arm", choices=("inproc", "child"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        arm_main(args)
        return
    results: list[Result] = []
    for _ in range(args.pairs):
        for arm in ("inproc", "child"):
            command = [sys.executable, __file__, "--arm", arm, "--log", args.log,
                       "--batch", str(args.batch), "--rate", str(args.rate)]  # fmt: skip
            if args.config:
                command += ["--config", args.config]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            r: Result = pickle.loads(bytes.fromhex(done.stdout.strip().splitlines()[-1]))
            results.append(r)
            print(
                f"{r.arm:7s} worker CPU {r.cpu:6.2f} s  child CPU {r.child_cpu:6.2f} s  "
                f"wall {r.wall:6.2f} s  peak RSS {r.rss:6.0f} / {r.child_rss:4.0f} MiB  "
                f"rows {r.rows:,}  digest {r.digest}",
                flush=True,
            )
    digests = {r.digest for r in results}
    print("rows identical in every arm" if len(digests) == 1 else f"DIGESTS DIFFER: {digests}")


if __name__ == "__main__":
    main()
