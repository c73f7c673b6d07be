"""OTLP/HTTP export, configured by the standard variables, received and decoded by a
small receiver (opentelemetry-proto): the values are right, the headers arrive and no
secret reaches the log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import load_settings
from connectors.telemetry import service_telemetry
from operators.stats import FlowStats
from tests.connectors.telemetry.otlp_receiver import OtlpReceiver
from tests.connectors.telemetry.test_window_gauges import rows

SECRET = "s3cret-otlp-token"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    yield r
    r.stop()


def test_metrics_are_exported_by_otlp_when_the_endpoint_is_set(
    receiver: OtlpReceiver,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{SECRET}")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")  # only our flush exports
    settings = load_settings(
        environ={"PULSE_HOME": str(home), "PULSE_TELEMETRY_PROMETHEUS": "false"}
    )
    stats = FlowStats(inferences=40, feedback=30, unjoined=3)
    stats.dead_letter_reasons.update({"malformed_json": 2, "invalid": 5})
    caplog.set_level(logging.DEBUG)
    telemetry = service_telemetry(settings, stats)
    assert telemetry is not None and telemetry.exports_otlp
    telemetry.windows.observe(
        rows([{"window": "1m", "start": 0, "feedback_count": 30, "accuracy": 0.75}])
    )
    telemetry.observe_request("/v1/feedback", "POST", 202, 0.004)
    try:
        telemetry.flush()
    finally:
        telemetry.shutdown()

    assert receiver.requests, "nothing was exported"
    assert receiver.headers[-1]["authorization"] == f"Bearer {SECRET}"
    points = receiver.points()
    assert sorted(points["pulse.pipeline.dead_letters"], key=str) == [
        ({"reason": "invalid"}, 5.0),
        ({"reason": "malformed_json"}, 2.0),
    ]
    assert points["pulse.pipeline.inferences"] == [({}, 40.0)]
    assert points["pulse.pipeline.join_hit_rate"] == [({}, pytest.approx(27 / 30))]
    [(attributes, accuracy)] = points["pulse.accuracy"]
    assert accuracy == 0.75 and attributes["window"] == "1m" and attributes["segment"] == "x"
    assert points["pulse.http.server.requests"] == [
        ({"route": "/v1/feedback", "method": "POST", "status": "202"}, 1.0)
    ]
    assert points["pulse.http.server.duration"][0][1] == 1.0  # one recorded request
    assert SECRET not in caplog.text
    assert receiver.url in caplog.text  # the endpoint is said, the headers are not


def test_no_endpoint_and_no_prometheus_means_no_telemetry(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(
        environ={"PULSE_HOME": str(home), "PULSE_TELEMETRY_PROMETHEUS": "false"}
    )
    assert service_telemetry(settings, FlowStats()) is None
    on = service_telemetry(load_settings(environ={"PULSE_HOME": str(home)}), FlowStats())
    assert on is not None and not on.exports_otlp
