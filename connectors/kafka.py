"""Apache Kafka through confluent-kafka (librdkafka): topics, a keyed producer, the
Bytewax source and the dead-letter sink. Kafka's quirks live here.

* Topics ``<prefix>.inferences`` / ``<prefix>.feedback`` / ``<prefix>.dead-letters`` /
  ``<prefix>.actions``; the two data topics must have the same partition count (checked
  at start).
* Producers key by `request_id` with ``partitioner=murmur2_random`` — librdkafka's
  default (crc32) does not match Kafka's Java default, and the flow relies on an
  inference and its feedback sharing a partition number.
* The source is one Bytewax partition per partition number, one consumer assigned to
  that partition of both data topics (no consumer group: Bytewax snapshots the offsets).
  A broker outage is logged and waited out: librdkafka reconnects by itself.
* Reading a backlog, the consumer pauses the topic partition that runs ahead of the
  other in event time (:class:`operators.stream_merge.ReadAlignment`) and, on resuming
  it, seeks to the next offset not yet delivered (whatever librdkafka dropped from its
  fetch queue while paused is fetched again; nothing is skipped).
* Bounded, a partition reads up to the high watermarks it found when built, then ends its
  input once the merge stage has emitted every final window (:mod:`connectors.end_gate`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.end_gate import POLL, EndGate, SourceEnd
from connectors.run_control import STOP, exit_write_failed
from connectors.telemetry.consumer_lag import ConsumerLag
from operators.batches import STREAMS, RawBatch, TableRows
from operators.errors import PulseError, WriteFailedError
from operators.stats import STATS
from operators.stream_merge import ReadAlignment

log = logging.getLogger("pulse.kafka")


class _OncePerInterval(logging.Filter):
    """Let a repeated message through once per `interval` seconds (librdkafka logs every
    reconnect attempt of every client)."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg).split("]: ", 1)[-1][:120]
        now = time.monotonic()
        if now - self.last.get(key, -self.interval) < self.interval:
            return False
        self.last[key] = now
        return True


librdkafka_log = logging.getLogger("pulse.kafka.librdkafka")
librdkafka_log.setLevel(logging.ERROR)
librdkafka_log.addFilter(_OncePerInterval(10.0))
OUTAGE_CONFIRMATION = 2.0  # seconds of messages after an error before "consuming again"
DEAD_LETTERS = "dead-letters"
ACTIONS = "actions"  # machine-readable actions for controllers (connectors/actions.py)
OUTPUT_STREAMS = (DEAD_LETTERS, ACTIONS)
Positions = dict[str, int]


class KafkaSetupError(PulseError):
    """Kafka cannot be reached or used as configured; the message says what to change."""


@dataclass(frozen=True)
class KafkaTarget:
    bootstrap_servers: str
    topic_prefix: str
    client_config: dict[str, str] = field(repr=False)  # credentials: never in a repr

    def topic(self, stream: str) -> str:
        return f"{self.topic_prefix}.{stream}"

    def config(self, **extra: Any) -> dict[str, Any]:
        # librdkafka's own log lines go through Python logging, not straight to stderr.
        return {"bootstrap.servers": self.bootstrap_servers, "logger": librdkafka_log,
                **self.client_config, **extra}  # fmt: skip


_Client = TypeVar("_Client", AdminClient, Producer, Consumer)


def kafka_client(kind: type[_Client], config: dict[str, Any]) -> _Client:
    """A librdkafka client; a property it does not take is named, not a traceback."""
    try:
        return kind(config)
    except (KafkaException, ValueError, TypeError) as exc:
        reason = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
        raise KafkaSetupError(
            f"the Kafka client refused its configuration: {reason}; check kafka.client_config "
            "(PULSE_KAFKA_CLIENT_CONFIG) against librdkafka's property names"
        ) from None


def partition_counts(target: KafkaTarget, timeout: float = 10.0) -> dict[str, int]:
    """Partition count of each existing topic of ours (stream -> count)."""
    admin = kafka_client(AdminClient, target.config())
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaSetupError(f"cannot reach Kafka at {target.bootstrap_servers}: {exc}") from exc
    counts = {}
    for stream in (*STREAMS, *OUTPUT_STREAMS):
        topic = metadata.topics.get(target.topic(stream))
        if topic is not None and topic.error is None:
            counts[stream] = len(topic.partitions)
    return counts


