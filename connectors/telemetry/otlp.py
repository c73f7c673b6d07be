"""OTLP/HTTP metric export, configured only by the standard variables.

On when ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set;
the exporter (opentelemetry-exporter-otlp-proto-http) reads the endpoint, headers,
timeout, compression and certificates from ``OTEL_EXPORTER_OTLP_*`` itself, and the
periodic reader its interval from ``OTEL_METRIC_EXPORT_INTERVAL`` (ms, default 60000).
Only the endpoint is logged, never the headers (they carry API tokens).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry.sdk.metrics.export import MetricReader

from connectors.redact import mask_dsn

log = logging.getLogger("pulse.telemetry")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def otlp_endpoint(environ: Mapping[str, str] = os.environ) -> str | None:
    for name in ENDPOINT_VARIABLES:
        if environ.get(name, "").strip():
            return environ[name].strip()
    return None


def otlp_reader(announce: bool = True) -> MetricReader | None:
    """A periodic OTLP/HTTP reader, or None when no endpoint is configured; `announce`:
    log where it exports (once per process: the window gauges have a reader of their own)."""
    endpoint = otlp_endpoint()
    if endpoint is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    if not announce:
        return reader
    log.info(
        "OTLP metric export to %s", mask_dsn(endpoint),
        extra={"event": "otlp_export", "endpoint": mask_dsn(endpoint)},
    )  # fmt: skip
    return reader
