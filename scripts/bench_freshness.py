#!/usr/bin/env python3
"""Freshness: how long after an event is appended to the log its early row is visible.

    python scripts/bench.py --ceiling --freshness      # at half the rate measured there
    python scripts/bench.py --freshness --fresh-rate 12000

Issue 13's target: an event appended while the flow runs live at half its measured
maximum rate shows up in `metrics` (an early row, ``final = 0``) within 1 s at p99. The
method, per setting of ``time.emit_interval`` and ``clickhouse.flush_interval`` (the
defaults, 1 s and 1 s, then lower values; the defaults are not changed):

1. `pulse run` (live, recovery on) starts on a fresh home's local log; once its service
   answers, synthetic traffic (:mod:`operators.synthetic`, the bench's cube) is generated,
   its event times starting a little in the future (so neither the start nor the
   generation leaves a burst to catch up on), and a thread appends each event once the
   wall clock reaches its emission time (batches every 20 ms): the log grows at the
   given rate, in event time ≈ now, with the generator's disorder, duplicates and bad
   lines. The flow's log goes to a file (a pipe read only at the end would fill and
   block the flow's threads as they log).
2. After a warm-up, every 250 ms a *marker* is appended with the load: an inference and
   its feedback (ts = now) in a cell of its own (model_id ``marker``, model_version
   ``m<i>``). The time taken just before that append is the marker's start.
3. A poller asks the running flow's HTTP service (``POST /v1/query`` with the key in
   ``$PULSE_HOME/service.json``: chDB cannot be opened by a second process), over one
   keep-alive connection, for the marker cells whose 1-minute row counts the feedback
   (the table's key prefix: window, tenant, model_id; a scan would cost the flow's process
   more as `metrics` grows),
   polling again as soon as an answer is in (at most every ``--poll-every``, 50 ms by
   default). A marker first
   seen in an answer became visible after the previous poll was sent and before this
   answer came back: its latency is reported as the upper bound (answer received −
   start); the bracket (this answer − previous send) is the measurement's error, and
   its p50 is printed so one sees that polling does not dominate. Each marker row's
   ``version`` (the early row's emission time, ms) splits the latency into emission and
   the sink's write.
4. The flow process's CPU seconds over the measured span, per appended event, against
   the default settings' is the throughput cost of the lower settings (a bounded run
   writes no early rows, so its rate would not show it). The polls are answered by the
   flow's own process (a chDB query each, ~15–20 ms of CPU), so the CPU per event is also
   taken over the last ``QUIET_S`` of the warm-up, before the first marker, when nothing
   polls: that figure is the flow's alone. Over the same span, the flow's worker thread
   on a CPU and waiting for one, and the VM's steal: on this 2-core VM a worker that
   waits for a CPU a third of the time falls behind with its process below one core.
5. The flow's own counters (``GET /metrics``, `pulse.pipeline.*`) from the load's start
   (scraped in a thread: a scrape of the grown `/metrics` takes seconds under load and
   must not hold the appends up) to its end say where its work went: early-row
   emissions (how many, their mean wall time), metric rows and rows written per
   appended event, and the share of the span the sink spent inserting.

Prints p50/p99/max per setting; the figures go into docs/performance.md.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.event_writer import LogWriter, Routed  # noqa: E402
from connectors.local_log import LocalLog  # noqa: E402
from operators import synthetic  # noqa: E402
from operators.synthetic import TrafficGenerator, TrafficProfile  # noqa: E402

PARTITIONS = 4
BATCH_S = 0.02  # the load thread appends what is due this often
MARKER_EVERY_S = 0.25
WARM_UP_S = 8.0
MAX_DELAY_S = 6.0  # feedback follows its inference within this (see _traffic)
POLL_S = 0.05  # the poller asks at most once per this many seconds by default (--poll-every)
TAIL_S = 3.0  # load after the last marker
QUIET_S = 4.0  # the warm-up's last seconds, without polls: the flow's own CPU per event
SETTINGS = (("1s", "1s"), ("250ms", "250ms"), ("100ms", "100ms"))  # (emit, flush)
MARKERS_SQL = (
    "SELECT model_version, minIf(version, final = 0) FROM pulse.metrics WHERE window = '1m' "
    "AND tenant = 'default' AND model_id = 'marker' AND feedback_count > 0 "
    "AND model_version != '*' AND segment != '*' AND endpoint != '*' GROUP BY model_version"
)


def cell_events(i: int, model_id: str, tag: str, thumbs_up: bool, now_ms: int) -> list[Routed]:
    """An inference and its thumbs feedback at `now_ms` in a cell no other event touches
    (`model_id`, model_version ``<tag><i>``, segment `tag`): a marker here, an alarm in
    scripts/bench_alerts.py."""
    request_id = f"{model_id}-{i}"
    dims = {"model_id": model_id, "model_version": f"{tag}{i}", "segment": tag,
            "endpoint": f"/{tag}"}  # fmt: skip
    inference = {"type": "inference", "request_id": request_id, "ts": now_ms, **dims}
    feedback = {"type": "feedback", "event_id": f"{model_id}-fb-{i}",
                "request_id": request_id, "ts": now_ms, "kind": "thumbs", "value": thumbs_up,
                "user_id": model_id}  # fmt: skip
    return [
        ("inferences", request_id, json.dumps(inference).encode()),
        ("feedback", request_id, json.dumps(feedback).encode()),
    ]


def _marker(i: int) -> list[Routed]:
    return cell_events(i, "marker", "m", True, int(time.time() * 1000))


@dataclass
class Marker:
    start: float  # wall time just before its append (s)
    seen: float | None = None  # wall time of the answer that first held it
    asked: float | None = None  # when the poll before that one was sent
    emitted_ms: int | None = None  # its early row's version: the emission time


@dataclass
class RunResult:
    emit: str
    flush: str
    rate: float  # events appended per second over the measured span
    markers: list[Marker] = field(default_factory=list)
    cpu_per_event_us: float = 0.0  # flow process CPU per appended event
    quiet_cpu_per_event_us: float = 0.0  # the same before the first marker (no polls)
    counters: dict[str, float] = field(default_factory=dict)  # pulse.pipeline.* over the load
    span_s: float = 0.0  # the counters' span (s): from the load's start to its end
    counted_events: float = 0.0  # events appended over that span
    behind_s: float = 0.0  # how far the load thread lagged its schedule at most
    shares: CpuShares | None = None  # what the machine gave the worker over the span


@dataclass(frozen=True)
class CpuShares:
    """Over a span: the flow's worker thread (its main thread: every stage runs there)
    on a CPU and runnable but waiting for one (the kernel's ``schedstat``), and the VM's
    steal (CPU time its host gave others) as a share of the machine's CPU time. Tells a
    flow that falls behind for want of CPU from one that falls behind with CPU to spare."""

    on_cpu: float
    waiting: float
    steal: float


def schedstat_seconds(text: str) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) from a thread's
    ``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds, then timeslices)."""
    on_cpu, waiting, _ = text.split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def steal_ticks(text: str) -> tuple[int, int]:
    """(steal, all) ticks of the machine from the first line of ``/proc/stat``."""
    ticks = [int(value) for value in text.split()[1:]]
    return ticks[7], sum(ticks)


class CpuReading(NamedTuple):
    """The counters :class:`CpuShares` is the difference of, at one moment."""

    at: float  # wall clock (s)
    on_cpu: float  # the worker thread's seconds on a CPU
    waiting: float  # its seconds runnable but waiting for one
    steal: int  # the machine's stolen ticks
    ticks: int  # all of the machine's ticks


def _cpu_reading(pid: int) -> CpuReading:
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        on_cpu, waiting = schedstat_seconds(f.read())
    with open("/proc/stat") as f:
        steal, ticks = steal_ticks(f.readline())
    return CpuReading(time.time(), on_cpu, waiting, steal, ticks)


def cpu_shares(before: CpuReading, after: CpuReading) -> CpuShares:
    span = max(after.at - before.at, 1e-9)
    return CpuShares(
        (after.on_cpu - before.on_cpu) / span,
        (after.waiting - before.waiting) / span,
        (after.steal - before.steal) / max(after.ticks - before.ticks, 1),
    )


def _traffic(rate: float, seconds: float, start_ms: int, seed: int) -> list[tuple[int, Routed]]:
    """`seconds` of the bench's traffic at `rate` events/s from `start_ms`, in emission
    order. Feedback delays are cut to at most MAX_DELAY_S (the generator's go up to
    400 s: the mix would take minutes to reach its steady share of feedback), and what
    would be emitted after the span is left out."""
    profile = TrafficProfile(seed=seed, start_ms=start_ms, duration_s=seconds,
                             rate=rate / 1.85, dims=10_000)  # fmt: skip
    delays, longest = dict(synthetic.MEDIAN_DELAY_S), synthetic.MAX_DELAY_S
    synthetic.MEDIAN_DELAY_S.update({k: min(v, MAX_DELAY_S / 4) for k, v in delays.items()})
    synthetic.MAX_DELAY_S = MAX_DELAY_S
    try:
        end = start_ms + seconds * 1000
        events = TrafficGenerator(profile).events()
        return [(e.emit_ms, (e.stream, e.key, e.line)) for e in events if e.emit_ms < end]
    finally:
        synthetic.MEDIAN_DELAY_S.update(delays)
        synthetic.MAX_DELAY_S = longest


def _service(home: Path, timeout: float = 120.0) -> tuple[str, str]:
    """URL and operator key of the running flow's service, once it answers. The markers are
    tenant `default`'s, which the local key reads too, but through the tenant filter (a
    system.columns read and an EXPLAIN per poll): the operator key keeps the polls' cost
    that of the recorded figures."""
    path = home / "service.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                info = json.loads(path.read_text())
                return str(info["url"]), str(info["operator_key"])
            except (ValueError, KeyError):
                pass
        time.sleep(0.1)
    raise RuntimeError(f"no service.json in {home} after {timeout:.0f} s")


class Poller:
    """Asks the service for the visible markers over one keep-alive connection."""

    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.body = json.dumps({"sql": MARKERS_SQL})
        self.round_trips: list[float] = []

    def visible(self) -> dict[str, int]:
        sent = time.perf_counter()
        self.connection.request("POST", "/v1/query", self.body, self.headers)
        response = self.connection.getresponse()
        data = response.read()
        self.round_trips.append(time.perf_counter() - sent)
        if response.status != 200:
            raise RuntimeError(f"/v1/query answered {response.status}: {data[:300]!r}")
        return {str(row[0]): int(row[1] or 0) for row in json.loads(data)["rows"]}

    def counters(self) -> dict[str, float]:
        """The flow's `pulse.pipeline.*` counters (Prometheus text, summed over labels),
        over a connection of its own (the poll's is in use by the poller's thread)."""
        host, port = self.connection.host, self.connection.port
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            connection.request("GET", "/metrics", headers=self.headers)
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        return pipeline_counters(text) if response.status == 200 else {}


def pipeline_counters(text: str) -> dict[str, float]:
    """`pulse_pipeline_*` samples of a Prometheus text, summed over their labels (a
    scrape under load may time out: the caller gets {} for a status other than 200)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("pulse_pipeline_"):
            name, _, value = line.rpartition(" ")
            name = name.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


def run_once(
    rate: float, markers: int, emit: str, flush: str, seed: int,
    flow_env: dict[str, str] | None = None, poll_every: float = POLL_S,
) -> RunResult:  # fmt: skip
    """One live run at `rate` events/s with `markers` markers, on a fresh home; `flow_env`:
    settings of the flow's own (``PULSE_...``), for an A/B of one of them; `poll_every`:
    the poller's period (each poll is a query in the flow's process: fewer cost it less,
    and widen the bracket)."""
    home = Path(tempfile.mkdtemp(prefix="pulse-fresh-"))
    log = LocalLog(home / "log", PARTITIONS)
    load_s = WARM_UP_S + markers * MARKER_EVERY_S + TAIL_S  # markers are seen under load
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_HOME": str(home), "PULSE_LOG_PARTITIONS": str(PARTITIONS)})
    env.update({"PULSE_TIME_EMIT_INTERVAL": emit, "PULSE_CLICKHOUSE_FLUSH_INTERVAL": flush})
    env.update(flow_env or {})
    # The flow's log goes to a file: a pipe nobody reads until the end would fill and
    # block the flow's threads as they log.
    stderr = home / "flow.stderr"
    with open(stderr, "wb") as errors:  # the child keeps its own descriptor
        flow = subprocess.Popen(
            [sys.executable, "-m", "dataflows.cli", "run", "--quiet"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=errors,
        )  # fmt: skip
    result = RunResult(emit, flush, rate)
    try:
        # The flow starts first, the traffic is generated while it waits: the load is due
        # only once both are ready, so it does not begin with a burst of what the start
        # delayed (under load both take longer than any fixed lead).
        poller = Poller(*_service(home))
        t = time.perf_counter()
        sample = _traffic(rate, 2.0, 0, seed)  # how fast this machine generates, now
        per_event = (time.perf_counter() - t) / max(1, len(sample))
        start_ms = int((time.time() + per_event * rate * load_s * 2.0 + 2.0) * 1000)
        traffic = _traffic(rate, load_s, start_ms, seed)
        if time.time() * 1000 > start_ms:
            late = time.time() - start_ms / 1000
            print(f"  (the traffic was ready {late:.1f} s after the load was due: the first "
                  "events come as a burst, inside the warm-up)")  # fmt: skip
        _drive(log, traffic, markers, start_ms, poller, flow.pid, result, poll_every)
        trips = sorted(poller.round_trips)
        print(f"  poll round trip p50 {_ms(trips, 0.5)}, p99 {_ms(trips, 0.99)} "
              f"({len(trips):,} polls)")  # fmt: skip
    finally:
        flow.send_signal(signal.SIGINT)
        try:
            flow.wait(timeout=120)
        except subprocess.TimeoutExpired:
            flow.kill()
            flow.wait()
        if flow.returncode not in (0, 130, -signal.SIGINT):
            tail = stderr.read_bytes()[-2000:].decode(errors="replace")
            print(f"  the flow exited {flow.returncode}: {tail}")
        shutil.rmtree(home, ignore_errors=True)
    return result


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drive(
    log: LocalLog,
    traffic: list[tuple[int, Routed]],
    markers: int,
    start_ms: int,
    poller: Poller,
    pid: int,
    result: RunResult,
    poll_every: float = POLL_S,
) -> None:
    """Append the load and the markers on schedule while the poller watches."""
    writer = LogWriter(log)
    placed: list[Marker] = []
    done = threading.Event()
    lock = threading.Lock()

    def poll() -> None:
        asked = time.time()
        while not done.is_set():
            with lock:
                waiting = {f"m{i}": m for i, m in enumerate(placed) if m.seen is None}
            if not waiting:
                time.sleep(poll_every / 5)
                asked = time.time()
                continue
            sent = time.time()
            found = poller.visible()
            now = time.time()
            for name, version in found.items():
                marker = waiting.get(name)
                if marker is not None:
                    marker.seen, marker.asked, marker.emitted_ms = now, asked, version
            asked = sent
            time.sleep(max(0.0, poll_every - (time.time() - sent)))

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    first_marker = start_ms / 1000 + WARM_UP_S
    i, appended, measured_from = 0, 0, 0
    cpu_from = wall_from = 0.0
    readings_from = _cpu_reading(pid)  # taken again at the first marker
    quiet: tuple[float, float, int] | None = None  # (CPU, wall, appended) at its start
    # The flow's counters from the load's start (few series yet: a cheap scrape), in a
    # thread: a scrape of a grown /metrics takes seconds under load and must not hold
    # the appends up.
    counters_from: dict[str, float] = {}
    counted_from = [time.time(), 0.0]

    def first_counters() -> None:
        counters_from.update(poller.counters())
        counted_from[:] = [time.time(), float(appended)]

    first_scrape = threading.Thread(target=first_counters, daemon=True)
    first_scrape.start()
    while i < len(traffic) or len(placed) < markers:
        now = time.time()
        if i < len(traffic) and traffic[i][0] <= now * 1000:
            result.behind_s = max(result.behind_s, now - traffic[i][0] / 1000)
        batch: list[Routed] = []
        while i < len(traffic) and traffic[i][0] <= now * 1000:
            batch.append(traffic[i][1])
            i += 1
        due = len(placed) < markers and now >= first_marker + len(placed) * MARKER_EVERY_S
        if quiet is None and now >= first_marker - QUIET_S:
            quiet = (_cpu_seconds(pid), now, appended)
        if due and not placed:
            cpu_from, wall_from, measured_from = _cpu_seconds(pid), now, appended
            readings_from = _cpu_reading(pid)
            if quiet is not None and now > quiet[1]:
                result.quiet_cpu_per_event_us = (
                    (cpu_from - quiet[0]) / max(1, appended - quiet[2]) * 1e6
                )
        if due:
            batch.extend(_marker(len(placed)))
        start = time.time()
        if batch:
            writer.write(batch)
            appended += len(batch)
        if due:
            with lock:
                placed.append(Marker(start))
        if len(placed) >= markers and i >= len(traffic):
            break
        time.sleep(max(0.0, BATCH_S - (time.time() - now)))
    span = time.time() - wall_from  # the load's span from the first marker on
    events = appended - measured_from
    result.rate = events / span if span > 0 else 0.0
    result.cpu_per_event_us = (_cpu_seconds(pid) - cpu_from) / max(1, events) * 1e6
    if placed:
        result.shares = cpu_shares(readings_from, _cpu_reading(pid))
    first_scrape.join()
    result.span_s = time.time() - counted_from[0]  # before the scrape (seconds, under load)
    result.counted_events = appended - counted_from[1]
    counters = poller.counters()  # the load is over: a slow scrape delays nothing
    result.counters = {k: v - counters_from.get(k, 0.0) for k, v in counters.items()}
    deadline = time.time() + 30.0  # the last markers, after the load
    while time.time() < deadline and any(m.seen is None for m in placed):
        time.sleep(0.1)
    done.set()
    watcher.join()
    result.markers = placed


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "—"
    return f"{values[min(len(values) - 1, int(q * len(values)))] * 1000:,.0f} ms"


def slowest(markers: list[Marker], count: int = 5) -> str:
    """The slowest markers, each with where in its wall-clock minute it was appended (event
    time is the wall clock: :00 is where a `1m` window ends and the next begins, :00 and
    :30 where `5m_30s` windows do) and how long its emission took, to tell a window's end
    from a steady delay."""
    late = sorted(((m.seen - m.start, m) for m in markers if m.seen is not None), reverse=True,
                  key=lambda pair: pair[0])  # fmt: skip
    parts = [
        f"{latency:.2f} s at :{m.start % 60:04.1f}"
        + (f" (emitted after {m.emitted_ms / 1000 - m.start:.2f} s)" if m.emitted_ms else "")
        for latency, m in late[:count]
    ]
    return ", ".join(parts) or "—"


def report(result: RunResult, baseline: RunResult | None) -> None:
    latency, bracket, emitted = [], [], []
    for m in result.markers:
        if m.seen is not None and m.asked is not None:
            latency.append(m.seen - m.start)
            bracket.append(m.seen - max(m.asked, m.start))
            if m.emitted_ms:  # 0: seen first in its final row
                emitted.append(m.emitted_ms / 1000 - m.start)
    first, last = sorted(latency[:20]), sorted(latency[-20:])  # falling behind shows here
    latency.sort(), bracket.sort(), emitted.sort()
    seen = latency
    missing = len(result.markers) - len(seen)
    cost = ""
    if baseline is not None and baseline.cpu_per_event_us:
        cost = f", {result.cpu_per_event_us / baseline.cpu_per_event_us - 1:+.0%} against 1s/1s"
    print(
        f"emit {result.emit:>5}, flush {result.flush:>5}: freshness p50 {_ms(latency, 0.5)}, "
        f"p99 {_ms(latency, 0.99)}, max {_ms(latency, 1.0)} over {len(seen)} markers"
        f"{f' ({missing} never seen)' if missing else ''}"
    )
    print(
        f"  emitted after p50 {_ms(emitted, 0.5)}, p99 {_ms(emitted, 0.99)}; polling "
        f"bracket p50 {_ms(bracket, 0.5)}, p99 {_ms(bracket, 0.99)}; load {result.rate:,.0f} "
        f"events/s (at most {result.behind_s:.2f} s behind schedule); flow CPU "
        f"{result.cpu_per_event_us:.1f} µs per event{cost}"
    )
    print(f"  p50 of the first 20 markers {_ms(first, 0.5)}, of the last 20 {_ms(last, 0.5)}")
    print(f"  slowest: {slowest(result.markers)}")
    print(f"  flow CPU without polls (the warm-up's last {QUIET_S:.0f} s) "
          f"{result.quiet_cpu_per_event_us:.1f} µs per event")  # fmt: skip
    if result.shares is not None:
        shares = result.shares
        print(f"  the flow's worker thread on a CPU {shares.on_cpu:.0%} of the span, runnable "
              f"but waiting for one {shares.waiting:.0%}; the VM's steal {shares.steal:.0%} "
              "of the machine's CPU time")  # fmt: skip
    c, n = result.counters, max(1.0, result.counted_events)
    emissions = c.get("pulse_pipeline_emissions_total", 0.0)
    if emissions and result.span_s:
        took = c.get("pulse_pipeline_emission_duration_seconds_total", 0.0)
        busy = c.get("pulse_pipeline_sink_insert_duration_seconds_total", 0.0) / result.span_s
        print(
            f"  over the load: {emissions:.0f} emissions ({emissions / result.span_s:.2f}/s, "
            f"mean wall {took / emissions * 1000:,.0f} ms); per appended event "
            f"{c.get('pulse_pipeline_metric_rows_total', 0.0) / n:.1f} metric rows, "
            f"{c.get('pulse_pipeline_sink_rows_total', 0.0) / n:.1f} rows written; "
            f"the sink inserting {busy:.0%} of the span"
        )


def main(
    rate: float,
    markers: int,
    seed: int,
    settings: tuple[tuple[str, str], ...] = SETTINGS,
    flow_env: dict[str, str] | None = None,
    poll_every: float = POLL_S,
) -> None:
    """Freshness at `rate` events/s for each (emit, flush) setting."""
    print(f"freshness: live `pulse run` at {rate:,.0f} events/s, {markers} markers each; "
          f"load {os.getloadavg()[0]:.1f} (1-min average); polls every {poll_every:g} s"
          + "".join(f"; {key}={value}" for key, value in (flow_env or {}).items()))  # fmt: skip
    baseline: RunResult | None = None
    for emit, flush in settings:
        result = run_once(rate, markers, emit, flush, seed, flow_env, poll_every)
        report(result, baseline)
        baseline = baseline or result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, required=True, help="events/s appended")
    parser.add_argument("--markers", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--setting", action="append", metavar="EMIT/FLUSH",
        help="e.g. 1s/1s (repeatable; default: " + ", ".join(f"{e}/{f}" for e, f in SETTINGS) + ")",
    )  # fmt: skip
    parser.add_argument(
        "--flow-env", action="append", default=[], metavar="PULSE_KEY=VALUE",
        help="a setting of the flow's (repeatable), e.g. PULSE_RUN_SNAPSHOT_INTERVAL=300s",
    )  # fmt: skip
    parser.add_argument(
        "--poll-every", type=float, default=POLL_S, metavar="SECONDS",
        help=f"the poller's period (default {POLL_S}; each poll costs the flow a query)",
    )  # fmt: skip
    args = parser.parse_args()
    flow_env = dict(kv.partition("=")[::2] for kv in args.flow_env)
    chosen = tuple((s.partition("/")[0], s.partition("/")[2] or "1s") for s in args.setting or ())
    main(args.rate, args.markers, args.seed, chosen or SETTINGS, flow_env, args.poll_every)
