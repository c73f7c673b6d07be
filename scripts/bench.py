#!/usr/bin/env python3
"""Throughput of the bounded flow, as a ratio to a reference measured in the same run.

    python scripts/bench.py [--events 1000000] [--dims 10000] [--kafka 127.0.0.1:19092] [--repeat 3]
                            [--rules 100 [--only-rules]]
    python scripts/bench.py --api [--kafka HOST:PORT] [--api-seconds 10] [--api-connections 32]
                            [--api-rounds 3]
    python scripts/bench.py --ceiling [--freshness [--fresh-rate R] [--markers 120]]
    python scripts/bench.py --alerts [--alert-rate 0 --alert-rate 2000] [--alarms 30]

1. Generates N events (synthetic cube of about --dims dims combinations) into a fresh
   local log (not timed).
2. Reference rate: read every line of that log and ``msgspec.json.decode`` it (untyped) —
   the least work any implementation must do.
3. The full bounded flow (`pulse run --bounded`, its own process, all default windows and
   rollups) from the local log to chDB, with recovery snapshots every --snapshot-interval
   (their count, size and time as the flow measured them), then again with
   ``--no-recovery``: the difference is what recovery costs. Each of the two runs
   --repeat times, alternating, and the fastest counts (single runs on a shared VM vary
   by tens of percent). Then once from Kafka (the same events loaded into topics) to
   chDB. Wall time includes start-up and the final flush.
4. With ``--rules N``: the bounded flow (``--no-recovery``) with N generated rules of mixed
   types (threshold, ratio, spike, canary, drift; :func:`bench_rules`) over the bench log's
   dims and windows, against the same run without rules, --repeat rounds of one run each
   in alternating order (ABBA); the ratios best against best and round by round (wall and
   CPU time) are what the rules cost.

5. With ``--ceiling``: only issue 13's yardstick — the flow (default config, and a
   1-minute-only config, recovery on) against one chDB query computing the same 1-minute
   finest-cell rows over the same log (scripts/bench_ceiling.py has the method); with
   ``--freshness`` (alone or as well): freshness of early rows while the flow runs live at
   half its measured rate (scripts/bench_freshness.py).

6. With ``--api``: only the HTTP ingestion API (scripts/bench_api.py has the method):
   requests/s, events/s and p50/p99 latency for single events and batches of 100, into
   the local log and into Kafka, against the raw log-append rate of the same events.

7. With ``--alerts``: only the pager latency (scripts/bench_alerts.py has the method): in
   a live run, from a regression's feedback appended to its signed webhook received.

Prints events/s, the ratio to the reference, and each process's RSS: steady (the highest
sampled, every 50 ms, in the first three quarters of its run) and peak, and the
difference ("end"): the end of a bounded run closes every open window at once, and that
difference is what it costs in memory. Not a test: figures go in notes, never in assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.event_writer import KafkaWriter, LogWriter, route  # noqa: E402
from connectors.kafka import KafkaTarget, ensure_topics  # noqa: E402
from connectors.local_log import LocalLog  # noqa: E402
from operators.batches import STREAMS  # noqa: E402
from operators.synthetic import TrafficGenerator, TrafficProfile  # noqa: E402


def generate(log: LocalLog, events: int, dims: int, seed: int) -> int:
    rate = 2000.0  # inferences per second of event time
    profile = TrafficProfile(seed=seed, duration_s=events / (rate * 1.85), rate=rate, dims=dims)
    writer = LogWriter(log)
    batch, written = [], 0
    for event in TrafficGenerator(profile).events():
        batch.append((event.stream, event.key, event.line))
        if len(batch) >= 50_000:
            written += writer.write(batch)
            batch = []
    return written + writer.write(batch)


# The bench cube's dims (operators.synthetic._Cube) and the default windows.
_SELECTORS: tuple[dict[str, object], ...] = (
    {"model_version": "*", "segment": "*", "endpoint": "*"},  # every individual cell
    {"model_version": "*"},
    {"segment": "*"},
    {"endpoint": "*"},
    {"model_version": "*", "endpoint": "*"},
    {},  # the model's rollup per tenant
)
_WINDOWS = ("1m", "5m_30s", "1h")
_TUMBLING = ("1m", "1h")
_METRICS = ("accuracy", "thumbs_down_rate", "ctr", "error_rate", "latency_p95")


def bench_rules(n: int) -> list[dict[str, object]]:
    """N rules cycling through the five types, windows, selectors and metrics (canary and
    drift on tumbling windows; the cube has no canary deployment, so canaries stay
    without evidence, as a canary rule does until one is deployed). No notify targets:
    the flow's cost, not a receiver's."""
    rules: list[dict[str, object]] = []
    for i in range(n):
        kind = ("threshold", "ratio", "spike", "canary", "drift")[i % 5]
        rule: dict[str, object] = {"name": f"bench-{kind}-{i}", "type": kind}
        where = _SELECTORS[i // 5 % len(_SELECTORS)]
        window = _WINDOWS[i // 5 % len(_WINDOWS)]
        metric = _METRICS[i // 5 % len(_METRICS)]
        if kind == "threshold":
            op = "<" if metric in ("accuracy", "ctr") else ">"
            rule.update(window=window, where=where, metric=metric, op=op, value=0.5,
                        min_samples=30, **{"for": "1m"})  # fmt: skip
        elif kind == "ratio":
            rule.update(window=window, where=where, numerator={"metric": "thumbs_down"},
                        denominator={"metric": "feedback_count"}, scale=100, op=">",
                        value=20, min_samples=30)  # fmt: skip
        elif kind == "spike":
            rule.update(window=window, where=where, metric=metric, baseline_windows=5,
                        change=0.5, min_samples=30)  # fmt: skip
        elif kind == "canary":
            rule.update(window=_TUMBLING[i // 5 % 2], metric="thumbs_down_rate",
                        canary={"deployment": "canary", **where},
                        baseline={"deployment": "primary", **where},
                        match=["model_id"], worse="higher", alpha=0.01)  # fmt: skip
        else:
            rule.update(window=_TUMBLING[i // 5 % 2], where=where,
                        reference={"kind": "trailing", "windows": 3}, psi=0.2)  # fmt: skip
        rules.append(rule)
    return rules


def log_lines(log: LocalLog) -> Iterator[bytes]:
    for stream in STREAMS:
        for partition in range(log.partitions):
            for _, path in log.segments(stream, partition):
                with path.open("rb") as f:
                    yield from f


def reference_rate(log: LocalLog) -> tuple[int, float]:
    decode, error = msgspec.json.decode, msgspec.DecodeError
    start = time.perf_counter()
    n = 0
    for line in log_lines(log):
        with contextlib.suppress(error):  # the injected invalid events
            decode(line)
        n += 1
    return n, n / (time.perf_counter() - start)


SNAPSHOT_LINE = re.compile(rb"state snapshots: (\d+), ([\d.]+) KiB and ([\d.]+) ms each")
RSS_SAMPLE_S = 0.05


class RssSampler:
    """A process's resident set size over time, from /proc (Linux), on its own thread."""

    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.samples: list[tuple[float, int]] = []  # (seconds since start, KiB)
        self._start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            try:
                status = self.path.read_text()
            except OSError:  # the process is gone
                return
            found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
            if found:
                self.samples.append((time.perf_counter() - self._start, int(found[1])))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak_before(self, share: float) -> int:
        """Highest RSS (KiB) sampled in the first `share` of the run's wall time."""
        if not self.samples:
            return 0
        until = self.samples[-1][0] * share
        return max((kib for at, kib in self.samples if at <= until), default=0)


