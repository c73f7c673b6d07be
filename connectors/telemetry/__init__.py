"""OpenTelemetry for Feedback Pulse (filled in by its owner: window gauges, self-metrics,
Prometheus and OTLP export)."""

from __future__ import annotations

from typing import Any


def observe_emission(_step: str, item: tuple[str, Any]) -> None:
    """Called with every item of the merge stage's output (the flow's `telemetry` step);
    window emissions become gauges."""


def service_telemetry(settings: Any, stats: Any) -> Any:
    """The service's telemetry (prometheus text, request metrics); None: off."""
    return None
