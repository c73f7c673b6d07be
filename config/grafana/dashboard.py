"""Generates ``config/grafana/feedback-pulse.json``: the Feedback Pulse dashboard on the
ClickHouse data source (docs/dashboard.md).

Built with grafana-foundation-sdk (Grafana Labs' typed dashboard builders), so the JSON
follows Grafana's dashboard schema rather than a hand-kept copy of it; the ClickHouse
plugin's queries are in :mod:`config.grafana.clickhouse`, their SQL in
:mod:`config.grafana.sql`. Run ``.venv/bin/python -m config.grafana.dashboard`` after a
change and commit the JSON (tests/config/test_grafana.py fails while it is stale).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as builder
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from config.grafana import sql
from config.grafana.clickhouse import (
    DATASOURCE,
    PLUGIN,
    Format,
    SqlAnnotationTargetBuilder,
    SqlTarget,
    variable_query,
)
from operators.cells import KEPT_DIMS, ROLLUP_DIMS

OUTPUT = Path(__file__).with_name("feedback-pulse.json")
UID = "feedback-pulse"
ALL = model.VariableOption(selected=True, text=["All"], value=["$__all"])


class PanelIds:
    """Panel ids in layout order (the SDK leaves them unset; Grafana links need them)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last += 1
        return self._last


def _series_panel(
    ids: PanelIds,
    title: str,
    description: str,
    query: str,
    unit: str,
    legend: tuple[str, ...] = ("mean", "lastNotNull"),  # Grafana reducer ids
) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .id(ids.next())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(SqlTarget(query, Format.TIME_SERIES))
        .unit(unit)
        .display_name("${__field.labels.series}")
        .legend(
            VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .calcs(list(legend))
        )
        .span_nulls(True)
        .height(8)
        .span(12)
    )


def _ratio_panel(
    ids: PanelIds, title: str, description: str, ratio: sql.Ratio, alias: str, unit: str
) -> timeseries.Panel:
    query = sql.by_version(ratio.sql, alias, measured=ratio.denominator, shown_if=ratio.about)
    return _series_panel(ids, title, description, query, unit)


def _rate_panel(
    ids: PanelIds, title: str, description: str, ratio: sql.Ratio, alias: str
) -> timeseries.Panel:
    return _ratio_panel(ids, title, description, ratio, alias, "percentunit").min(0).max(1)


def _stat(ids: PanelIds, title: str, description: str, query: str, unit: str) -> stat.Panel:
    return (
        stat.Panel()
        .id(ids.next())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(SqlTarget(query, Format.TABLE))
        .unit(unit)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .height(4)
        .span(4)
    )


def _variables() -> list[Any]:
    datasource = builder.DatasourceVariable("datasource").label("Data source").type(PLUGIN)
    database = (
        builder.QueryVariable("database")
        .label("Database")
        .description("The ClickHouse database Feedback Pulse writes (clickhouse.database).")
        .datasource(DATASOURCE)
        .query(variable_query(sql.DATABASES))
        .current(model.VariableOption(selected=True, text="pulse", value="pulse"))
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
    )
    window = (
        builder.QueryVariable("window")
        .label("Window")
        .description("A configured window (`windows` in the settings) with metric rows.")
        .datasource(DATASOURCE)
        .query(variable_query(sql.WINDOWS))
        .current(model.VariableOption(selected=True, text="1m", value="1m"))
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
    )
    variables: list[Any] = [datasource, database, window]
    for dim in (*KEPT_DIMS, *ROLLUP_DIMS):
        variable = (
            builder.QueryVariable(dim)
            .label(dim)
            .datasource(DATASOURCE)
            .query(variable_query(sql.dim_values(dim)))
            .multi(True)
            .include_all(True)
            .current(ALL)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        )
        if dim in ROLLUP_DIMS:
            variable = variable.all_value(sql.ALL_ROLLUP).description(
                f"All: the rollup rows ({dim} = '*'); a selection adds up its rows."
            )
        else:
            variable = variable.description("All: every value, added up.")
        variables.append(variable)
    return variables


