"""The durable event log behind POST /v1/inferences and /v1/feedback.

`append` returns only once every event is durable, else raises
:class:`~connectors.service.context.EventLogUnavailable` (the API answers 503 with
Retry-After and reports nothing accepted):

* :class:`LocalDurableLog`: the embedded log; :meth:`connectors.local_log.LocalLog.append_many`
  fsyncs every partition it wrote (together) before it returns, and concurrent requests
  share those fsyncs (group commit).
  Events are placed as :class:`connectors.event_writer.LogWriter` places them (partition
  by `request_id`).
* :class:`KafkaDurableLog`: a confluent-kafka producer with ``acks=all`` and
  ``enable.idempotence=true``, keyed like :class:`connectors.kafka.EventProducer`
  (``murmur2_random`` on `request_id`). `append` waits for the delivery report of every
  message; a full local queue, a delivery error or the timeout is a 503. The first append
  creates missing topics as the flow would (`pulse serve` may start before any flow).

The reverse is possible, and safe: after a 503 (or a crash mid-request) some events of
the request may still reach the log (librdkafka keeps retrying queued messages until
``message.timeout.ms``; a local append may have written some partitions). Clients retry
the whole request and the flow counts each feedback `event_id` (and each inference
`request_id`) once, so a retry never double-counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from config.settings import Settings
from connectors.event_writer import LogWriter
from connectors.kafka import KafkaSetupError, KafkaTarget, ensure_topics, kafka_client
from connectors.local_log import LocalLog
from connectors.service.context import DurableLog, EventLogUnavailable, Routed
from operators.errors import PulseError

QUEUE_FULL_RETRY_S = 1  # the producer drains its queue within about a second
OUTAGE_RETRY_S = 5  # a broker outage lasts longer: do not hammer it
REACHABLE_TIMEOUT_S = 2.0


class _Done:
    """How a request learns its events' fate: a thread waits on an Event, a coroutine
    awaits a future the log's thread resolves through its loop (no thread-pool hop)."""

    __slots__ = ("_event", "_future", "_loop", "error")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.error: Exception | None = None
        self._loop = loop
        self._future: asyncio.Future[None] | None = None
        self._event: threading.Event | None = None
        if loop is None:
            self._event = threading.Event()
        else:
            self._future = loop.create_future()

    def set(self, error: Exception | None = None) -> None:
        """From the log's thread: the outcome (None: durable)."""
        self.error = error
        if self._event is not None:
            self._event.set()
        elif self._loop is not None and self._future is not None:
            # RuntimeError: the loop closed (the service stopped) and nobody waits.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, self._future)

    def wait(self, timeout_s: float) -> bool:
        assert self._event is not None
        return self._event.wait(timeout_s)

    async def wait_async(self, timeout_s: float) -> bool:
        assert self._future is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._future), timeout_s)
        except TimeoutError:
            return False
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _waiter() -> _Done:
    return _Done(asyncio.get_running_loop())


class _Pending:
    """One request's events, waiting for the committer."""

    __slots__ = ("done", "events", "queued")

    def __init__(self, events: Sequence[Routed], done: _Done) -> None:
        self.events = events
        self.done = done
        self.queued = time.perf_counter()


