"""Kafka consumer lag per partition, sampled by the real source against a real broker."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from connectors.kafka import EventProducer, KafkaPartition, KafkaTarget, ensure_topics
from connectors.telemetry.consumer_lag import ConsumerLag
from operators.stats import STATS, FlowStats

pytestmark = pytest.mark.kafka

WRITTEN = {"inferences": 30, "feedback": 12}


def test_the_source_reports_its_lag_per_topic_partition(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    target = KafkaTarget(kafka_bootstrap, topic_prefix, {})
    ensure_topics(target, partitions=1, replication_factor=1)
    producer = EventProducer(target)
    for stream, n in WRITTEN.items():
        for i in range(n):
            producer.send(stream, f"k{i}", b"{}")
    producer.flush()
    source = KafkaPartition(
        target, 0, {}, batch_size=5, poll_interval=timedelta(milliseconds=10), bounded=False
    )
    topics = {stream: target.topic(stream) for stream in WRITTEN}
    try:
        # Poll until the source has read and sampled (the lag comes from librdkafka's
        # cache of the log end, which the first fetch responses fill: no request of its own).
        for _ in range(3000):
            source.next_batch()
            read = all(source.positions[s] > 0 for s in WRITTEN)
            if read and all((topic, 0) in STATS.kafka_lag for topic in topics.values()):
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"nothing read or no lag sampled: {source.positions}, {STATS.kafka_lag}")
        stats = FlowStats()
        ConsumerLag(stats, interval=0).sample(source.consumer, topics, 0, source.positions)
        assert stats.kafka_lag == {
            (topic, 0): WRITTEN[stream] - source.positions[stream]
            for stream, topic in topics.items()
        }
        for stream, topic in topics.items():  # what the source sampled itself
            assert 0 <= STATS.kafka_lag[(topic, 0)] <= WRITTEN[stream]
    finally:
        source.close()
