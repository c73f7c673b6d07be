"""`python scripts/bench.py --api`: the HTTP ingestion API's rate and latency.

The service runs as it does under `pulse serve` (uvicorn on a thread of this process,
:class:`connectors.service.server.ServiceThread`, an all-scope key) over a fresh home;
the load comes from a separate process on loopback, so the two share the machine's cores
as a client and a server on one host would. For each log (the local log, then Kafka when
a broker is given):

1. the raw append rate of the same events, without HTTP: :meth:`LocalLog.append_many`
   (one request's events at a time, its partitions fsynced together, as a request of
   that shape costs at least) or :class:`connectors.kafka.EventProducer` (send all,
   flush): the ratio's base;
2. closed loop, `--api-connections` keep-alive connections each sending its next request
   as soon as the previous one is answered: the maximum rate, for single events and for
   batches of 100 (requests/s, events/s, p50/p99 latency);
3. open loop at half the single-event maximum: requests scheduled at a fixed rate, the
   latency counted from each request's scheduled time (a late send counts against the
   server, no coordinated omission). `rounds` runs, each printed (p50/p95/p99/max), then
   all of them pooled: one 10 s run at ~450/s has its p99 in its 45 worst requests, so
   one neighbour's burst moves it. Each run also prints the log's own share: how long
   :meth:`DurableLog.append` took per request (p50/p99/max), the rest of a request's
   latency being HTTP, validation and waiting for a core; for the local log, also how
   long after its enqueue each request's events were durable (the committer's share: the
   rest of an append is the event loop getting back to the awaiting request).

The load generator is asyncio streams with pre-encoded HTTP/1.1 requests and a minimal
response reader (status line, Content-Length, body): an HTTP client library (httpx,
h11) costs about as much per request as the server's own parsing, and on two cores the
client's cost is taken from the server. Events come from
:class:`operators.synthetic.TrafficGenerator` (no injected invalid events: every one must
be accepted); a request that is not answered 202 with all its events accepted is counted
as failed and its status shown.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import Settings, load_settings  # noqa: E402
from connectors.event_writer import Routed  # noqa: E402
from connectors.ingest_log import LocalDurableLog, durable_log  # noqa: E402
from connectors.kafka import EventProducer, KafkaTarget, ensure_topics  # noqa: E402
from connectors.local_log import LocalLog  # noqa: E402
from connectors.run_control import tune_garbage_collection  # noqa: E402
from connectors.service.app import create_app  # noqa: E402
from connectors.service.auth import KeyRing  # noqa: E402
from connectors.service.context import DurableLog, ServiceContext  # noqa: E402
from connectors.service.keys import new_key  # noqa: E402
from connectors.service.server import ServiceThread  # noqa: E402
from connectors.service.store import Store  # noqa: E402
from operators.partitioning import partition_for  # noqa: E402
from operators.synthetic import TrafficGenerator, TrafficProfile  # noqa: E402

PATHS = {"inferences": "/v1/inferences", "feedback": "/v1/feedback"}
Event = tuple[str, str, bytes]  # stream, key, line


def bench_events(n: int, seed: int) -> list[Event]:
    """N valid events (inferences and their feedback, no injected invalid ones)."""
    profile = TrafficProfile(seed=seed, duration_s=n / (2000 * 1.85), rate=2000.0, dims=1000,
                             invalid_rate=0.0)  # fmt: skip
    found: list[Event] = []
    for event in TrafficGenerator(profile).events():
        found.append((event.stream, event.key, event.line))
        if len(found) == n:
            break
    return found


def batches(events: list[Event], size: int) -> list[tuple[str, list[Event]]]:
    """Consecutive events of one stream, `size` at a time (one request each)."""
    by_stream: dict[str, list[Event]] = {s: [] for s in PATHS}
    for event in events:
        by_stream[event[0]].append(event)
    return [
        (stream, found[i : i + size])
        for stream, found in by_stream.items()
        for i in range(0, len(found), size)
        if len(found[i : i + size]) == size
    ]


def encoded_requests(events: list[Event], size: int, key: str) -> list[tuple[bytes, int]]:
    """Each request pre-encoded (HTTP/1.1, keep-alive), with its event count."""
    out = []
    for stream, group in batches(events, size):
        lines = [line for _, _, line in group]
        body = lines[0] if size == 1 else b"[" + b",".join(lines) + b"]"
        head = (
            f"POST {PATHS[stream]} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        out.append((head.encode() + body, len(group)))
    return out


# -- the load generator (runs in its own process) -------------------------------------------


@dataclass
class Load:
    """What one load run saw."""

    seconds: float = 0.0
    requests: int = 0  # answered 202 with every event accepted
    events: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0  # CPU time of the serving process over the run
    client_cpu_s: float = 0.0  # and of the load generator

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def pooled(self, other: Load) -> Load:
        """This run and `other` as one."""
        return Load(
            self.seconds + other.seconds, self.requests + other.requests,
            self.events + other.events, self.failed + other.failed,
            self.latencies_ms + other.latencies_ms, self.server_cpu_s + other.server_cpu_s,
            self.client_cpu_s + other.client_cpu_s,
        )  # fmt: skip


def percentile(values: list[float], p: float) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[int(p * 10) - 1]


class TimedLog:
    """The service's log, timing each append (the log's share of a request's latency)."""

    def __init__(self, log: DurableLog) -> None:
        self.log = log
        self.appends_ms: list[float] = []
        # The local log also says when each request's events were durable: the rest of
        # an append is the event loop resuming the request.
        self.durable = log if isinstance(log, LocalDurableLog) else None
        if self.durable is not None:
            self.durable.durable_ms = []

    def append(self, events: Sequence[Routed], timeout_s: float) -> None:
        started = time.perf_counter()
        try:
            self.log.append(events, timeout_s)
        finally:
            self.appends_ms.append((time.perf_counter() - started) * 1000)

    async def append_async(self, events: Sequence[Routed], timeout_s: float) -> None:
        started = time.perf_counter()
        try:
            await self.log.append_async(events, timeout_s)
        finally:
            self.appends_ms.append((time.perf_counter() - started) * 1000)

    def reachable(self) -> bool:
        return self.log.reachable()

    def close(self) -> None:
        self.log.close()

    def share(self) -> str:
        """p50/p99/max of the appends since the last call, and forget them."""
        found, self.appends_ms = self.appends_ms, []
        text = (
            f"log append p50 {percentile(found, 50):.1f} / p99 {percentile(found, 99):.1f} / "
            f"max {max(found, default=float('nan')):.1f} ms"
        )
        if self.durable is not None and self.durable.durable_ms is not None:
            durable, self.durable.durable_ms = self.durable.durable_ms, []
            text += (
                f", of which durable after p50 {percentile(durable, 50):.1f} / p99 "
                f"{percentile(durable, 99):.1f} / max {max(durable, default=float('nan')):.1f} ms"
            )
        return text


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length) if length else b""

    def close(self) -> None:
        self.writer.close()


