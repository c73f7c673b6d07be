"""/healthz and /readyz over real HTTP: no key needed; 503 names each failed check."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from config.settings import load_settings
from connectors.ingest_log import durable_log
from operators.stats import FlowStats
from tests.service.conftest import ServiceFactory


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_healthz_answers_without_a_key(service: ServiceFactory) -> None:
    running = service()
    with running.client(key="") as client:
        client.headers.pop("Authorization", None)
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_with_the_local_log_and_the_embedded_store(
    service: ServiceFactory, home: Path
) -> None:
    settings = load_settings(environ={"PULSE_HOME": str(home)})
    running = service(settings, log=durable_log(settings))
    with running.client() as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"event_log": "ok", "clickhouse": "ok"}


def test_not_ready_without_an_event_log(service: ServiceFactory) -> None:
    with service(log=None).client() as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert set(body["failed"]) == {"event_log"} and body["checks"]["clickhouse"] == "ok"


def test_not_ready_when_clickhouse_does_not_answer(service: ServiceFactory, home: Path) -> None:
    settings = load_settings(
        environ={
            "PULSE_HOME": str(home),
            "PULSE_CLICKHOUSE_DSN": f"http://127.0.0.1:{_closed_port()}",
        }
    )
    with service(settings, log=durable_log(settings)).client() as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert set(response.json()["failed"]) == {"clickhouse"}


def test_not_ready_when_the_kafka_broker_does_not_answer(
    service: ServiceFactory, home: Path
) -> None:
    settings = load_settings(
        environ={
            "PULSE_HOME": str(home),
            "PULSE_LOG_BACKEND": "kafka",
            "PULSE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}",
        }
    )
    with service(settings, log=durable_log(settings)).client() as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert set(response.json()["failed"]) == {"event_log"}


@pytest.mark.skipif(not os.environ.get("PULSE_TEST_KAFKA"), reason="PULSE_TEST_KAFKA not set")
def test_ready_with_a_kafka_broker(service: ServiceFactory, home: Path) -> None:
    settings = load_settings(
        environ={
            "PULSE_HOME": str(home),
            "PULSE_LOG_BACKEND": "kafka",
            "PULSE_KAFKA_BOOTSTRAP_SERVERS": os.environ["PULSE_TEST_KAFKA"],
        }
    )
    with service(settings, log=durable_log(settings)).client() as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text


def test_a_flow_lagging_behind_the_wall_clock_is_not_ready(
    service: ServiceFactory, home: Path
) -> None:
    settings = load_settings(environ={"PULSE_HOME": str(home), "PULSE_SERVICE_READY_MAX_LAG": "1m"})
    stats = FlowStats()
    now_ms = int(time.time() * 1000)
    running = service(settings, log=durable_log(settings), stats=stats, hosted_by_flow=True)
    with running.client() as client:
        stats.watermark_ms = now_ms - 5_000
        assert client.get("/readyz").status_code == 200
        stats.watermark_ms = now_ms - 10 * 60_000
        lagging = client.get("/readyz")
        assert lagging.status_code == 503
        assert set(lagging.json()["failed"]) == {"flow_lag"}
        assert "trails the wall clock by 10m" in lagging.json()["failed"]["flow_lag"]


def test_a_flow_without_a_watermark_yet_is_ready(service: ServiceFactory, home: Path) -> None:
    """Not ready would keep a pod fed through this service from ever seeing an event."""
    settings = load_settings(environ={"PULSE_HOME": str(home), "PULSE_SERVICE_READY_MAX_LAG": "1m"})
    stats = FlowStats()
    running = service(settings, log=durable_log(settings), stats=stats, hosted_by_flow=True)
    with running.client() as client:
        assert client.get("/readyz").status_code == 200
        stats.watermark_ms = int(time.time() * 1000) - 10 * 60_000  # then it counts
        assert client.get("/readyz").status_code == 503
