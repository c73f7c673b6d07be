"""Ingestion into Kafka over real HTTP: keyed as the flow requires, 503 while the broker is
down, accepted again once it is back, and nothing accepted is ever lost."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Consumer, TopicPartition

from config.settings import Settings
from connectors.ingest_log import KafkaDurableLog, durable_log
from connectors.kafka import partition_counts
from dataflows.feedback import kafka_target
from operators.partitioning import partition_for
from tests.conftest import ROOT, Store, pulse_env, run_pulse
from tests.service.conftest import RunningService, ServiceFactory
from tests.service.test_ingest import feedback, inference, settings_for

pytestmark = pytest.mark.kafka

OWN_PORT = 19492  # this file's own broker, stopped and restarted by the outage test
PARTITIONS = 4


def _local_kafka(*args: str) -> None:
    script = str(ROOT / "scripts" / "local_kafka.py")
    subprocess.run(
        [sys.executable, script, *args, "--port", str(OWN_PORT)], check=True, timeout=600
    )


@pytest.fixture
def own_broker() -> Iterator[str]:
    _local_kafka("start", "--fresh")
    yield f"127.0.0.1:{OWN_PORT}"
    _local_kafka("stop")


def kafka_settings(home: Path, bootstrap: str, prefix: str, **env: str) -> Settings:
    return settings_for(
        home,
        PULSE_LOG_BACKEND="kafka",
        PULSE_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        PULSE_KAFKA_TOPIC_PREFIX=prefix,
        **env,
    )


def start(service: ServiceFactory, settings: Settings) -> RunningService:
    """A service on a Kafka log whose topics do not exist yet (its first append makes them)."""
    log = durable_log(settings)
    assert isinstance(log, KafkaDurableLog)
    return service(settings=settings, log=log)


def read_topic(bootstrap: str, topic: str) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of every message now in `topic`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-reader",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    found: list[tuple[int, bytes, bytes]] = []
    eof: set[int] = set()
    while len(eof) < PARTITIONS:
        for msg in consumer.consume(500, 5):
            if msg.error():
                eof.add(msg.partition() or 0)
            else:
                found.append((msg.partition() or 0, msg.key() or b"", msg.value() or b""))
    consumer.close()
    return found


def test_accepted_events_are_in_the_topic_keyed_by_request_id(
    service: ServiceFactory, home: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    running = start(service, kafka_settings(home, kafka_bootstrap, topic_prefix))
    sent = [feedback(f"e{i}", f"r{i}") for i in range(30)]
    with running.client() as client:
        response = client.post("/v1/feedback", json=[*sent, feedback("bad", "r1", kind="x")])
    assert response.status_code == 202
    assert response.json()["accepted"] == 30
    counts = partition_counts(kafka_target(running.context.settings))
    assert counts["inferences"] == counts["feedback"] == PARTITIONS
    found = read_topic(kafka_bootstrap, f"{topic_prefix}.feedback")
    assert sorted(key.decode() for _, key, _ in found) == sorted(e["request_id"] for e in sent)
    assert all(p == partition_for(key, PARTITIONS) for p, key, _ in found)
    assert read_topic(kafka_bootstrap, f"{topic_prefix}.inferences") == []
    assert running.context.log is not None and running.context.log.reachable()


def _event_ids(bootstrap: str, prefix: str) -> list[str]:
    return [
        msgspec.json.decode(value)["event_id"]
        for _, _, value in read_topic(bootstrap, f"{prefix}.feedback")
    ]


def test_503_while_the_broker_is_down_then_accepted_and_nothing_accepted_is_lost(
    service: ServiceFactory, home: Path, store: Store, own_broker: str, topic_prefix: str
) -> None:
    settings = kafka_settings(home, own_broker, topic_prefix, PULSE_SERVICE_INGEST_TIMEOUT="2s")
    running = start(service, settings)
    log = running.context.log
    assert log is not None
    accepted: list[str] = []
    before = [feedback(f"a{i}", f"r{i}") for i in range(10)]
    during = [feedback(f"b{i}", f"r{i}") for i in range(10)]
    with running.client() as client:
        assert (
            client.post("/v1/inferences", json=[inference(f"r{i}") for i in range(10)]).status_code
            == 202
        )
        response = client.post("/v1/feedback", json=before)
        assert response.status_code == 202
        accepted += [r["event_id"] for r in response.json()["results"]]

        _local_kafka("stop")
        assert not log.reachable()
        down = client.post("/v1/feedback", json=during)
        assert down.status_code == 503, down.text
        assert int(down.headers["Retry-After"]) >= 1
        assert "nothing was accepted" in down.json()["detail"]

        _local_kafka("start")
        for _attempt in range(30):  # the client retries the same request until accepted
            response = client.post("/v1/feedback", json=during)
            if response.status_code == 202:
                break
            assert response.status_code == 503
        assert response.status_code == 202
        accepted += [r["event_id"] for r in response.json()["results"]]
    assert log.reachable()

    # Every event reported accepted is in the topic (some of the refused request's may be
    # there twice: librdkafka delivered them after the 503, and the client retried).
    in_topic = _event_ids(own_broker, topic_prefix)
    assert set(accepted) <= set(in_topic)
    assert len(accepted) == 20

    # The flow counts each event_id once.
    env = pulse_env(
        home,
        PULSE_LOG_BACKEND="kafka",
        PULSE_KAFKA_BOOTSTRAP_SERVERS=own_broker,
        PULSE_KAFKA_TOPIC_PREFIX=topic_prefix,
        PULSE_SERVICE_ENABLED="false",
    )
    run_pulse(["run", "--bounded", "--quiet"], env)
    counts = store.rows(
        "SELECT feedback_count FROM {db}.metrics FINAL WHERE final = 1 AND tenant = 'default' "
        "AND model_version = 'v1' AND segment = 'default' AND endpoint = 'chat'"
    )
    assert counts and all(row == (20,) for row in counts), (counts, len(in_topic))
