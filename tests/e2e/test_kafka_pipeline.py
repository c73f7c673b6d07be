"""End to end on a real Kafka broker: `pulse generate --to kafka` with a seed, the bounded
flow reading the topics, ClickHouse checked against an independent computation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from operators.synthetic import TrafficGenerator, TrafficProfile
from tests.conftest import Store, pulse_env, run_pulse
from tests.e2e.checks import assert_store_matches_truth

pytestmark = pytest.mark.kafka

SEED, DURATION, RATE, LATE = 12, 240, 30, 0.01


def _read_topic(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-reader",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values, eof = [], set()
    while len(eof) < partitions:
        for msg in consumer.consume(500, 5):
            if msg.error():
                eof.add(msg.partition())
            else:
                values.append(msg.value())
    consumer.close()
    return values


def test_kafka_generate_run_bounded_matches_an_independent_computation(
    home: Path, store: Store, kafka_bootstrap: str, topic_prefix: str
) -> None:
    env = pulse_env(
        home,
        PULSE_LOG_BACKEND="kafka",
        PULSE_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        PULSE_KAFKA_TOPIC_PREFIX=topic_prefix,
    )
    run_pulse(
        [
            "generate",
            "--to",
            "kafka",
            "--seed",
            str(SEED),
            "--duration",
            str(DURATION),
            "--rate",
            str(RATE),
            "--late-rate",
            str(LATE),
        ],
        env,
    )
    run_pulse(["run", "--bounded"], env)
    events = list(
        TrafficGenerator(
            TrafficProfile(seed=SEED, duration_s=DURATION, rate=RATE, late_rate=LATE)
        ).events()
    )
    assert_store_matches_truth(store, events)

    # Dead letters also reach <prefix>.dead-letters, keyed by source position.
    dead = [json.loads(v) for v in _read_topic(kafka_bootstrap, f"{topic_prefix}.dead-letters", 4)]
    assert sorted(d["raw"].encode() for d in dead) == sorted(e.line for e in events if e.invalid)
    assert all(
        d["topic"] in (f"{topic_prefix}.feedback", f"{topic_prefix}.inferences") for d in dead
    )
