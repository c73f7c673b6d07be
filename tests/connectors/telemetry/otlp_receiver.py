"""A small OTLP/HTTP metrics receiver on 127.0.0.1: keeps each decoded request."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)


class OtlpReceiver:
    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/metrics" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def points(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Metric name -> (attributes, value) of every data point of the last request
        that carried the metric (the window gauges come in requests of their own)."""
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for request in self.requests:
            carried: dict[str, list[tuple[dict[str, str], float]]] = {}
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        carried.setdefault(metric.name, []).extend(_points(metric))
            out.update(carried)
        return out


def _points(metric: Any) -> list[tuple[dict[str, str], float]]:
    kind = metric.WhichOneof("data")
    out = []
    for point in getattr(metric, kind).data_points:
        attributes = {a.key: a.value.string_value for a in point.attributes}
        value = (
            point.count
            if kind == "histogram"
            else point.as_double
            if point.WhichOneof("value") == "as_double"
            else point.as_int
        )
        out.append((attributes, float(value)))
    return out
