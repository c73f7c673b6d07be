"""Kafka setup against a real broker: topics, partition checks, producer placement."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.kafka import (
    EventProducer,
    KafkaSetupError,
    KafkaTarget,
    ensure_topics,
    partition_counts,
)
from operators.partitioning import partition_for

pytestmark = pytest.mark.kafka


def test_topics_are_created_once_with_the_configured_partitions(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    target = KafkaTarget(kafka_bootstrap, topic_prefix, {})
    assert ensure_topics(target, partitions=3, replication_factor=1) == 3
    assert partition_counts(target) == {"inferences": 3, "feedback": 3, "dead-letters": 3}
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
