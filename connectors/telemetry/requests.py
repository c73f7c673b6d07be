"""API request metrics: `pulse.http.server.requests` (by route, method and status) and the
`pulse.http.server.duration` histogram (seconds), recorded by the service's middleware."""

from __future__ import annotations

from opentelemetry.metrics import Meter

# Seconds: sub-millisecond single events up to the slowest queries.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RequestMetrics:
    """One counter and one histogram; attributes are the route template (not the raw
    path, so ids in paths do not grow the series), method and status code."""

    def __init__(self, meter: Meter) -> None:
        self._count = meter.create_counter(
            "pulse.http.server.requests", "{request}", "API requests by route and status"
        )
        self._duration = meter.create_histogram(
            "pulse.http.server.duration",
            "s",
            "API request latency",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        attributes = {"route": route, "method": method, "status": str(status)}
        self._count.add(1, attributes)
        self._duration.record(seconds, attributes)
