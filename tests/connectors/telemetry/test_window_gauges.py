"""Window gauges: newest window per series, rollup selection, the cardinality guard."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.settings import load_settings
from connectors.telemetry import service_telemetry
from connectors.telemetry.window_gauges import GaugeSettingsError, WindowGauges
from operators.batches import Categorical
from operators.errors import PulseError
from operators.stats import FlowStats

DIMS = ("tenant", "model_id", "deployment", "model_version", "segment", "endpoint")


def rows(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """`metrics` columns for `cells` (dicts of window, start, dims and metric values)."""

    def categorical(values: list[str]) -> Categorical:
        categories = sorted(set(values))
        return Categorical(np.array([categories.index(v) for v in values]), categories)

    columns: dict[str, Any] = {
        "window": categorical([c["window"] for c in cells]),
        "window_start": np.array([c["start"] for c in cells], dtype=np.int64),
        "window_end": np.array([c["start"] + 60_000 for c in cells], dtype=np.int64),
    }
    for dim in DIMS:
        columns[dim] = categorical([c.get(dim, "x") for c in cells])
    columns["extra_dims"] = categorical([""] * len(cells))
    for metric in ("feedback_count", "accuracy"):
        columns[metric] = np.array([c.get(metric, np.nan) for c in cells], dtype=np.float64)
    return columns


def series(gauges: WindowGauges, metric: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(a[k] for k in ("window", *gauges.dims)): v for v, a in gauges.observations(metric)
    }


def test_the_newest_window_wins_and_an_older_one_never_overwrites() -> None:
    g = WindowGauges(["segment"], ["feedback_count", "accuracy"], max_series=10)
    star = {"model_version": "*", "endpoint": "*"}
    g.observe(rows([
        {"window": "1m", "start": 60, "segment": "web", "feedback_count": 5, "accuracy": 0.5, **star},
        {"window": "1m", "start": 0, "segment": "web", "feedback_count": 9, "accuracy": 0.9, **star},
        {"window": "1m", "start": 0, "segment": "ios", "feedback_count": 2, **star},
    ]))  # fmt: skip
    assert series(g, "feedback_count") == {("1m", "web"): 5.0, ("1m", "ios"): 2.0}
    assert series(g, "accuracy") == {("1m", "web"): 0.5}  # NaN: no value, no sample
    g.observe(rows([{"window": "1m", "start": 0, "segment": "web", "feedback_count": 1, **star}]))
    assert series(g, "feedback_count")[("1m", "web")] == 5.0
    g.observe(rows([{"window": "1m", "start": 120, "segment": "web", "feedback_count": 7, **star}]))
    assert series(g, "feedback_count")[("1m", "web")] == 7.0


def test_only_rows_of_the_gauge_dims_grouping_are_exported() -> None:
    """segment in gauge_dims: its "*" rows are rollups (skipped); model_version and
    endpoint not: only their "*" rows (the sums over them) are taken."""
    g = WindowGauges(["model_id", "segment"], ["feedback_count"], max_series=10)
    g.observe(rows([
        {"window": "1h", "start": 0, "model_id": "m", "segment": "web", "model_version": "*", "endpoint": "*", "feedback_count": 3},
        {"window": "1h", "start": 0, "model_id": "m", "segment": "*", "model_version": "*", "endpoint": "*", "feedback_count": 4},
        {"window": "1h", "start": 0, "model_id": "m", "segment": "web", "model_version": "v1", "endpoint": "*", "feedback_count": 1},
        {"window": "1h", "start": 0, "model_id": "m", "segment": "web", "model_version": "v1", "endpoint": "/a", "feedback_count": 1},
    ]))  # fmt: skip
    assert series(g, "feedback_count") == {("1h", "m", "web"): 3.0}


def test_the_guard_keeps_max_series_and_counts_the_rest() -> None:
    g = WindowGauges(DIMS, ["feedback_count"], max_series=3)
    cells = [
        {"window": "1m", "start": 0, "segment": f"s{i}", "feedback_count": i} for i in range(5)
    ]
    g.observe(rows(cells))
    assert len(series(g, "feedback_count")) == 3
    assert g.dropped == 2
    g.observe(rows([{**c, "start": 60} for c in cells]))  # the kept ones update; 2 more drops
    kept = series(g, "feedback_count")
    assert len(kept) == 3 and g.dropped == 4
    assert all(v == float(k[5][1:]) for k, v in kept.items())


def test_the_guard_and_gauges_are_exported(tmp_path: Any) -> None:
    settings = load_settings(
        environ={
            "PULSE_HOME": str(tmp_path),
            "PULSE_TELEMETRY_MAX_SERIES": "2",
            "PULSE_TELEMETRY_GAUGE_METRICS": '["feedback_count"]',
        }
    )
    telemetry = service_telemetry(settings, FlowStats())
    assert telemetry is not None
    cells = [
        {"window": "1m", "start": 0, "segment": f"s{i}", "feedback_count": i} for i in range(5)
    ]
    telemetry.windows.observe(rows(cells))
    families = {
        f.name: f for f in text_string_to_metric_families(telemetry.prometheus_text()[0].decode())
    }
    assert [s.value for s in families["pulse_telemetry_series_dropped"].samples] == [3.0]
    kept = [s.value for s in families["pulse_feedback_count"].samples]
    assert len(kept) == 2 and set(kept) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert "pulse_accuracy" not in families  # gauge_metrics restricts the gauges


def test_an_unknown_gauge_metric_fails_naming_the_setting() -> None:
    with pytest.raises(GaugeSettingsError, match=r"telemetry.gauge_metrics.*accurcy") as err:
        WindowGauges(DIMS, ["accurcy"], max_series=1)
    assert isinstance(err.value, PulseError)


def test_a_series_with_no_window_for_series_ttl_expires_and_frees_its_place() -> None:
    """Event time: a series whose newest window ended series_ttl before the newest window
    seen is no longer exported, and a new series takes its place under the guard."""
    g = WindowGauges(DIMS, ["feedback_count"], max_series=2, series_ttl=120_000)
    g.observe(rows([
        {"window": "1m", "start": 0, "segment": "old", "feedback_count": 1},
        {"window": "1m", "start": 0, "segment": "kept", "feedback_count": 2},
    ]))  # fmt: skip
    # 3 minutes later "kept" still reports; "old" ended at 60s, 120s before... not yet over.
    g.observe(rows([{"window": "1m", "start": 180_000, "segment": "kept", "feedback_count": 3}]))
    assert {k[5] for k in series(g, "feedback_count")} == {"old", "kept"}
    assert g.expired == 0
    # Now "old" (ended at 60s) is more than 120s behind the newest start (181s): expired,
    # and the new series "new" fits under max_series=2 instead of being dropped.
    g.observe(rows([
        {"window": "1m", "start": 181_000, "segment": "kept", "feedback_count": 4},
        {"window": "1m", "start": 181_000, "segment": "new", "feedback_count": 5},
    ]))  # fmt: skip
    assert series(g, "feedback_count") == {
        ("1m", "x", "x", "x", "x", "kept", "x"): 4.0,
        ("1m", "x", "x", "x", "x", "new", "x"): 5.0,
    }
    assert g.expired == 1 and g.dropped == 0
    # The survivors still update in place after the compaction.
    g.observe(rows([{"window": "1m", "start": 240_000, "segment": "new", "feedback_count": 6}]))
    assert series(g, "feedback_count")[("1m", "x", "x", "x", "x", "new", "x")] == 6.0
    assert len(g) == 2


def test_series_ttl_is_a_setting_exported_with_its_counter(tmp_path: Any) -> None:
    settings = load_settings(
        environ={"PULSE_HOME": str(tmp_path), "PULSE_TELEMETRY_SERIES_TTL": "1m"}
    )
    telemetry = service_telemetry(settings, FlowStats())
    assert telemetry is not None and telemetry.windows.series_ttl == 60_000
    telemetry.windows.observe(rows([{"window": "1m", "start": 0, "segment": "a"}]))
    telemetry.windows.observe(rows([{"window": "1m", "start": 200_000, "segment": "b"}]))
    families = {
        f.name: f for f in text_string_to_metric_families(telemetry.prometheus_text()[0].decode())
    }
    assert [s.value for s in families["pulse_telemetry_series_expired"].samples] == [1.0]


def test_a_collection_before_the_first_emission_has_no_series_and_does_not_fail() -> None:
    """With dims summed (tenant left out, the default), a scrape before the flow's first
    emission failed (an index into an empty array): `/metrics` answered 500."""
    g = WindowGauges(DIMS[1:], ["feedback_count"], max_series=10)
    assert g.summed == ("tenant",)
    assert series(g, "feedback_count") == {}
    g.observe(rows([{"window": "1m", "start": 0, "segment": "s", "feedback_count": 2}]))
    assert list(series(g, "feedback_count").values()) == [2.0]


def _scraped(telemetry: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The window gauges of a `/metrics` text, parsed by prometheus_client: metric ->
    sorted label pairs -> value."""
    text = telemetry.prometheus_text()[0].decode()
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
        if family.type == "gauge" and family.name != "target_info"
    }


