"""The process's OpenTelemetry: one MeterProvider, its readers and instruments.

Readers: a Prometheus one (opentelemetry-exporter-prometheus) on a private
``prometheus_client.CollectorRegistry`` (rendered by ``generate_latest``; private, so two
services in one process, as in tests, never collide) and, when configured, the OTLP one
(:mod:`connectors.telemetry.otlp`). Instruments: the pipeline self-metrics
(:mod:`connectors.telemetry.pipeline`) and the API request metrics
(:mod:`connectors.telemetry.requests`).

The window gauges (:mod:`connectors.telemetry.window_gauges`: up to `max_series` series
of each of 34 metrics) are not on that provider: `/metrics` renders them from their
snapshot (:mod:`connectors.telemetry.window_exposition`), since through the SDK a scrape
of the default 10,000 series ran past its 10 s callback timeout. For OTLP they are
observable gauges of a second provider whose only reader is a second OTLP reader, so a
scrape never runs their callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from config.settings import TelemetrySettings
from connectors.telemetry.otlp import otlp_reader
from connectors.telemetry.pipeline import register_pipeline_metrics
from connectors.telemetry.requests import RequestMetrics
from connectors.telemetry.window_exposition import render
from connectors.telemetry.window_gauges import WindowGauges
from operators.stats import FlowStats

SCOPE = "feedback_pulse"


class Telemetry:
    """Implements :class:`connectors.service.context.ServiceTelemetry`; also holds the
    window gauges the flow feeds (see :func:`connectors.telemetry.observe_emission`)."""

    def __init__(self, settings: TelemetrySettings, stats: FlowStats, otlp: bool = True) -> None:
        # First: a bad gauge setting stops the start before any exporter thread runs.
        self.windows = WindowGauges(
            settings.gauge_dims, settings.gauge_metrics, settings.max_series, settings.series_ttl
        )
        readers: list[MetricReader] = []
        self.registry: CollectorRegistry | None = None
        if settings.prometheus:
            self.registry = CollectorRegistry(auto_describe=True)
            readers.append(PrometheusMetricReader(scope_info_enabled=False, registry=self.registry))
        exporter = otlp_reader() if otlp else None
        if exporter is not None:
            readers.append(exporter)
        self.exports_otlp = exporter is not None
        resource = Resource.create({SERVICE_NAME: "feedback-pulse"})
        self.provider = MeterProvider(metric_readers=readers, resource=resource)
        meter = self.provider.get_meter(SCOPE)
        _register_guard_counters(meter, self.windows)
        register_pipeline_metrics(meter, stats)
        self.requests = RequestMetrics(meter)
        self.window_provider: MeterProvider | None = None
        window_exporter = otlp_reader(announce=False) if self.exports_otlp else None
        if window_exporter is not None:
            self.window_provider = MeterProvider(
                metric_readers=[window_exporter], resource=resource
            )
            _register_window_gauges(self.window_provider.get_meter(SCOPE), self.windows)

    def prometheus_text(self) -> tuple[bytes, str]:
        if self.registry is None:
            return b"", CONTENT_TYPE_LATEST
        return generate_latest(self.registry) + render(self.windows), CONTENT_TYPE_LATEST

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.observe(route, method, status, seconds)

    def flush(self) -> None:
        """Export now (OTLP); what a bounded run does before it exits."""
        for provider in self._providers():
            provider.force_flush()

    def shutdown(self) -> None:
        """A last export, then the readers stop (and leave their registry)."""
        for provider in self._providers():
            provider.shutdown()

    def _providers(self) -> list[MeterProvider]:
        return [self.provider] + ([self.window_provider] if self.window_provider else [])


def _register_window_gauges(meter: Meter, windows: WindowGauges) -> None:
    for metric in windows.metrics:
        meter.create_observable_gauge(
            f"pulse.{metric}", [_window_callback(windows, metric)], description=metric
        )


def _register_guard_counters(meter: Meter, windows: WindowGauges) -> None:
    meter.create_observable_counter(
        "pulse.telemetry.series_dropped",
        [lambda _options: [Observation(windows.dropped)]],
        "{row}",
        "Window rows not exported: their series was over telemetry.max_series",
    )
    meter.create_observable_counter(
        "pulse.telemetry.series_expired",
        [lambda _options: [Observation(windows.expired)]],
        "{series}",
        "Gauge series dropped: no window for telemetry.series_ttl of event time",
    )


def _window_callback(
    windows: WindowGauges, metric: str
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, a) for v, a in windows.observations(metric)]

    return callback
