"""The actions stream through a real Bytewax flow: the local log's `actions` stream (read
back, data streams untouched, a replay adds nothing) and ``<prefix>.actions`` on the real
broker (keyed by idempotency key, acknowledged before the run ends)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from config.settings import Settings, load_settings
from connectors.actions import SCHEMA, ActionSink, read_actions
from connectors.kafka import AcknowledgedProducer, KafkaTarget, ensure_topics
from connectors.local_log import LocalLog
from operators.batches import STREAMS
from operators.errors import WriteFailedError
from operators.rules.alerts import Action

ROLLBACK = Action(
    kind="rollback",
    rule="canary-thumbs-down",
    fingerprint="f00d",
    episode=1_767_225_600_000,
    event_time=1_767_225_660_000,  # 2026-01-01T00:01:00Z
    dims=(("deployment", "canary"), ("model_id", "m1")),
    evidence={"log_e_value": np.float64(5.2), "looks": np.int64(3), "ci": (0.01, float("inf"))},
    from_version="v2",
    to_version="v1",
)
RETRAIN = Action(
    kind="retrain",
    rule="confidence-drift",
    fingerprint="beef",
    episode=1_767_225_600_000,
    event_time=1_767_225_720_000,
    dims=(("model_id", "m2"),),
    evidence={"psi": 0.31},
)


def _settings(home: Path, **env: str) -> Settings:
    return load_settings(environ={"PULSE_HOME": str(home), **env})


def _run(settings: Settings, actions: list[Action]) -> None:
    flow = Dataflow("actions_test")
    items = op.input("in", flow, TestingSource([(a.fingerprint, a) for a in actions]))
    op.output("actions", items, ActionSink.for_settings(settings))
    run_main(flow)


def test_local_actions_are_read_back_as_versioned_records(home: Path) -> None:
    settings = _settings(home)
    _run(settings, [ROLLBACK, RETRAIN])

    records = read_actions(settings)
    assert [r["kind"] for r in records] == ["rollback", "retrain"]
    rollback = records[0]
    assert rollback == {
        "schema": SCHEMA,
        "kind": "rollback",
        "rule": "canary-thumbs-down",
        "fingerprint": "f00d",
        "episode": 1_767_225_600_000,
        "event_time": "2026-01-01T00:01:00.000+00:00",
        "event_time_ms": 1_767_225_660_000,
        "dims": {"deployment": "canary", "model_id": "m1"},
        "model_id": "m1",
        "from_version": "v2",
        "to_version": "v1",
        "evidence": {"log_e_value": 5.2, "looks": 3, "ci": [0.01, None]},
        "idempotency_key": "f00d:1767225600000:rollback",
    }
    assert records[1]["model_id"] == "m2" and records[1]["from_version"] is None
    # Its own stream of the local log, partition 0; the data streams are left alone.
    log = LocalLog(home / "log")
    assert [p.name for p in (home / "log" / "actions").iterdir()] == ["p0000"]
    assert all(log.end_position(s, p) == 0 for s in STREAMS for p in range(log.partitions))


def test_a_replayed_action_is_not_appended_again(home: Path) -> None:
    settings = _settings(home)
    _run(settings, [ROLLBACK])
    _run(settings, [ROLLBACK, RETRAIN])  # a replay re-sends the rollback, then a new one

    raw = read_actions(settings, dedup=False)
    assert [r["idempotency_key"] for r in raw] == [
        ROLLBACK.idempotency_key,
        RETRAIN.idempotency_key,
    ]


def _read_topic(bootstrap: str, topic: str, partitions: int) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "actions-test", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages, eof = [], set()
    while len(eof) < partitions:
        for msg in consumer.consume(100, 5):
            if msg.error():
                eof.add(msg.partition())
            else:
                messages.append((msg.key() or b"", msg.value() or b""))
    consumer.close()
    return messages


@pytest.mark.kafka
def test_kafka_actions_are_keyed_by_idempotency_key(
    home: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = _settings(
        home,
        PULSE_LOG_BACKEND="kafka",
        PULSE_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        PULSE_KAFKA_TOPIC_PREFIX=topic_prefix,
    )
    target = KafkaTarget(kafka_bootstrap, topic_prefix, {})
    partitions = ensure_topics(target, partitions=2, replication_factor=1)
    _run(settings, [ROLLBACK, RETRAIN])

    messages = _read_topic(kafka_bootstrap, f"{topic_prefix}.actions", partitions)
    by_key = {key.decode(): json.loads(value) for key, value in messages}
    assert len(messages) == 2
    assert set(by_key) == {ROLLBACK.idempotency_key, RETRAIN.idempotency_key}
    rollback = by_key[ROLLBACK.idempotency_key]
    assert rollback["schema"] == SCHEMA
    assert (rollback["from_version"], rollback["to_version"]) == ("v2", "v1")
    assert not (home / "log" / "actions").exists()


@pytest.mark.kafka
def test_a_message_the_broker_refuses_raises_write_failed(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    target = KafkaTarget(kafka_bootstrap, topic_prefix, {})
    small = NewTopic(target.topic("actions"), 1, 1, config={"max.message.bytes": "1024"})
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([small])[small.topic].result(timeout=30)
    producer = AcknowledgedProducer(target, "actions")
    producer.produce("too-big", b"x" * 4096)  # over the topic's max.message.bytes: for good
    with pytest.raises(WriteFailedError, match=f"{topic_prefix}.actions"):
        producer.confirm()
