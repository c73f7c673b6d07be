"""`GET /metrics` over real HTTP after a bounded flow ran in this process: the window
gauges hold the store's newest final values, the self-metrics count the known input."""

from __future__ import annotations

import gc
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from bytewax.testing import run_main
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings, load_settings
from connectors.event_writer import LogWriter, Routed, route
from connectors.local_log import LocalLog
from connectors.service.keys import key_hash, new_key
from connectors.telemetry import service_telemetry
from dataflows.feedback import build_flow
from operators.stats import FlowStats
from operators.synthetic import TrafficGenerator, TrafficProfile
from tests.conftest import Store
from tests.service.conftest import RunningService, ServiceFactory

DIMS = ("tenant", "model_id", "deployment", "model_version", "segment", "endpoint")
MALFORMED = 3

Samples = dict[str, list[tuple[dict[str, str], float]]]


def settings_for(home: Path, **env: str) -> Settings:
    return load_settings(
        environ={
            "PULSE_HOME": str(home),
            "PULSE_RUN_BOUNDED": "true",
            "PULSE_RUN_RECOVERY": "false",
            "PULSE_TELEMETRY_GAUGE_DIMS": json.dumps(DIMS),
            **env,
        }
    )


def run_flow(settings: Settings, service: ServiceFactory) -> tuple[RunningService, FlowStats]:
    stats = FlowStats()
    telemetry = service_telemetry(settings, stats)
    gc.collect()  # an earlier test's flow lets go of its embedded engine (one per process)
    run_main(build_flow(settings, stats, recovery=False))
    gc.collect()
    return service(settings, telemetry=telemetry, stats=stats), stats


def write_traffic(settings: Settings) -> Counter[str]:
    """Seeded clean traffic and MALFORMED lines that are not JSON; lines per stream."""
    profile = TrafficProfile(
        seed=5, duration_s=150, rate=10, invalid_rate=0, duplicate_rate=0, late_rate=0
    )
    events: list[Routed] = [(e.stream, e.key, e.line) for e in TrafficGenerator(profile).events()]
    events += [route(b"{not json %d" % i) for i in range(MALFORMED)]
    log = LocalLog(settings.home_dir / "log", settings.log.partitions, settings.log.segment_bytes)
    LogWriter(log).write(events)
    return Counter(stream for stream, _, _ in events)


