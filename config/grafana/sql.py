"""The SQL behind every panel, variable and annotation of the dashboard.

Written for the tables of ``connectors/migrations/`` and read the way
:mod:`connectors.drilldown` reads them: with FINAL (one row per key, its latest version),
and with the rollup rows, whose rolled-up dims read ``"*"``. The rollup dims
(model_version, segment, endpoint) are variables whose "All" is that ``'*'`` row, so a
panel never adds a rollup row to its own parts. The kept dims (tenant, model_id,
deployment) are never rolled up: "All" selects every value, and the panels add their
rows up.

Ratios are recomputed from the summed counts (``sum(correct_count) /
sum(labeled_count)``), never averaged, so a point is exact for any selection of kept dims
and for a time bucket holding several tumbling windows. A sliding window covers an event
in several windows: its counts are counted that often (docs/dashboard.md). Latency
percentiles do not add up: a point is the highest percentile among the cells selected.

Grafana expands ``${var:sqlstring}`` (each value quoted, ``'`` doubled, comma-joined; a
custom "All" value goes in as written) before the plugin expands its macros
(``$__timeFilter``, ``$__timeInterval``); :mod:`config.grafana.expand` does the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from operators.cells import KEPT_DIMS, ROLLUP_DIMS

DB = "${database}"
WINDOW = "window = ${window:sqlstring}"
ALL_ROLLUP = "'*'"  # the custom "All" value of a rollup dim: its rollup row


def _in(dim: str) -> str:
    return f"{dim} IN (${{{dim}:sqlstring}})"


KEPT = " AND ".join(_in(dim) for dim in KEPT_DIMS)


def rollups(*by: str) -> str:
    """The rollup dims' filter. A dim in `by` is a series dim: its concrete rows, those
    selected (all of them when "All" is); the others use their selected rows, or the
    rollup row when "All" is."""
    parts = []
    for dim in ROLLUP_DIMS:
        if dim in by:
            parts.append(f"{dim} != '*' AND ({ALL_ROLLUP} IN (${{{dim}:sqlstring}}) OR {_in(dim)})")
        else:
            parts.append(_in(dim))
    return " AND ".join(parts)


def _metrics_where(*by: str) -> str:
    return f"{WINDOW} AND $__timeFilter(window_start) AND {KEPT} AND {rollups(*by)}"


SERIES = "concat(model_version, ' · ', deployment)"


def by_version(
    value: str, alias: str, measured: str | None = None, shown_if: str | None = None
) -> str:
    """A time series per model version × deployment (canary vs primary), per time bucket;
    only the buckets where `measured` (a ratio's denominator) is not 0, so a version
    without that kind of feedback draws no empty series; and with `shown_if` (a count),
    only the series where it is not 0 over the whole range."""
    having = f"HAVING {measured} > 0\n" if measured else ""
    select = f"SELECT $__timeInterval(window_start) AS time, {SERIES} AS series, {value} AS {alias}"
    if shown_if:
        select += f",\n    sum({shown_if}) OVER (PARTITION BY series) AS series_total"
    query = (
        f"{select}\n"
        f"FROM {DB}.metrics FINAL\n"
        f"WHERE {_metrics_where('model_version')}\n"
        "GROUP BY time, series\n"
        f"{having}"
    )
    if shown_if:
        query = f"SELECT time, series, {alias} FROM (\n{query})\nWHERE series_total > 0\n"
    return query + "ORDER BY time, series"


def total(value: str, alias: str) -> str:
    """One number over the time range, for the selection."""
    return f"SELECT {value} AS {alias}\nFROM {DB}.metrics FINAL\nWHERE {_metrics_where()}"


@dataclass(frozen=True)
class Ratio:
    """A ratio of summed counts (null where the denominator is 0)."""

    numerator: str
    denominator: str
    complement: bool = False  # 1 - numerator / denominator
    # The events the ratio is about, where the denominator counts others too (a CTR's
    # clicks among all impressions): a series with none in the range is not drawn.
    about: str | None = None

    @property
    def sql(self) -> str:
        value = f"{self.numerator} / nullIf({self.denominator}, 0)"
        return f"1 - {value}" if self.complement else value


ACCURACY = Ratio("sum(correct_count)", "sum(labeled_count)")
ERROR_RATE = Ratio("sum(correct_count)", "sum(labeled_count)", complement=True)
THUMBS_DOWN_RATE = Ratio("sum(thumbs_down)", "sum(thumbs_up) + sum(thumbs_down)")
REWARD_MEAN = Ratio("sum(reward_sum)", "sum(reward_count)")
CTR = Ratio("sum(clicks)", "sum(impressions)", about="sum(clicks)")
FEEDBACK = "sum(feedback_count)"

LATENCY = (
    f"SELECT $__timeInterval(window_start) AS time, {SERIES} AS series,\n"
    "    max(latency_p50) AS p50, max(latency_p95) AS p95, max(latency_p99) AS p99\n"
    f"FROM {DB}.metrics FINAL\n"
    f"WHERE {_metrics_where('model_version')}\n"
    "GROUP BY time, series\n"
    "HAVING p50 IS NOT NULL\n"  # cells without latencies (unjoined feedback) draw nothing
    "ORDER BY time, series"
)

# Dead letters carry no event time or dims: they are placed at the time they were written.
DEAD_LETTERS_BY_REASON = (
    "SELECT $__timeInterval(received_at) AS time, error AS reason, count() AS dead_letters\n"
    f"FROM {DB}.dead_letters FINAL\n"
    "WHERE $__timeFilter(received_at)\n"
    "GROUP BY time, reason\n"
    "ORDER BY time, reason"
)
DEAD_LETTERS_TOTAL = (
    f"SELECT count() AS dead_letters\nFROM {DB}.dead_letters FINAL\n"
    "WHERE $__timeFilter(received_at)"
)
DEAD_LETTERS_RECENT = (
    "SELECT received_at AS time, topic, partition, offset, error, reason,\n"
    "    substring(raw, 1, 200) AS raw_start, raw_size\n"
    f"FROM {DB}.dead_letters FINAL\n"
    "WHERE $__timeFilter(received_at)\n"
    "ORDER BY received_at DESC, topic, partition, offset DESC\n"
    "LIMIT 100"
)


def _alert_dims() -> str:
    """An alert's dims are '' where it does not carry them (and '*' where its rows were a
    rollup): those always match; a dim it pins must be selected."""
    parts = [f"({dim} = '' OR {_in(dim)})" for dim in KEPT_DIMS]
    parts += [
        f"({dim} IN ('', '*') OR {ALL_ROLLUP} IN (${{{dim}:sqlstring}}) OR {_in(dim)})"
        for dim in ROLLUP_DIMS
    ]
    return " AND ".join(parts)


ALERT_WHERE = f"$__timeFilter(event_time) AND {_alert_dims()}"
_ALERT_DIMS = "[tenant, model_id, deployment, model_version, segment, endpoint]"


def alert_annotations(states: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{s}'" for s in states)
    return (
        "SELECT event_time AS time, concat(rule, ': ', state) AS title,\n"
        "    concat(severity, ' — ', reason) AS text,\n"
        f"    arrayStringConcat(arrayFilter(x -> x NOT IN ('', '*'), [rule, severity, "
        f"{_ALERT_DIMS[1:-1]}]), ',') AS tags\n"
        f"FROM {DB}.alerts FINAL\n"
        f"WHERE state IN ({listed}) AND {ALERT_WHERE}\n"
        "ORDER BY time"
    )


ALERTS_TABLE = (
    "SELECT event_time AS time, rule, state, previous, severity, window,\n"
    "    arrayStringConcat(arrayFilter(x -> x NOT IN ('', '*'), "
    f"{_ALERT_DIMS}), ' / ') AS dims,\n"
    "    value, threshold, samples, reason, muted, notified\n"
    f"FROM {DB}.alerts FINAL\n"
    f"WHERE {ALERT_WHERE}\n"
    "ORDER BY event_time DESC, rule\n"
    "LIMIT 200"
)
FIRING_TOTAL = (
    f"SELECT count() AS firing\nFROM {DB}.alerts FINAL\nWHERE state = 'firing' AND {ALERT_WHERE}"
)

# ---- template variables: each one's values, narrowed by the variables before it ----------
DATABASES = (
    "SELECT database FROM system.tables\n"
    "WHERE name IN ('metrics', 'alerts', 'dead_letters')\n"
    "GROUP BY database HAVING count() = 3\n"
    "ORDER BY database"
)
WINDOWS = f"SELECT DISTINCT window FROM {DB}.metrics ORDER BY window"


def dim_values(dim: str) -> str:
    """A dim's values in the chosen window, within the kept dims chosen before it."""
    narrowed = [WINDOW]
    for kept in KEPT_DIMS:
        if kept == dim:
            break
        narrowed.append(_in(kept))
    if dim in ROLLUP_DIMS:  # after every kept dim; its rollup row is the "All"
        narrowed.append(f"{dim} != '*'")
    return (
        f"SELECT DISTINCT {dim} FROM {DB}.metrics\nWHERE {' AND '.join(narrowed)}\nORDER BY {dim}"
    )