Run = tuple[float, int, int, tuple[int, float, float] | None]


def run_flow(home: Path, env_extra: dict[str, str], *flags: str) -> Run:
    """Seconds, peak RSS and RSS in the run's first 3/4 (KiB), and (snapshots, KiB, ms
    each) of one bounded flow process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_HOME": str(home), **env_extra})
    shutil.rmtree(home / "olap", ignore_errors=True)
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "dataflows.cli", "run", "--bounded", "--quiet", *flags],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    rss = RssSampler(process.pid)
    errors = process.stderr.read()  # until the process closes it (it logs little)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    rss.stop()
    if status != 0:
        sys.exit(f"bench: the flow failed:\n{errors.decode()[-3000:]}")
    found = SNAPSHOT_LINE.search(errors)
    snapshots = (int(found[1]), float(found[2]), float(found[3])) if found else None
    return elapsed, usage.ru_maxrss, rss.peak_before(0.75), snapshots


def _times(runs: list[Run]) -> str:
    return ", ".join(f"{run[0]:.1f} s" for run in runs)


def report(label: str, events: int, reference: float, run: Run) -> None:
    seconds, peak, early, _ = run
    rate = events / seconds
    print(
        f"{label:<36} {rate:12,.0f} events/s  ratio {rate / reference:.3f}  "
        f"{seconds:6.1f} s  {rss_line(peak, early)}"
    )


def rss_line(peak: int, steady: int) -> str:
    """Steady RSS (the highest in the run's first 3/4) against the run's peak (KiB): what
    the end of a bounded run (every open window closing at once) adds on top."""
    jump = peak - steady
    share = jump / steady if steady else 0.0
    return (
        f"RSS steady {steady / 1024:,.0f} MiB, peak {peak / 1024:,.0f} MiB "
        f"(end {jump / 1024:+,.0f} MiB, {share:+.0%})"
    )


def load_kafka(log: LocalLog, bootstrap: str, prefix: str) -> None:
    target = KafkaTarget(bootstrap, prefix, {})
    ensure_topics(target, log.partitions, 1)
    writer = KafkaWriter(target)
    batch = []
    for line in log_lines(log):
        batch.append(route(line.rstrip(b"\n")))
        if len(batch) >= 50_000:
            writer.write(batch)
            batch = []
    writer.write(batch)
    writer.close()


def measure_rules(
    home: Path, env: dict[str, str], n: int, ref: float, count: int, repeat: int
) -> None:
    """The flow with `count` rules against the same flow without: the ratio best against
    best, and pair by pair (the two runs of each round) with the median pair, in wall time
    and in CPU time (user + sys of the flow process, steadier than wall time on a shared
    machine).

    Rounds alternate their order (without, with; then with, without: ABBA), so a trend in
    the machine's load over the bench moves both configurations alike: with a fixed order
    the run with rules always came second and a rising load counted against the rules in
    every pair. Each run starts from the same home (the log; chDB's directory is removed
    before each run, and nothing else is kept between runs)."""
    config = home / "rules.yaml"
    config.write_text(yaml.safe_dump({"rules": bench_rules(count)}, sort_keys=False))
    with_rules: list[Run] = []
    without: list[Run] = []
    cpu_with: list[float] = []
    cpu_without: list[float] = []
    ruled_env = {"PULSE_CONFIG": str(config)}
    loads = [os.getloadavg()[0]]
    for ruled in rules_order(repeat):
        runs, cpus, extra = (
            (with_rules, cpu_with, ruled_env) if ruled else (without, cpu_without, {})
        )
        before = _children_cpu()
        runs.append(run_flow(home, {**env, **extra}, "--no-recovery"))
        cpus.append(_children_cpu() - before)
        loads.append(os.getloadavg()[0])
    plain = min(without, key=lambda run: run[0])
    ruled_best = min(with_rules, key=lambda run: run[0])
    print(f"  order {''.join('B' if r else 'A' for r in rules_order(repeat))} (A without rules, "
          f"B with); load average (1 min) {min(loads):.1f}-{max(loads):.1f}")  # fmt: skip
    report("no rules (--no-recovery):", n, ref, plain)
    print(f"  all runs: {_times(without)}; CPU {_seconds(cpu_without)}")
    report(f"{count} rules (--no-recovery):", n, ref, ruled_best)
    print(f"  all runs: {_times(with_rules)}; CPU {_seconds(cpu_with)}")
    print(f"  rate with rules / without: {plain[0] / ruled_best[0]:.3f} (best against best; "
          f"the rules cost {1 - plain[0] / ruled_best[0]:.1%})")  # fmt: skip
    walls = [a[0] / b[0] for a, b in zip(without, with_rules, strict=True)]
    cpus = [a / b for a, b in zip(cpu_without, cpu_with, strict=True)]
    print(f"  wall ratio pair by pair: {_ratios(walls)}; median {statistics.median(walls):.3f}")
    print(f"  CPU ratio best against best: {min(cpu_without) / min(cpu_with):.3f}; pair by "
          f"pair: {_ratios(cpus)}; median {statistics.median(cpus):.3f}")  # fmt: skip


def rules_order(repeat: int) -> list[bool]:
    """Whether each run of :func:`measure_rules` has the rules: rounds of two, in the order
    A B, B A, A B, ... (A without, B with)."""
    return [ruled != (i % 2 == 1) for i in range(repeat) for ruled in (False, True)]


def _children_cpu() -> float:
    """User + sys seconds of the reaped child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f} s" for v in values)