def scrape(running: RunningService, key: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{running.url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def one(samples: Samples, name: str, **labels: str) -> float:
    found = [
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    ]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def query(running: RunningService, sql: str) -> list[dict[str, Any]]:
    store = Store(running.context.settings.home_dir)
    try:
        return store.dicts(sql)
    finally:
        store.close()


@pytest.fixture
def ran(home: Path, service: ServiceFactory) -> tuple[RunningService, FlowStats, Counter[str]]:
    settings = settings_for(home)
    lines = write_traffic(settings)
    running, stats = run_flow(settings, service)
    return running, stats, lines


def test_self_metrics_count_the_known_input(ran: Any) -> None:
    running, stats, lines = ran
    samples = scrape(running)
    read = "pulse_pipeline_events_read_total"
    assert one(samples, read, stream="inferences") == lines["inferences"]
    assert one(samples, read, stream="feedback") == lines["feedback"]  # the malformed too
    assert one(samples, "pulse_pipeline_dead_letters_total", reason="malformed_json") == MALFORMED
    assert len(samples["pulse_pipeline_dead_letters_total"]) == 1
    assert one(samples, "pulse_pipeline_inferences_total") == lines["inferences"]
    assert one(samples, "pulse_pipeline_feedback_total") == lines["feedback"] - MALFORMED
    assert one(samples, "pulse_pipeline_events_decoded_total") == sum(lines.values()) - MALFORMED
    assert one(samples, "pulse_pipeline_duplicates_total", stream="feedback") == 0
    assert one(samples, "pulse_pipeline_sink_pending") == 0  # a finished run wrote it all
    assert one(samples, "pulse_pipeline_sink_rows_total") == stats.rows_written > 0
    assert one(samples, "pulse_pipeline_sink_inserts_total") > 0
    assert one(samples, "pulse_pipeline_emissions_total") >= 1
    unjoined = one(samples, "pulse_pipeline_unjoined_total")
    feedback = lines["feedback"] - MALFORMED
    assert one(samples, "pulse_pipeline_join_hit_rate") == pytest.approx(
        (feedback - unjoined) / feedback
    )
    windows = query(
        running,
        "SELECT count() AS n FROM (SELECT DISTINCT window, window_start FROM {db}.metrics)",
    )[0]["n"]
    assert one(samples, "pulse_pipeline_windows_final_total") == windows


def test_window_gauges_hold_the_newest_final_values_of_the_store(ran: Any) -> None:
    running, _, _ = ran
    samples = scrape(running)
    # The newest window's accuracy, NULL included (a bare argMax skips NULL values).
    finest = " AND ".join(f"{d} != '*'" for d in DIMS)
    newest = query(
        running,
        f"SELECT window, {', '.join(DIMS)}, argMax(feedback_count, window_start) AS n, "
        f"argMax(tuple(accuracy), window_start).1 AS acc FROM {{db}}.metrics FINAL WHERE {finest} "
        f"GROUP BY window, {', '.join(DIMS)}",
    )
    assert len(newest) > 10
    counts = {
        tuple(lab[k] for k in ("window", *DIMS)): v for lab, v in samples["pulse_feedback_count"]
    }
    assert counts == {tuple(r[k] for k in ("window", *DIMS)): float(r["n"]) for r in newest}
    accuracy = {tuple(lab[k] for k in ("window", *DIMS)): v for lab, v in samples["pulse_accuracy"]}
    expected = {
        tuple(r[k] for k in ("window", *DIMS)): r["acc"] for r in newest if r["acc"] is not None
    }
    assert accuracy == pytest.approx(expected)
    assert not any("*" in lab.values() for lab, _ in samples["pulse_feedback_count"])
    assert one(samples, "pulse_telemetry_series_dropped_total") == 0


def test_a_dim_left_out_of_the_gauges_is_summed_over(home: Path, service: ServiceFactory) -> None:
    """Default gauge dims leave out tenant, which is never rolled up: the gauge is the sum
    over tenants of the newest window's rows, its ratios derived from the summed fields."""
    settings = settings_for(home, PULSE_TELEMETRY_GAUGE_DIMS=json.dumps(DIMS[1:]))
    write_traffic(settings)
    running, _ = run_flow(settings, service)
    samples = scrape(running)
    dims = ", ".join(DIMS[1:])
    finest = " AND ".join(f"{d} != '*'" for d in DIMS[1:])
    expected = query(
        running,
        f"""SELECT window, {dims}, sum(feedback_count) AS n, count() AS tenants,
                   if(sum(labeled_count) = 0, NULL, sum(correct_count) / sum(labeled_count)) AS acc
            FROM {{db}}.metrics AS m FINAL
            JOIN (SELECT window, {dims}, max(window_start) AS newest FROM {{db}}.metrics FINAL
                  WHERE {finest} GROUP BY window, {dims}) AS w USING (window, {dims})
            WHERE {finest} AND m.window_start = w.newest
            GROUP BY window, {dims}""",
    )
    assert any(r["tenants"] > 1 for r in expected)  # the input has rows to sum
    key = ("window", *DIMS[1:])
    counts = {tuple(lab[k] for k in key): v for lab, v in samples["pulse_feedback_count"]}
    assert counts == {tuple(r[k] for k in key): float(r["n"]) for r in expected}
    accuracy = {tuple(lab[k] for k in key): v for lab, v in samples["pulse_accuracy"]}
    assert accuracy == pytest.approx(
        {tuple(r[k] for k in key): r["acc"] for r in expected if r["acc"] is not None}
    )
    latency = {tuple(lab[k] for k in key) for lab, _ in samples.get("pulse_latency_p50", [])}
    summed = {tuple(r[k] for k in key) for r in expected if r["tenants"] > 1}
    assert not latency & summed  # quantiles cannot be summed: not reported
    assert all("tenant" not in lab for lab, _ in samples["pulse_feedback_count"])


def test_requests_are_counted_by_route_and_status(ran: Any) -> None:
    running, _, _ = ran
    scrape(running)
    assert httpx.get(f"{running.url}/no/such/route").status_code == 404
    samples = scrape(running)
    ok = {"route": "/metrics", "method": "GET", "status": "200"}
    assert one(samples, "pulse_http_server_requests_total", **ok) == 1  # the scrape before
    assert one(samples, "pulse_http_server_requests_total", route="unmatched", status="404") == 1
    assert one(samples, "pulse_http_server_duration_seconds_count", **ok) == 1
    assert one(samples, "pulse_http_server_duration_seconds_bucket", le="+Inf", **ok) == 1


def test_with_keys_configured_metrics_needs_the_read_scope(
    home: Path, service: ServiceFactory
) -> None:
    reader, ingester = new_key(), new_key()
    keys = [
        {"name": "scraper", "sha256": key_hash(reader), "tenant": "*", "scopes": ["read"]},
        {"name": "app", "sha256": key_hash(ingester), "tenant": "t", "scopes": ["ingest"]},
    ]
    settings = settings_for(home, PULSE_SERVICE_API_KEYS=json.dumps(keys))
    running = service(settings, telemetry=service_telemetry(settings, FlowStats()))
    assert httpx.get(f"{running.url}/metrics").status_code == 401
    assert (
        httpx.get(
            f"{running.url}/metrics", headers={"Authorization": f"Bearer {ingester}"}
        ).status_code
        == 403
    )
    assert "pulse_pipeline_sink_pending" in scrape(running, key=reader)


def test_prometheus_off_is_a_404(home: Path, service: ServiceFactory) -> None:
    settings = settings_for(home, PULSE_TELEMETRY_PROMETHEUS="false")
    assert service_telemetry(settings, FlowStats()) is None  # no OTLP endpoint either
    running = service(settings)
    assert httpx.get(f"{running.url}/metrics").status_code == 404