def test_the_scrape_renders_every_series_as_the_gauges_hold_it(tmp_path: Any) -> None:
    """What `/metrics` says is what the gauges hold, label values with a quote, a
    backslash, a newline or any character included (prometheus_client's parser reads
    it back); a metric without a value in any series is left out."""
    settings = load_settings(environ={"PULSE_HOME": str(tmp_path)})
    telemetry = service_telemetry(settings, FlowStats())
    assert telemetry is not None
    odd = ['say "hi"', "back\\slash", "two\nlines", "é/漢字", "{x=1}", ""]
    telemetry.windows.observe(rows([
        {"window": "1m", "start": 0, "segment": s, "feedback_count": i, "accuracy": i / 10}
        for i, s in enumerate(odd)
    ] + [{"window": "5m", "start": 0, "segment": "only-count", "feedback_count": 7}]))  # fmt: skip
    scraped = _scraped(telemetry)
    for metric in ("feedback_count", "accuracy"):
        held = {
            tuple(sorted(attributes.items())): value
            for value, attributes in telemetry.windows.observations(metric)
        }
        assert scraped[f"pulse_{metric}"] == held
    assert len(scraped["pulse_feedback_count"]) == 7 and len(scraped["pulse_accuracy"]) == 6
    assert {dict(k)["segment"] for k in scraped["pulse_accuracy"]} == set(odd)
    assert "pulse_thumbs_up" not in scraped  # no series has a value


def test_a_scrape_of_the_default_max_series_of_every_metric_answers(tmp_path: Any) -> None:
    """10,000 series (telemetry.max_series' default) of the 34 gauges: through the
    OpenTelemetry SDK's reader the scrape ran past its 10 s callback timeout here
    (MetricsTimeoutError: `/metrics` answered 500)."""
    settings = load_settings(environ={"PULSE_HOME": str(tmp_path)})
    telemetry = service_telemetry(settings, FlowStats())
    assert telemetry is not None
    n = settings.telemetry.max_series
    assert n == 10_000
    columns = rows([{"window": "1m", "start": 0, "segment": f"s{i}"} for i in range(n)])
    values = np.random.default_rng(1).random((len(telemetry.windows.metrics), n))
    for metric, column in zip(telemetry.windows.metrics, values, strict=True):
        columns[metric] = column
    telemetry.windows.observe(columns)
    lines = telemetry.prometheus_text()[0].decode().splitlines()
    for j, metric in enumerate(telemetry.windows.metrics):
        samples = [line for line in lines if line.startswith(f"pulse_{metric}{{")]
        assert len(samples) == n, metric
        assert sorted(float(line.split()[-1]) for line in samples) == sorted(values[j])