def ensure_topics(
    target: KafkaTarget, partitions: int, replication_factor: int, timeout: float = 30.0
) -> int:
    """Create missing topics; returns the data topics' partition count (checked equal)."""
    counts = partition_counts(target)
    missing = [s for s in (*STREAMS, *OUTPUT_STREAMS) if s not in counts]
    if missing:
        admin = kafka_client(AdminClient, target.config())
        new = [NewTopic(target.topic(s), partitions, replication_factor) for s in missing]
        for topic, future in admin.create_topics(new, request_timeout=timeout).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise KafkaSetupError(f"cannot create topic {topic}: {exc}") from exc
        deadline = time.monotonic() + timeout
        while True:
            counts = partition_counts(target)
            if all(s in counts for s in missing) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    data = {counts.get(s) for s in STREAMS}
    if len(data) != 1 or None in data:
        raise KafkaSetupError(
            f"topics {target.topic('inferences')} and {target.topic('feedback')} must exist with "
            f"the same partition count (found {counts}); recreate one of them"
        )
    return counts["inferences"]


class EventProducer:
    """Produces event lines keyed by request_id, placed as the flow expects."""

    def __init__(self, target: KafkaTarget) -> None:
        self.target = target
        self.producer = kafka_client(
            Producer,
            target.config(
                **{
                    "partitioner": "murmur2_random",
                    "enable.idempotence": True,
                    "linger.ms": 20,
                    "compression.type": "lz4",
                    "message.max.bytes": 16 * 1024 * 1024,
                }
            ),
        )
        self.failed: list[str] = []

    def _delivered(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))

    def send(self, stream: str, key: str | bytes, line: bytes) -> None:
        topic = self.target.topic(stream)
        while True:
            try:
                self.producer.produce(topic, key=key, value=line, on_delivery=self._delivered)
                return
            except BufferError:
                self.producer.poll(0.05)

    def flush(self, timeout: float = 60.0) -> None:
        remaining = self.producer.flush(timeout)
        if remaining:
            raise KafkaSetupError(f"{remaining} messages not delivered within {timeout:.0f} s")
        if self.failed:
            raise KafkaSetupError(f"{len(self.failed)} messages failed: {self.failed[0]}")


