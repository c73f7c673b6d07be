"""The Grafana dashboard (config/grafana/): the committed JSON is what its generator
writes, and every panel's, variable's and annotation's SQL runs on the store a real
bounded run wrote, expanded as Grafana and the ClickHouse plugin would
(config/grafana/expand.py), with values that agree with direct counts of the tables."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel

from config.grafana import dashboard
from config.grafana.expand import ExpansionError, Selection, TimeRange, expand
from tests.conftest import Store, pulse_env, run_pulse

# Two rules that fire on the generated traffic: the canary's thumbs-down rate, accuracy.
RULES = """
rules:
  - name: canary-thumbs-down
    type: canary
    window: 1m
    metric: thumbs_down_rate
    canary: {deployment: canary}
    baseline: {deployment: primary}
    match: [model_id]
    worse: higher
    alpha: 0.01
  - name: accuracy-floor
    type: threshold
    window: 1m
    metric: accuracy
    where: {model_version: "*", segment: "*", endpoint: "*"}
    op: "<"
    value: 0.99
    min_samples: 5
"""
# The generator's event time starts at 2026-01-01 00:00; dead letters are placed at the
# wall-clock time they were written, so the range runs to now.
START = datetime(2025, 12, 31, tzinfo=UTC)


def _time() -> TimeRange:
    return TimeRange(START, datetime.now(UTC) + timedelta(minutes=5), interval_s=60)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A store after a bounded run with the rules above over two `pulse generate` runs:
    ten minutes of every model (2% invalid events), then ten of the `assistant` model
    whose canary degrades at 00:14; run twice."""
    root = tmp_path_factory.mktemp("grafana")
    home = root / "home"
    rules = root / "rules.yaml"
    rules.write_text(RULES)
    env = pulse_env(home)
    run_pulse(
        ["generate", "--seed", "1", "--duration", "600", "--rate", "10", "--invalid-rate",
         "0.02"], env,
    )  # fmt: skip
    run_pulse(
        ["generate", "--seed", "2", "--duration", "600", "--rate", "10", "--start",
         "2026-01-01T00:10:00Z", "--canary-share", "0.2", "--canary-degrade-at",
         "2026-01-01T00:14:00Z", "--canary-thumbs-down", "0.6"], env,
    )  # fmt: skip
    # Twice: the replay writes every row again under the same key, as a restarted flow
    # does, so only the panels' FINAL reading keeps the numbers right.
    for _ in range(2):
        run_pulse(["--config", str(rules), "run", "--bounded", "--quiet"], env)
    s = Store(home)
    yield s
    s.close()


def _loaded() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(dashboard.OUTPUT.read_text(encoding="utf-8"))
    return loaded


@dataclass
class Query:
    where: str  # what it belongs to, for messages
    sql: str
    fmt: int


def _panel_queries(dash: dict[str, Any]) -> dict[str, Query]:
    found = {}
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        for target in panel["targets"]:
            where = f"{panel['type']} {panel['title']!r}"
            found[where] = Query(where, target["rawSql"], target["format"])
    for annotation in dash["annotations"]["list"]:
        where = f"annotation {annotation['name']!r}"
        found[where] = Query(where, annotation["target"]["rawSql"], annotation["target"]["format"])
    return found


class Dashboard:
    """The dashboard's variables resolved in order as Grafana does (each variable's query
    run with the ones before it), then its queries run with a selection."""

    def __init__(self, store: Store, chosen: dict[str, tuple[str, ...]] | None = None) -> None:
        self.store = store
        self.json = _loaded()
        self.time = _time()
        self.variables: dict[str, Selection] = {}
        self.options: dict[str, list[str]] = {}
        for variable in self.json["templating"]["list"]:
            self._resolve(variable, (chosen or {}).get(variable["name"]))
        self.queries = _panel_queries(self.json)

    def _resolve(self, variable: dict[str, Any], chosen: tuple[str, ...] | None) -> None:
        name = variable["name"]
        if variable["type"] == "datasource":
            self.variables[name] = Selection.one("clickhouse")
            return
        assert variable["type"] == "query", variable
        assert variable["datasource"]["type"] == "grafana-clickhouse-datasource"
        sql = expand(variable["query"]["rawSql"], self.variables, self.time)
        options = [str(row[0]) for row in self.store.rows(sql)]
        assert options, f"variable {name!r} has no values: {sql}"
        self.options[name] = options
        current = variable["current"]["value"]
        if chosen is not None:
            assert set(chosen) <= set(options), (name, chosen, options)
            self.variables[name] = Selection(chosen)
        elif current == ["$__all"]:
            self.variables[name] = Selection(tuple(options), True, variable.get("allValue"))
        else:
            assert current in options, (name, current, options)
            self.variables[name] = Selection.one(current)

    def sql(self, where: str) -> str:
        return expand(self.queries[where].sql, self.variables, self.time)

    def rows(self, where: str) -> list[dict[str, Any]]:
        return self.store.dicts(self.sql(where))