def _annotation(name: str, color: str, states: tuple[str, ...]) -> builder.AnnotationQuery:
    return (
        builder.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(color)
        .target(SqlAnnotationTargetBuilder(sql.alert_annotations(states)))
    )


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    ids = PanelIds()
    dash = (
        builder.Dashboard("Feedback Pulse")
        .uid(UID)
        .description(
            "Model quality from user feedback, by model version and deployment (canary vs "
            "primary), from the ClickHouse tables Feedback Pulse writes."
        )
        .tags(["feedback-pulse", "clickhouse", "ml"])
        .timezone("utc")
        .time("now-6h", "now")
        .refresh("30s")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .variables(_variables())
        .annotations(
            [
                _annotation("Alerts firing", "red", ("firing",)),
                _annotation("Alerts resolved", "green", ("resolved",)),
            ]
        )
    )
    dash = dash.with_row(builder.Row("Overview").id(ids.next()))
    overview: list[Builder[model.Panel]] = [
        _stat(ids, "Accuracy", "Correct labels / labels, over the range.",
              sql.total(sql.ACCURACY.sql, "accuracy"), "percentunit"),
        _stat(ids, "Thumbs-down rate", "Thumbs down / thumbs, over the range.",
              sql.total(sql.THUMBS_DOWN_RATE.sql, "thumbs_down_rate"), "percentunit"),
        _stat(ids, "CTR", "Clicks / impressions (inferences), over the range.",
              sql.total(sql.CTR.sql, "ctr"), "percentunit"),
        _stat(ids, "Feedback", "Feedback events counted in the selected windows.",
              sql.total(sql.FEEDBACK, "feedback"), "short"),
        _stat(ids, "Dead letters", "Events that could not be used, written in the range.",
              sql.DEAD_LETTERS_TOTAL, "short"),
        _stat(ids, "Alerts fired", "Alert transitions to firing in the range.",
              sql.FIRING_TOTAL, "short"),
    ]  # fmt: skip
    for panel in overview:
        dash = dash.with_panel(panel)
    dash = dash.with_row(builder.Row("Quality by model version (canary vs primary)").id(ids.next()))
    quality: list[Builder[model.Panel]] = [
        _rate_panel(ids, "Accuracy", "Correct labels / labels per time bucket.",
                    sql.ACCURACY, "accuracy"),
        _rate_panel(ids, "Error rate", "1 - accuracy: wrong labels / labels.",
                    sql.ERROR_RATE, "error_rate"),
        _rate_panel(ids, "Thumbs-down rate", "Thumbs down / (thumbs up + thumbs down).",
                    sql.THUMBS_DOWN_RATE, "thumbs_down_rate"),
        _ratio_panel(ids, "Reward (mean)", "Sum of rewards / reward events.",
                     sql.REWARD_MEAN, "reward_mean", "none"),
        _rate_panel(ids, "CTR", "Clicks / impressions (inferences served).",
                    sql.CTR, "ctr"),
        _series_panel(ids, "Latency p50 / p95 / p99",
                      "Inference latency percentiles. Percentiles do not add up: a point is "
                      "the highest among the selected tenants, models and windows in it.",
                      sql.LATENCY, "ms")
        .display_name("${__field.labels.series} ${__field.name}"),
    ]  # fmt: skip
    for panel in quality:
        dash = dash.with_panel(panel)
    dash = dash.with_row(builder.Row("Traffic and dead letters").id(ids.next()))
    volume = (
        _series_panel(
            ids,
            "Feedback volume",
            "Feedback events per time bucket. With a sliding window an event is counted "
            "in every window that covers it: pick a tumbling window for volumes.",
            sql.by_version(sql.FEEDBACK, "feedback"),
            "short",
            legend=("sum",),
        )
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(StackingConfig().mode(common.StackingMode.NORMAL))
    )
    dead_letters = (
        _series_panel(
            ids,
            "Dead letters by reason",
            "Events that could not be used, by reason code, at the time they were written "
            "(they carry no trusted event time or dims).",
            sql.DEAD_LETTERS_BY_REASON,
            "short",
            legend=("sum",),
        )
        .display_name("${__field.labels.reason}")
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(StackingConfig().mode(common.StackingMode.NORMAL))
    )
    recent = (
        table.Panel()
        .id(ids.next())
        .title("Recent dead letters")
        .description("The latest 100 in the range: where each came from and why.")
        .datasource(DATASOURCE)
        .with_target(SqlTarget(sql.DEAD_LETTERS_RECENT, Format.TABLE))
        .height(8)
        .span(24)
    )
    traffic: list[Builder[model.Panel]] = [volume, dead_letters, recent]
    for panel in traffic:
        dash = dash.with_panel(panel)
    dash = dash.with_row(builder.Row("Alerts").id(ids.next()))
    alerts = (
        table.Panel()
        .id(ids.next())
        .title("Alert transitions")
        .description(
            "Every transition of the rules' alerts in the range (the `alerts` table); firing "
            "and resolved ones are also annotations on the time series."
        )
        .datasource(DATASOURCE)
        .with_target(SqlTarget(sql.ALERTS_TABLE, Format.TABLE))
        .height(8)
        .span(24)
    )
    dash = dash.with_panel(alerts)
    encoded: dict[str, Any] = json.loads(json.dumps(dash.build(), cls=JSONEncoder))
    return encoded


def render() -> str:
    """The JSON file's text: stable key order, so a change shows as a small diff."""
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