class KafkaPartition(StatefulSourcePartition[RawBatch, Positions]):
    """Partition N of both data topics, through one consumer."""

    def __init__(
        self,
        target: KafkaTarget,
        partition: int,
        positions: Positions,
        batch_size: int,
        poll_interval: timedelta,
        bounded: bool,
        end_gate: EndGate | None = None,
    ) -> None:
        self.partition = partition
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.topics = {stream: target.topic(stream) for stream in STREAMS}
        self.streams = {topic: stream for stream, topic in self.topics.items()}
        self.positions: Positions = {s: positions.get(s, OFFSET_BEGINNING) for s in STREAMS}
        self._outage_logged = False
        self._outage_since = 0.0
        self.consumer = kafka_client(
            Consumer,
            target.config(
                **{
                    "group.id": "feedback-pulse",  # required by librdkafka; never committed
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 50,
                    "error_cb": self._on_error,
                }
            ),
        )
        self.consumer.assign(
            [TopicPartition(self.topics[s], partition, self.positions[s]) for s in STREAMS]
        )
        self.ends: dict[str, int] | None = None
        if bounded:
            self.ends = {}
            for stream in STREAMS:
                tp = TopicPartition(self.topics[stream], partition)
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=30)
                self.ends[stream] = high
        self.ended: set[str] = set()
        self.caught_up: dict[str, bool | None] = dict.fromkeys(STREAMS)
        self.alignment = ReadAlignment()
        self.paused: set[str] = set()
        self._awake: datetime | None = None
        self._announced = False
        self._end = SourceEnd(end_gate)
        self._lag = ConsumerLag(STATS)

    def _on_error(self, error: KafkaError) -> None:
        """Client-level errors (broker down, all brokers down): librdkafka keeps retrying."""
        if error.fatal():
            log.error("Kafka: fatal client error: %s", error)
        elif not self._outage_logged:
            log.warning("Kafka partition %d: %s (waiting for the broker)", self.partition, error)
            self._outage_logged = True
            self._outage_since = time.monotonic()

    def _position(self, stream: str) -> int:
        position = self.positions[stream]
        return 0 if position < 0 else position

    def next_batch(self) -> list[RawBatch]:
        if STOP.is_set() or self._end.over():
            raise StopIteration
        if self._end.waiting:  # everything delivered: the merge stage drains (end_gate.py)
            self._awake = datetime.now(UTC) + POLL
            return []
        lines: dict[str, list[bytes]] = {s: [] for s in STREAMS}
        offsets: dict[str, list[int]] = {s: [] for s in STREAMS}
        eof: set[str] = set()
        for msg in self.consumer.consume(self.batch_size, 0):
            error = msg.error()
            stream = self.streams.get(msg.topic() or "")
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and stream is not None:
                    eof.add(stream)
                elif error.fatal():
                    raise KafkaException(error)
                else:
                    self._on_error(error)
                continue
            if stream is None or stream in self.ended:
                continue
            offset = msg.offset() or 0
            if self.ends is not None and offset >= self.ends[stream]:
                continue  # arrived after a bounded run started
            lines[stream].append(msg.value() or b"")
            offsets[stream].append(offset)
            self.positions[stream] = offset + 1
            # Messages fetched before the outage keep arriving for a while: only later
            # ones tell the broker is back.
            if self._outage_logged and time.monotonic() - self._outage_since > OUTAGE_CONFIRMATION:
                log.info("Kafka partition %d: consuming again", self.partition)
                self._outage_logged = False
        out = []
        for stream in STREAMS:
            if stream in self.ended:
                continue
            caught_up = self.caught_up[stream]
            if lines[stream]:
                caught_up = False
            if stream in eof:
                caught_up = True
            ended = self.ends is not None and self._position(stream) >= self.ends[stream]
            if ended:
                caught_up = True
                self.ended.add(stream)
            if lines[stream] or ended or caught_up != self.caught_up[stream] or not self._announced:
                out.append(
                    RawBatch(
                        self.partition,
                        stream,
                        self.topics[stream],
                        lines[stream],
                        offsets[stream],
                        caught_up=bool(caught_up),
                        end_of_input=ended,
                    )
                )
                self.caught_up[stream] = caught_up
        self._announced = True
        self._lag.sample(self.consumer, self.topics, self.partition, self.positions)
        self._align(lines)
        if self.ends is not None and len(self.ended) == len(STREAMS):
            self._end.input_ended()
        idle = not any(lines.values())
        self._awake = datetime.now(UTC) + self.poll_interval if idle else None
        return out

    def _align(self, lines: dict[str, list[bytes]]) -> None:
        """Pause the stream read ahead of the other in event time; resume it (from the
        next offset not delivered) once the other caught up with it."""
        for stream in STREAMS:
            self.alignment.read(stream, lines[stream])
        for stream in STREAMS:
            ahead = self.alignment.ahead(stream, self.ended, self.caught_up)
            tp = TopicPartition(self.topics[stream], self.partition)
            if ahead and stream not in self.paused:
                self.consumer.pause([tp])
                self.paused.add(stream)
            elif not ahead and stream in self.paused:
                self.consumer.resume([tp])
                try:
                    self.consumer.seek(
                        TopicPartition(self.topics[stream], self.partition, self.positions[stream])
                    )
                except KafkaException as exc:  # e.g. mid-outage: stay paused, try next poll
                    self.consumer.pause([tp])
                    log.info("Kafka partition %d: %s stays paused: %s", self.partition, stream, exc)
                    continue
                self.paused.discard(stream)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> Positions:
        return dict(self.positions)

    def close(self) -> None:
        self.consumer.close()


class KafkaEventSource(FixedPartitionedSource[RawBatch, Positions]):
    def __init__(
        self,
        target: KafkaTarget,
        *,
        partitions: int,
        batch_size: int,
        poll_interval_ms: int,
        bounded: bool,
        end_gate: EndGate | None = None,
    ) -> None:
        """`end_gate`: a bounded run's end waits for the merge stage (end_gate.py)."""
        self.target = target
        self.partitions = partitions
        self.batch_size = batch_size
        self.poll_interval = timedelta(milliseconds=poll_interval_ms)
        self.bounded = bounded
        self.end_gate = end_gate

    def list_parts(self) -> list[str]:
        return [str(p) for p in range(self.partitions)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: Positions | None
    ) -> KafkaPartition:
        return KafkaPartition(
            self.target,
            int(for_part),
            resume_state or {},
            self.batch_size,
            self.poll_interval,
            self.bounded,
            self.end_gate,
        )


