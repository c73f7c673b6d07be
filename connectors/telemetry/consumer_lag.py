"""Kafka consumer lag per topic partition, sampled where the source polls.

Cheap: at most once per `interval` seconds, and from librdkafka's cached high watermark
(``get_watermark_offsets(cached=True)``: the offset the last fetch response reported; no
request to the broker). The lag is that minus the next offset the source will read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from operators.stats import FlowStats

SAMPLE_INTERVAL_S = 5.0


class ConsumerLag:
    """Samples one consumer's lag into `stats.kafka_lag[(topic, partition)]`."""

    def __init__(self, stats: FlowStats, interval: float = SAMPLE_INTERVAL_S) -> None:
        self.stats = stats
        self.interval = interval
        self._next = 0.0

    def sample(
        self, consumer: Any, topics: Mapping[Any, str], partition: int, positions: Mapping[Any, int]
    ) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        from confluent_kafka import TopicPartition

        for stream, topic in topics.items():
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high < 0:  # no fetch response yet: try again at the next poll
                continue
            position = positions.get(stream, -1)
            start = position if position >= 0 else max(low, 0)
            self.stats.kafka_lag[(topic, partition)] = max(0, high - start)
            self._next = now + self.interval