def _ratios(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def yardsticks(home: Path, n: int, args: argparse.Namespace, env: dict[str, str]) -> None:
    """Issue 13's: the flow against the vectorized ceiling (scripts/bench_ceiling.py), and
    freshness at half the flow's measured rate (scripts/bench_freshness.py)."""
    from scripts import bench_ceiling, bench_freshness

    rate = args.fresh_rate
    if args.ceiling:
        best = bench_ceiling.measure(home, n, args.repeat, env)
        rate = rate or best / 2
    if args.freshness:
        rate = rate or n / run_flow(home, env)[0] / 2
        bench_freshness.main(rate, args.markers, args.seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--kafka",
        default=os.environ.get("PULSE_TEST_KAFKA"),
        help="bootstrap servers of a running broker (default: skip Kafka)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench home")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each local configuration (best is kept)"
    )
    parser.add_argument(
        "--rules", type=int, default=0, help="also measure N generated rules (mixed types)"
    )
    parser.add_argument(
        "--only-rules", action="store_true", help="skip recovery and Kafka: the rules only"
    )
    parser.add_argument(
        "--snapshot-interval", default="10s", help="run.snapshot_interval of the recovery runs"
    )
    parser.add_argument("--api", action="store_true", help="the HTTP ingestion API only")
    parser.add_argument("--api-seconds", type=float, default=10.0, help="each API load run")
    parser.add_argument("--api-connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--api-events", type=int, default=50_000, help="distinct events, cycled")
    parser.add_argument("--api-rounds", type=int, default=3, help="open-loop runs (p99 of each)")
    parser.add_argument(
        "--ceiling", action="store_true", help="only the flow against the chDB query's ceiling"
    )
    parser.add_argument("--freshness", action="store_true", help="only (or also) freshness")
    parser.add_argument("--fresh-rate", type=float, help="events/s (default: half the flow's)")
    parser.add_argument("--markers", type=int, default=120, help="freshness markers per run")
    parser.add_argument(
        "--alerts", action="store_true", help="only the pager latency (scripts/bench_alerts.py)"
    )
    parser.add_argument(
        "--alert-rate", type=float, action="append",
        help="events/s of load beside the alarms (repeatable; default: 0 and 2000)",
    )  # fmt: skip
    parser.add_argument("--alarms", type=int, default=30, help="alarms per pager-latency run")
    args = parser.parse_args()
    if args.alerts:
        from scripts import bench_alerts

        bench_alerts.main(args.alert_rate or [0.0, 2000.0], args.alarms, args.seed)
        return
    if args.api:
        from scripts import bench_api

        bench_api.main(args.kafka, args.api_events, args.api_seconds, args.api_connections,
                       args.seed, args.api_rounds)  # fmt: skip
        return

    home = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    try:
        log = LocalLog(home / "log", args.partitions)
        t = time.perf_counter()
        n = generate(log, args.events, args.dims, args.seed)
        took = time.perf_counter() - t
        print(f"generated {n:,} events ({args.dims:,} dims combinations) in {took:.0f} s")

        ref = max(reference_rate(log)[1] for _ in range(args.repeat))
        print(f"{'reference (msgspec untyped decode):':<36} {ref:12,.0f} events/s")
        if args.ceiling or args.freshness:
            yardsticks(home, n, args, {"PULSE_LOG_PARTITIONS": str(args.partitions)})
            return

        local = {
            "PULSE_LOG_PARTITIONS": str(args.partitions),
            "PULSE_RUN_SNAPSHOT_INTERVAL": args.snapshot_interval,
        }
        if args.rules:
            measure_rules(home, local, n, ref, args.rules, args.repeat)
        if args.only_rules:
            return
        local = {
            "PULSE_LOG_PARTITIONS": str(args.partitions),
            "PULSE_RUN_SNAPSHOT_INTERVAL": args.snapshot_interval,
        }
        # Alternate the two configurations and keep each one's fastest run: this VM's
        # neighbours make single runs vary by tens of percent.
        with_recovery, without = [], []
        for _ in range(args.repeat):
            with_recovery.append(run_flow(home, local))
            without.append(run_flow(home, local, "--no-recovery"))
        best = min(with_recovery, key=lambda run: run[0])
        seconds, snapshots = best[0], best[3]
        report("local log -> chDB (bounded flow):", n, ref, best)
        if args.repeat > 1:
            print(f"  best of {args.repeat}; all runs: {_times(with_recovery)}")
        if snapshots:
            count, kib, ms = snapshots
            print(f"  state snapshots (every {args.snapshot_interval}): {count} taken, "
                  f"{kib:,.1f} KiB and {ms:.2f} ms each on average")  # fmt: skip
        best = min(without, key=lambda run: run[0])
        plain = best[0]
        report("  the same, --no-recovery:", n, ref, best)
        if args.repeat > 1:
            print(f"  best of {args.repeat}; all runs: {_times(without)}")
        print(f"  cost of recovery (snapshots + sink flushes): {1 - plain / seconds:.1%} "
              "of throughput, best against best")  # fmt: skip
        if args.kafka:
            prefix = f"bench{uuid.uuid4().hex[:8]}"
            load_kafka(log, args.kafka, prefix)
            kafka_env = {
                "PULSE_LOG_BACKEND": "kafka",
                "PULSE_KAFKA_BOOTSTRAP_SERVERS": args.kafka,
                "PULSE_KAFKA_TOPIC_PREFIX": prefix,
            }
            report("Kafka -> chDB (bounded flow):", n, ref, run_flow(home, kafka_env))
        else:
            print("Kafka: skipped (pass --kafka HOST:PORT)")
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"bench process peak RSS {own:,.0f} MiB")
    finally:
        if args.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
