"""The window gauges in Prometheus's text format, rendered from one snapshot per scrape.

Through OpenTelemetry's SDK, its Prometheus exporter and prometheus_client, a scrape cost
~75 µs of CPU per sample here: an `Observation` per series and metric, its attributes
cleaned and hashed by the SDK, aggregated, translated by the exporter and escaped again
by the exposition, all per sample. 1,000 series of the 34 gauges took 2.6–3.9 s, and the
default `telemetry.max_series` (10,000) ran past the SDK's 10 s callback timeout, so
`/metrics` answered 500 once a flow had that many series. Here a series' label set is
escaped once per scrape, and a metric's lines are one join; values are formatted as
prometheus_client formats them (`floatToGoString`), label names sorted and values escaped
as its exposition does. prometheus_client's own way, a custom collector of
`GaugeMetricFamily` rendered by `generate_latest`, gives the same bytes but escapes every
sample's labels again: 5.3–5.9 s of CPU for 10,000 series against 0.59–0.62 s here
(three alternating rounds, a quiet machine). The rest of `/metrics` (the pipeline and
request metrics: tens of series) still goes through the SDK's reader, and the window
gauges still go to OTLP through the SDK (:mod:`connectors.telemetry.process`).
"""

from __future__ import annotations

import numpy as np
from prometheus_client.utils import floatToGoString

from connectors.telemetry.window_gauges import WindowGauges

PREFIX = "pulse_"  # `pulse.<metric>` as the Prometheus exporter names it


def render(gauges: WindowGauges) -> bytes:
    """Every window gauge with a value, as Prometheus text (a metric with none: left out)."""
    values, attributes = gauges.snapshot()
    labels = [label_set(a) for a in attributes]
    out: list[str] = []
    for j, metric in enumerate(gauges.metrics):
        column = values[:, j]
        present = np.flatnonzero(np.isfinite(column))
        if len(present) == 0:
            continue
        name = PREFIX + metric
        out.append(f"# HELP {name} {metric}\n# TYPE {name} gauge\n")
        out.extend(
            f"{name}{labels[i]} {floatToGoString(v)}\n"
            for i, v in zip(present.tolist(), column[present].tolist(), strict=True)
        )
    return "".join(out).encode()


def label_set(attributes: dict[str, str]) -> str:
    """``{name="value",...}``, names sorted, values escaped as the text format asks."""
    pairs = (f'{name}="{_escaped(value)}"' for name, value in sorted(attributes.items()))
    return "{" + ",".join(pairs) + "}"


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