def test_the_committed_json_is_what_the_generator_writes() -> None:
    assert dashboard.OUTPUT.read_text(encoding="utf-8") == dashboard.render(), (
        "config/grafana/feedback-pulse.json is stale: run "
        ".venv/bin/python -m config.grafana.dashboard and commit it"
    )


def test_the_json_reads_back_as_grafanas_dashboard_model() -> None:
    """The SDK's model of Grafana's dashboard schema reads the file and writes it back the
    same, but for the annotations' targets (it types them as Grafana's built-in ones)."""
    register_default_plugins()
    written = _loaded()
    read = json.loads(json.dumps(DashboardModel.from_json(written), cls=JSONEncoder))
    for model in (written, read):
        for annotation in model["annotations"]["list"]:
            del annotation["target"]
    assert read == written


def test_every_query_is_the_plugins_raw_sql_on_the_chosen_data_source() -> None:
    dash = _loaded()
    queries = _panel_queries(dash)
    assert len(queries) == 18  # 16 panels, 2 annotations
    for panel in [p for p in dash["panels"] if p["type"] != "row"]:
        assert panel["datasource"] == {
            "type": "grafana-clickhouse-datasource",
            "uid": "${datasource}",
        }
        for target in panel["targets"]:
            assert target["editorType"] == "sql" and target["format"] in (0, 1)
            assert target["queryType"] == {0: "timeseries", 1: "table"}[target["format"]]
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names == ["datasource", "database", "window", "tenant", "model_id", "deployment",
                     "model_version", "segment", "endpoint"]  # fmt: skip


def test_every_panel_variable_and_annotation_runs_and_the_key_panels_have_rows(
    store: Store,
) -> None:
    dash = Dashboard(store)
    assert dash.options["database"] == ["pulse"]
    assert dash.options["window"] == ["1h", "1m", "5m_30s"]  # the configured windows
    assert "*" not in dash.options["model_version"]  # its "All" is the rollup row
    results = {where: dash.rows(where) for where in dash.queries}  # each one runs
    empty = [where for where, rows in results.items() if not rows]
    assert empty == []
    for where, rows in results.items():
        if dash.queries[where].fmt == 0:
            times = [row["time"] for row in rows]
            assert times == sorted(times), where


def _series(rows: list[dict[str, Any]], value: str) -> dict[tuple[Any, str], float]:
    return {(row["time"], row["series"]): row[value] for row in rows}


def test_quality_panels_are_ratios_by_version_and_deployment(store: Store) -> None:
    dash = Dashboard(store)
    accuracy = _series(dash.rows("timeseries 'Accuracy'"), "accuracy")
    error = _series(dash.rows("timeseries 'Error rate'"), "error_rate")
    assert accuracy.keys() == error.keys()
    assert len(accuracy) > 20
    for key, value in accuracy.items():  # no nulls: buckets without labels are left out
        assert 0 <= value <= 1 and abs(value + error[key] - 1) < 1e-12, key
    # the versions with labels (fraud-detector's primary and canary) and unjoined labels
    assert {name for _, name in accuracy} == {"v12 · primary", "v13 · canary", "unknown · unknown"}
    assert all(0 <= r["thumbs_down_rate"] <= 1 for r in dash.rows("timeseries 'Thumbs-down rate'"))
    ctr = dash.rows("timeseries 'CTR'")
    assert all(0 <= r["ctr"] <= 1 for r in ctr) and any(r["ctr"] > 0 for r in ctr)
    # only the ranker's versions have clicks: the other models draw no flat 0% series
    assert {r["series"] for r in ctr} == {"r7 · primary", "r8 · canary"}
    assert all(r["reward_mean"] is not None for r in dash.rows("timeseries 'Reward (mean)'"))
    latency = dash.rows("timeseries 'Latency p50 / p95 / p99'")
    assert latency and all(0 < r["p50"] <= r["p95"] <= r["p99"] for r in latency)
    # The degraded canary shows: after 00:15 its thumbs-down rate is above the primary's.
    degraded = [r for r in dash.rows("timeseries 'Thumbs-down rate'")
                if r["time"] >= datetime(2026, 1, 1, 0, 15)]  # fmt: skip
    canary = [r["thumbs_down_rate"] for r in degraded if r["series"] == "2026-02 · canary"]
    primary = [r["thumbs_down_rate"] for r in degraded if r["series"] == "2026-01 · primary"]
    assert len(canary) >= 4 and len(primary) >= 4 and min(canary) > max(primary)