class LocalDurableLog:
    """Appends to the embedded log with group commit: one thread writes what every
    waiting request brought to its partitions, fsyncs them together
    (:meth:`LocalLog.append_many`), then releases those requests. Concurrent requests so
    share their fsyncs instead of queueing one fsync each per partition. (Several such
    threads, so that rounds overlap, were measured and gained nothing: docs/performance.md.)"""

    def __init__(self, log: LocalLog) -> None:
        self.log = log
        self._writer = LogWriter(log)
        self._queue: list[_Pending] = []
        self._wake = threading.Condition()
        self._closed = False
        # A list here records each request's time from its enqueue to its events being
        # durable (ms): the log's own share, without the event loop's delay in resuming
        # the awaiting request (scripts/bench_api.py).
        self.durable_ms: list[float] | None = None
        self._committer = threading.Thread(
            target=self._commit, name="pulse-ingest-log", daemon=True
        )
        self._committer.start()

    def append(self, events: Sequence[Routed], timeout_s: float) -> None:
        done = self._enqueue(events, _Done())
        self._outcome(done, done.wait(timeout_s), timeout_s)

    async def append_async(self, events: Sequence[Routed], timeout_s: float) -> None:
        done = self._enqueue(events, _waiter())
        self._outcome(done, await done.wait_async(timeout_s), timeout_s)

    def _enqueue(self, events: Sequence[Routed], done: _Done) -> _Done:
        with self._wake:
            if self._closed:
                raise EventLogUnavailable("the service is stopping", OUTAGE_RETRY_S)
            self._queue.append(_Pending(events, done))
            self._wake.notify()
        return done

    @staticmethod
    def _outcome(done: _Done, in_time: bool, timeout_s: float) -> None:
        if not in_time:
            reason = f"the local log did not confirm within {timeout_s:g} s (disk too slow)"
            raise EventLogUnavailable(reason, OUTAGE_RETRY_S)
        if done.error is not None:
            reason = f"the local log cannot append: {done.error}"
            raise EventLogUnavailable(reason, OUTAGE_RETRY_S) from done.error

    def _commit(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue:
                    return  # closed, and nothing left to write
                batch, self._queue = self._queue, []
            error: Exception | None = None
            try:
                self._write(batch)
            except (OSError, PulseError) as exc:  # a full disk, a damaged log directory
                error = exc
            if (durable_ms := self.durable_ms) is not None:
                now = time.perf_counter()
                durable_ms.extend((now - pending.queued) * 1000 for pending in batch)
            for pending in batch:
                pending.done.set(error)

    def _write(self, batch: list[_Pending]) -> None:
        """Placed as every local-log producer places events (one writer for all)."""
        self._writer.write(event for pending in batch for event in pending.events)

    def reachable(self) -> bool:
        return self._committer.is_alive() and os.access(self.log.root, os.W_OK)

    def close(self) -> None:
        """Write what is queued, then stop (and close the log's open files)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._committer.join(10.0)
        if not self._committer.is_alive():
            self.log.close()


class _Delivery:
    """The delivery reports of one request's messages (set from the poll thread)."""

    def __init__(self, expected: int, done: _Done) -> None:
        self.remaining = expected
        self.error: KafkaError | None = None
        self.done = done
        self._lock = threading.Lock()
        self._told = False
        if expected == 0:
            self._tell()

    def report(self, error: KafkaError | None, _msg: Any) -> None:
        with self._lock:
            if error is not None and self.error is None:
                self.error = error
            self.remaining -= 1
            if self.remaining == 0 or error is not None:
                self._tell()

    def _tell(self) -> None:
        if not self._told:
            self._told = True
            self.done.set()


class KafkaDurableLog:
    """An idempotent acks=all producer shared by every request; a thread serves its
    delivery reports, and each request waits for its own."""

    def __init__(
        self,
        target: KafkaTarget,
        partitions: int,
        replication_factor: int,
        message_timeout_ms: int = 120_000,
    ) -> None:
        self.target = target
        self._topics = (partitions, replication_factor)
        self._topics_ready = False
        self._topics_lock = threading.Lock()
        self.producer = kafka_client(
            Producer,
            target.config(
                **{
                    "partitioner": "murmur2_random",  # as the flow requires (connectors.kafka)
                    "enable.idempotence": True,
                    "acks": "all",
                    # A request waits for its delivery report: librdkafka's default 5 ms
                    # linger was 6 ms of a single event's 11 ms median (docs/performance.md);
                    # a batch's messages still share produce requests (queued while one is
                    # in flight).
                    "linger.ms": 0,
                    "compression.type": "lz4",
                    "message.max.bytes": 16 * 1024 * 1024,
                    # Queued messages are retried this long (then fail); a request waits
                    # less (service.ingest_timeout), see the module docstring.
                    "message.timeout.ms": message_timeout_ms,
                }
            ),
        )
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="pulse-ingest-kafka", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self.producer.poll(0.05)

    def _ensure_topics(self, timeout_s: float) -> None:
        with self._topics_lock:
            if self._topics_ready:
                return
            try:
                ensure_topics(self.target, *self._topics, timeout=timeout_s)
            except KafkaSetupError as exc:
                raise EventLogUnavailable(str(exc), OUTAGE_RETRY_S) from exc
            self._topics_ready = True

    def append(self, events: Sequence[Routed], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        if not self._topics_ready:
            self._ensure_topics(timeout_s)
        delivery = self._produce(events, _Done())
        in_time = delivery.done.wait(max(0.0, deadline - time.monotonic()))
        self._outcome(delivery, in_time, len(events), timeout_s)

    async def append_async(self, events: Sequence[Routed], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        if not self._topics_ready:  # once per process: a metadata round trip off the loop
            await asyncio.to_thread(self._ensure_topics, timeout_s)
        delivery = self._produce(events, _waiter())
        in_time = await delivery.done.wait_async(max(0.0, deadline - time.monotonic()))
        self._outcome(delivery, in_time, len(events), timeout_s)

    def _produce(self, events: Sequence[Routed], done: _Done) -> _Delivery:
        """Every event handed to the producer (non-blocking: librdkafka queues it)."""
        delivery = _Delivery(len(events), done)
        for stream, key, line in events:
            try:
                self.producer.produce(
                    self.target.topic(stream), key=key, value=line, on_delivery=delivery.report
                )
            except BufferError:
                raise EventLogUnavailable(
                    "the Kafka producer's queue is full", QUEUE_FULL_RETRY_S
                ) from None
            except KafkaException as exc:
                reason = f"Kafka refused the event: {exc}"
                raise EventLogUnavailable(reason, OUTAGE_RETRY_S) from exc
        return delivery

    @staticmethod
    def _outcome(delivery: _Delivery, in_time: bool, count: int, timeout_s: float) -> None:
        if not in_time:
            raise EventLogUnavailable(
                f"Kafka did not acknowledge {delivery.remaining} of {count} events within "
                f"{timeout_s:g} s (broker down or slow)",
                OUTAGE_RETRY_S,
            )
        if delivery.error is not None:
            raise EventLogUnavailable(f"Kafka delivery failed: {delivery.error}", OUTAGE_RETRY_S)

    def reachable(self) -> bool:
        """A metadata request answered within a short timeout."""
        try:
            metadata = self.producer.list_topics(timeout=REACHABLE_TIMEOUT_S)
        except KafkaException:
            return False
        return bool(metadata.brokers)

    def close(self) -> None:
        self.producer.flush(5.0)
        self._closed.set()
        self._poller.join(1.0)


def durable_log(settings: Settings) -> DurableLog | None:
    """The configured log as a :class:`DurableLog` (None: ingestion answers 503)."""
    if settings.log.backend == "local":
        root = settings.home_dir / "log"
        return LocalDurableLog(LocalLog(root, settings.log.partitions, settings.log.segment_bytes))
    k = settings.kafka
    target = KafkaTarget(k.bootstrap_servers, k.topic_prefix, dict(k.client_config))
    return KafkaDurableLog(target, settings.log.partitions, k.replication_factor)