def _record(load: Load, status: int, body: bytes, count: int, latency_ms: float) -> None:
    if status == 202 and msgspec.json.decode(body).get("accepted") == count:
        load.requests += 1
        load.events += count
        load.latencies_ms.append(latency_ms)
    else:
        load.failed[f"{status} {body[:120]!r}"] += 1


async def _closed_loop(
    host: str, port: int, requests: list[tuple[bytes, int]], connections: int, seconds: float
) -> Load:
    load = Load()
    pool = [await _Connection.open(host, port) for _ in range(connections)]
    stop = time.perf_counter() + seconds
    position = iter(range(10**12))

    async def worker(connection: _Connection) -> None:
        while (now := time.perf_counter()) < stop:
            request, count = requests[next(position) % len(requests)]
            status, body = await connection.send(request)
            _record(load, status, body, count, (time.perf_counter() - now) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in pool))
    load.seconds = time.perf_counter() - started
    for connection in pool:
        connection.close()
    return load


async def _open_loop(
    host: str, port: int, requests: list[tuple[bytes, int]], rate: float, seconds: float,
    connections: int,
) -> Load:  # fmt: skip
    """Requests at `rate`/s; an idle connection takes each, a new one opens when none is
    idle (up to 4x `connections`), else the request waits (and its wait counts)."""
    load = Load()
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await _Connection.open(host, port))
    opened = connections
    tasks: set[asyncio.Task[None]] = set()

    async def one(request: bytes, count: int, scheduled: float) -> None:
        nonlocal opened
        if idle.empty() and opened < 4 * connections:
            opened += 1
            connection = await _Connection.open(host, port)
        else:
            connection = await idle.get()
        status, body = await connection.send(request)
        _record(load, status, body, count, (time.perf_counter() - scheduled) * 1000)
        idle.put_nowait(connection)

    started = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        request, count = requests[i % len(requests)]
        task = asyncio.create_task(one(request, count, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    load.seconds = time.perf_counter() - started
    while not idle.empty():
        idle.get_nowait().close()
    return load


def _load_process(
    url: tuple[str, int], key: str, events: list[Event], size: int, mode: str, rate: float,
    seconds: float, connections: int,
) -> Load:  # fmt: skip
    requests = encoded_requests(events, size, key)
    host, port = url
    cpu = time.process_time()
    if mode == "open":
        load = asyncio.run(_open_loop(host, port, requests, rate, seconds, connections))
    else:
        load = asyncio.run(_closed_loop(host, port, requests, connections, seconds))
    load.client_cpu_s = time.process_time() - cpu
    return load


def run_load(
    service: ServiceThread, key: str, events: list[Event], size: int, mode: str,
    seconds: float, connections: int, rate: float = 0.0,
) -> Load:  # fmt: skip
    """One load run from a separate process (spawned: no state of this one)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        args = ((service.host, service.port), key, events, size, mode, rate, seconds, connections)
        pool.apply(abs, (0,))  # the child is up before the clock starts
        cpu = time.process_time()
        load: Load = pool.apply(_load_process, args)
        load.server_cpu_s = time.process_time() - cpu
        return load


# -- the raw append rate ------------------------------------------------------------------------


def raw_local(log: LocalLog, events: list[Event], size: int, seconds: float) -> float:
    """Events/s through LocalLog.append_many, one request's worth (`size` events) at a
    time, the partitions it touches fsynced together."""
    groups = [group for _, group in batches(events, size)]
    done, started = 0, time.perf_counter()
    for i in range(10**12):
        group = groups[i % len(groups)]
        by_partition: dict[tuple[str, int], list[bytes]] = {}
        for stream, key, line in group:
            by_partition.setdefault((stream, partition_for(key, log.partitions)), []).append(line)
        log.append_many(by_partition)
        done += len(group)
        if time.perf_counter() - started >= seconds:
            break
    return done / (time.perf_counter() - started)


def raw_kafka(target: KafkaTarget, events: list[Event]) -> float:
    producer = EventProducer(target)
    started = time.perf_counter()
    for stream, key, line in events:
        producer.send(stream, key, line)
    producer.flush()
    rate = len(events) / (time.perf_counter() - started)
    producer.producer.flush(0)
    return rate


# -- the service ----------------------------------------------------------------------------


def serve(settings: Settings) -> tuple[ServiceThread, ServiceContext, str, TimedLog]:
    from dataflows.feedback import clickhouse_target  # the flow's module: bytewax, late

    key = new_key()
    target = clickhouse_target(settings)
    log = durable_log(settings)
    assert log is not None
    timed = TimedLog(log)
    context = ServiceContext(settings=settings, keys=KeyRing([], operator_key=key), target=target,
                             store=Store(target), log=timed)  # fmt: skip
    thread = ServiceThread(create_app(context), "127.0.0.1", 0).start()
    tune_garbage_collection()  # as `pulse serve` does once it serves
    return thread, context, key, timed


def _line(label: str, load: Load, base: float | None = None) -> str:
    rate = load.requests / load.seconds if load.seconds else 0.0
    events = load.events / load.seconds if load.seconds else 0.0
    text = (
        f"  {label:<34} {rate:9,.0f} req/s {events:10,.0f} events/s  "
        f"p50 {load.percentile(50):6.1f} / p95 {load.percentile(95):6.1f} / "
        f"p99 {load.percentile(99):6.1f} / max {max(load.latencies_ms, default=0.0):6.1f} ms"
    )
    if base:
        text += f"  ratio {events / base:.3f}"
    if load.requests:
        text += (
            f"  CPU µs/req: server {load.server_cpu_s / load.requests * 1e6:,.0f}, "
            f"client {load.client_cpu_s / load.requests * 1e6:,.0f}"
        )
    if load.failed:
        text += f"\n    NOT ACCEPTED: {sum(load.failed.values())} requests: {dict(load.failed)}"
    return text


def measure(name: str, settings: Settings, events: list[Event], raw: dict[int, float],
            seconds: float, connections: int, rounds: int) -> None:  # fmt: skip
    service, context, key, timed = serve(settings)
    try:
        print(f"{name}: raw append (no HTTP)  single events {raw[1]:,.0f} events/s, "
              f"batches of 100 {raw[100]:,.0f} events/s")  # fmt: skip
        run_load(service, key, events, 1, "closed", 1.0, connections)  # warm-up
        single = run_load(service, key, events, 1, "closed", seconds, connections)
        print(_line(f"single events, closed loop ({connections} conn):", single, raw[1]))
        batched = run_load(service, key, events, 100, "closed", seconds, connections)
        print(_line(f"batches of 100, closed loop ({connections} conn):", batched, raw[100]))
        half = single.requests / single.seconds / 2
        pooled = Load()
        for _ in range(rounds):
            timed.share()
            opened = run_load(service, key, events, 1, "open", seconds, connections, rate=half)
            print(_line(f"single events, open loop at {half:,.0f}/s:", opened, raw[1]))
            print(f"    ({timed.share()}; load average {os.getloadavg()[0]:.1f})")
            pooled = pooled.pooled(opened)
        if rounds > 1:
            print(_line(f"  the {rounds} open-loop runs pooled:", pooled, raw[1]))
    finally:
        service.stop()
        context.close()


def main(kafka: str | None, events_n: int, seconds: float, connections: int, seed: int,
         rounds: int = 3) -> None:  # fmt: skip
    events = bench_events(events_n, seed)
    print(f"HTTP API bench: {len(events):,} distinct events (cycled), {seconds:g} s per run, "
          f"{os.cpu_count()} CPUs; server: uvicorn thread in pid {os.getpid()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pulse-bench-api-") as home:
        env = {"PULSE_HOME": home, "PULSE_SERVICE_RATE_LIMIT": "100000000/second"}
        settings = load_settings(environ=env)
        raw_log = LocalLog(Path(home) / "raw-log", settings.log.partitions)
        raw = {size: raw_local(raw_log, events, size, min(seconds, 5.0)) for size in (1, 100)}
        measure("local log", settings, events, raw, seconds, connections, rounds)
        if not kafka:
            print("Kafka: skipped (pass --kafka HOST:PORT)")
            return
        prefix = f"benchapi{uuid.uuid4().hex[:8]}"
        kafka_env = {**env, "PULSE_LOG_BACKEND": "kafka", "PULSE_KAFKA_BOOTSTRAP_SERVERS": kafka,
                     "PULSE_KAFKA_TOPIC_PREFIX": prefix}  # fmt: skip
        settings = load_settings(environ=kafka_env)
        target = KafkaTarget(kafka, prefix, {})
        ensure_topics(target, settings.log.partitions, 1)
        rate = raw_kafka(target, events)
        measure("Kafka", settings, events, {1: rate, 100: rate}, seconds, connections, rounds)