class AcknowledgedProducer:
    """An idempotent producer to one topic of ours whose :meth:`confirm` returns once the
    broker has acknowledged every message (the dead-letter and actions sinks call it from
    their snapshot, so a committed snapshot never covers a message the broker lacks).

    Broker outages are waited out (no message timeout); a message the broker refuses for
    good raises :class:`WriteFailedError`."""

    def __init__(self, target: KafkaTarget, stream: str) -> None:
        self.topic = target.topic(stream)
        self.failed: KafkaError | None = None
        self.producer = kafka_client(
            Producer,
            target.config(
                **{
                    "linger.ms": 50,
                    "message.max.bytes": 16 << 20,
                    "enable.idempotence": True,  # no duplicates from librdkafka's own retries
                    "acks": "all",
                    "message.timeout.ms": 0,  # retry through broker outages, like the source waits
                    "error_cb": lambda error: log.warning("Kafka (%s): %s", self.topic, error),
                }
            ),
        )

    def produce(self, key: str, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.topic, key=key, value=value, on_delivery=self._delivered)
                return
            except BufferError:  # the local queue is full: backpressure
                self.producer.poll(0.05)

    def _delivered(self, error: KafkaError | None, _msg: Any) -> None:
        if error is not None and self.failed is None:
            self.failed = error

    def poll(self) -> None:
        """Serve delivery reports; raise if a message failed for good."""
        self.producer.poll(0)
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.failed is not None:
            raise WriteFailedError(f"topic {self.topic}: delivery failed: {self.failed}")

    def confirm(self) -> None:
        """Wait until the broker acknowledged every message produced."""
        waited = False
        while self.producer.flush(5.0):
            log.warning("topic %s: waiting for the broker to acknowledge", self.topic)
            waited = True
        if waited:
            log.info("topic %s: the broker acknowledged; going on", self.topic)
        self._raise_if_failed()


def exit_if_failed(step: Callable[[], None]) -> None:
    """Run a sink's produce or confirm step; a permanent failure ends the process (exit 3:
    raising inside a Bytewax sink would hang it, see `exit_write_failed`)."""
    try:
        step()
    except WriteFailedError as exc:
        exit_write_failed("%s", exc)


class _DeadLetterPartition(StatefulSinkPartition[TableRows, None]):
    """Produces dead letters; every snapshot waits until all are acknowledged, so a
    committed snapshot never covers a dead letter the broker does not have."""

    def __init__(self, target: KafkaTarget) -> None:
        self.producer = AcknowledgedProducer(target, DEAD_LETTERS)

    def write_batch(self, items: list[TableRows]) -> None:
        for rows in items:
            c = rows.columns
            for i in range(len(rows)):
                position = (c["topic"][i], c["partition"][i], c["offset"][i])
                value = json.dumps(
                    {
                        "topic": position[0],
                        "partition": position[1],
                        "offset": position[2],
                        "error": c["error"][i],
                        "reason": c["reason"][i],
                        "raw": c["raw"][i].decode("utf-8", errors="replace"),
                    }
                ).encode()
                self.producer.produce(f"{position[0]}:{position[1]}:{position[2]}", value)
        exit_if_failed(self.producer.poll)

    def snapshot(self) -> None:
        exit_if_failed(self.producer.confirm)
        return None

    def close(self) -> None:
        self.snapshot()


class DeadLetterTopicSink(FixedPartitionedSink[TableRows, None]):
    """Dead letters also go to `<prefix>.dead-letters`, keyed by source position
    ``topic:partition:offset``. At least once: a replay after a crash may produce a
    position again (consumers dedup by key, or compact the topic); never lost."""

    def __init__(self, target: KafkaTarget) -> None:
        self.target = target

    def list_parts(self) -> list[str]:
        return ["dead-letters"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _DeadLetterPartition:
        return _DeadLetterPartition(self.target)
