"""Kafka against a real broker: topics, partition checks, producer placement, the
source's event-time alignment."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.kafka import (
    EventProducer,
    KafkaEventSource,
    KafkaSetupError,
    KafkaTarget,
    ensure_topics,
    partition_counts,
)
from operators.partitioning import partition_for
from tests.connectors.alignment import FEEDBACK, INFERENCES, read_aligned

pytestmark = pytest.mark.kafka


def test_topics_are_created_once_with_the_configured_partitions(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    target = KafkaTarget(kafka_bootstrap, topic_prefix, {})
    assert ensure_topics(target, partitions=3, replication_factor=1) == 3
    assert partition_counts(target) == {
        "inferences": 3, "feedback": 3, "dead-letters": 3, "actions": 3
    }  # fmt: skip
    # Existing topics are kept, whatever the setting says now.
    assert ensure_topics(target, partitions=5, replication_factor=1) == 3


def test_data_topics_with_different_partition_counts_fail_clearly(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for topic, n in ((f"{topic_prefix}.inferences", 2), (f"{topic_prefix}.feedback", 3)):
        admin.create_topics([NewTopic(topic, n, 1)])[topic].result()
    with pytest.raises(KafkaSetupError, match="same partition count"):
        ensure_topics(
            KafkaTarget(kafka_bootstrap, topic_prefix, {}), partitions=2, replication_factor=1
        )


def test_producer_places_events_by_kafkas_default_partitioner(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    target = KafkaTarget(kafka_bootstrap, topic_prefix, {})
    ensure_topics(target, partitions=6, replication_factor=1)
    producer = EventProducer(target)
    keys = [f"req-{i}" for i in range(120)]
    for key in keys:
        producer.send("feedback", key, key.encode())
    producer.flush()
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": "t", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(f"{topic_prefix}.feedback", p, 0) for p in range(6)])
    placed, eof = {}, set()
    while len(eof) < 6:
        for msg in consumer.consume(200, 5):
            if msg.error():
                eof.add(msg.partition())
            else:
                placed[msg.key().decode()] = msg.partition()
    consumer.close()
    assert placed == {key: partition_for(key, 6) for key in keys}


def test_a_backlog_is_consumed_aligned_in_event_time_and_exactly_once(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The source pauses the topic partition that runs ahead and, resuming it, seeks to
    the next offset it has not delivered: every message once, in order, streams close."""
    target = KafkaTarget(kafka_bootstrap, topic_prefix, {})
    ensure_topics(target, partitions=1, replication_factor=1)
    producer = EventProducer(target)
    for stream, lines in (("inferences", INFERENCES), ("feedback", FEEDBACK)):
        for line in lines:
            producer.send(stream, "k", line)
    producer.flush()
    source = KafkaEventSource(
        target, partitions=1, batch_size=20, poll_interval_ms=10, bounded=True
    )
    part = source.build_part("events", "0", None)
    try:
        got, gap = read_aligned(part.next_batch)
    finally:
        part.close()
    assert got == {"inferences": INFERENCES, "feedback": FEEDBACK}
    assert gap <= 60_000  # unaligned, inferences are fetched up to ~540 s ahead