def _counted_feedback(store: Store, where: str = "1") -> int:
    """Feedback events in the store, less those that missed their 1m window (late)."""
    events = store.scalar(f"SELECT count() FROM pulse.events FINAL WHERE {where}")
    late = store.scalar(
        "SELECT uniqExact(event_id) FROM pulse.metrics_late FINAL "
        f"WHERE window = '1m' AND stream = 'feedback' AND {where}"
    )
    return int(events) - int(late)


def test_volumes_equal_direct_counts_of_the_store(store: Store) -> None:
    dash = Dashboard(store)
    expected = _counted_feedback(store)
    assert expected > 5000
    volume = dash.rows("timeseries 'Feedback volume'")
    assert sum(r["feedback"] for r in volume) == expected
    assert dash.rows("stat 'Feedback'") == [{"feedback": expected}]

    reasons = dash.rows("timeseries 'Dead letters by reason'")
    direct = dict(store.rows("SELECT error, count() FROM pulse.dead_letters FINAL GROUP BY error"))
    summed: dict[str, int] = {}
    for row in reasons:
        summed[row["reason"]] = summed.get(row["reason"], 0) + row["dead_letters"]
    assert summed == direct and sum(direct.values()) > 100
    assert dash.rows("stat 'Dead letters'") == [{"dead_letters": sum(direct.values())}]
    assert len(dash.rows("table 'Recent dead letters'")) == 100


def test_alerts_are_annotations_at_their_event_time(store: Store) -> None:
    dash = Dashboard(store)
    firing = store.rows(
        "SELECT event_time, rule FROM pulse.alerts FINAL WHERE state = 'firing' ORDER BY 1, 2"
    )
    assert firing
    annotations = dash.rows("annotation 'Alerts firing'")
    assert [(a["time"], a["title"]) for a in annotations] == [
        (t, f"{rule}: firing") for t, rule in firing
    ]
    assert all("canary" in a["tags"].split(",") for a in annotations
               if a["title"].startswith("canary-thumbs-down"))  # fmt: skip
    assert dash.rows("stat 'Alerts fired'") == [{"firing": len(firing)}]
    total = store.scalar("SELECT count() FROM pulse.alerts FINAL")
    assert len(dash.rows("table 'Alert transitions'")) == total


def test_a_selection_narrows_every_panel_to_its_rows(store: Store) -> None:
    """One tenant and one model version: the series and the totals are theirs."""
    dash = Dashboard(store, {"tenant": ("acme",), "model_version": ("v12",)})
    names = {r["series"] for r in dash.rows("timeseries 'Accuracy'")}
    assert names == {"v12 · primary"}
    where = "tenant = 'acme' AND model_version = 'v12'"
    assert dash.rows("stat 'Feedback'") == [{"feedback": _counted_feedback(store, where)}]
    (direct,) = store.rows(
        "SELECT sum(correct_count) / sum(labeled_count) FROM pulse.metrics FINAL WHERE "
        f"window = '1m' AND {where} AND segment = '*' AND endpoint = '*'"
    )
    assert 0.5 < direct[0] < 1
    assert dash.rows("stat 'Accuracy'") == [{"accuracy": direct[0]}]
    # Another window: its own rows (1h: one window start for the ten minutes).
    hourly = Dashboard(store, {"window": ("1h",)})
    assert {r["time"] for r in hourly.rows("timeseries 'Accuracy'")} == {datetime(2026, 1, 1)}


def test_the_expander_refuses_what_it_does_not_model() -> None:
    time = _time()
    one = {"v": Selection(("it's", "b"))}
    assert expand("x IN (${v:sqlstring})", one, time) == "x IN ('it''s','b')"
    everything = {"v": Selection(("a", "b"), all=True, all_value="'*'")}
    assert expand("x IN (${v:sqlstring})", everything, time) == "x IN ('*')"
    for sql in ("$__timeFilter_ms(ts)", "${v:csv}", "${w}", "$v", "${v}"):
        with pytest.raises(ExpansionError):
            expand(sql, one, time)


def test_the_provisioning_examples_match_the_dashboard() -> None:
    """The data source is the plugin the dashboard queries, on the default database its
    `database` variable starts at; the provider loads a folder (where the JSON goes)."""
    folder = dashboard.OUTPUT.parent / "provisioning"
    (source,) = yaml.safe_load((folder / "datasources" / "clickhouse.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "grafana-clickhouse-datasource"
    database = next(v for v in _loaded()["templating"]["list"] if v["name"] == "database")
    assert source["jsonData"]["defaultDatabase"] == database["current"]["value"] == "pulse"
    assert "password" not in source["jsonData"]  # a secret: secureJsonData only
    (provider,) = yaml.safe_load((folder / "dashboards" / "feedback-pulse.yaml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
