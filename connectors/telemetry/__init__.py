"""OpenTelemetry for Feedback Pulse: window gauges, pipeline self-metrics, API request
metrics; exported to Prometheus (`GET /metrics` on the service) and by OTLP/HTTP when the
standard ``OTEL_EXPORTER_OTLP_*`` variables say where (docs/telemetry.md).

One :class:`~connectors.telemetry.process.Telemetry` per process, made by
:func:`service_telemetry`; the flow's `telemetry` step (:func:`observe_emission`) feeds
its window gauges and does nothing while there is none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from operators.stats import FlowStats
from operators.window_metrics import WindowMetrics

if TYPE_CHECKING:
    from config.settings import Settings
    from connectors.telemetry.process import Telemetry

_current: Telemetry | None = None


def observe_emission(_step: str, item: tuple[str, Any]) -> None:
    """Called with every item of the merge stage's output (the flow's `telemetry` step);
    window emissions become gauges."""
    telemetry = _current
    if telemetry is not None and isinstance(item[1], WindowMetrics):
        telemetry.windows.observe(item[1].columns, item[1].fields)


def service_telemetry(settings: Settings, stats: FlowStats) -> Telemetry | None:
    """The process's telemetry (the service's `/metrics`, request metrics, OTLP export),
    now the one the flow's emissions feed; None when Prometheus is off and no OTLP
    endpoint is set. Replaces (and shuts down) one made before in this process."""
    from connectors.telemetry.otlp import otlp_endpoint
    from connectors.telemetry.process import Telemetry

    global _current
    telemetry = None
    if settings.telemetry.prometheus or otlp_endpoint() is not None:
        telemetry = Telemetry(settings.telemetry, stats)
    previous, _current = _current, telemetry
    if previous is not None:
        previous.shutdown()
    return telemetry


def current() -> Telemetry | None:
    """The telemetry the flow feeds (None: off)."""
    return _current
