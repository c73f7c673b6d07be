#!/usr/bin/env python3
"""The vectorized ceiling: one chDB SQL query computing the flow's 1-minute finest-cell rows.

    python scripts/bench_ceiling.py query LOG_DIR OUT.parquet [--bins 10]
    python scripts/bench_ceiling.py compare HOME OUT.parquet   # the flow's rows in HOME
    python scripts/bench.py --ceiling                        # against the flow (measure())

Issue 13 judges the flow against what a vectorized engine does with the same work. This
module is that reference: one ClickHouse query (the engine the flow writes to, embedded
as chDB, so no new dependency) over the local log's JSONL segments, producing for every
1-minute window and full dims cell (tenant, model_id, deployment, model_version, segment,
endpoint) the `metrics` row the flow writes (:data:`operators.metrics.METRIC_COLUMNS`),
with the flow's semantics that matter for those rows:

* only the contract's valid lines (:mod:`operators.contract`: types, required fields,
  id and dim lengths, reserved dim values, bounds of every number, kinds and their
  values, ``ts`` as RFC 3339 with a zone or epoch ms inside [min_ts, max_ts), the size
  limit); invalid lines are skipped. Not checked: attribute maps' value types, strings'
  65,536-character cap, and Python's wider notion of whitespace when labels are trimmed;
* inferences deduplicated by request_id and feedback by event_id, the first occurrence
  in log order (segment path, line number) winning;
* feedback joined to its inference wherever that is in the log; unjoined feedback counts
  in the ``unknown`` cell; feedback naming a tenant other than its inference's is
  refused (not counted: :func:`operators.join.tenant_refusal`);
* tumbling 1-minute windows on ``ts`` (inference metrics on the inference's, feedback
  metrics on the feedback's), sums on the 2^-20 grid as the flow rounds them
  (:mod:`operators.metrics`), so they are exact and order-independent;
* latency quantiles as the order statistic at DDSketch's rank rule (floor(q·(n-1))) of
  the exact values: the flow's sketch answers within its 1 % relative accuracy of them.

A batch query knows no time: it has no watermark, so rows the flow's streaming time
changes can differ — events the flow finds late (their window final before they arrive)
count in `metrics_late`, not in the row, and feedback whose inference comes more than
`join.wait` (plus the out-of-orderness) of event time after it counts unjoined in the
flow but joined here. On a log without late events and with inferences before their
feedback (the generator's), the rows are equal (tests/scripts/test_ceiling.py).

Run as a script so that chDB lives in its own process (one process holds one chDB
session); :func:`run_ceiling` does that and reports the query's time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from operators.metrics import (  # noqa: E402
    HISTOGRAM_METRIC,
    LATENCY_METRICS,
    METRIC_COLUMNS,
    METRICS,
)
from operators.sketch import RELATIVE_ACCURACY  # noqa: E402

STREAM_GLOB = "{inferences,feedback}/p*/*.jsonl"
DIMS = ("tenant", "model_id", "deployment", "model_version", "segment", "endpoint")
WINDOW_MS = 60_000
MIN_TS_MS = 946_684_800_000  # validation.min_ts default, 2000-01-01
MAX_TS_MS = 4_102_444_800_000  # validation.max_ts default, 2100-01-01
MAX_EVENT_BYTES = 65_536
QUANTUM = 1_048_576  # 1 / operators.metrics.QUANTUM
RESIDUAL = 1 << 40  # 1 / operators.metrics.RESIDUAL_QUANTUM

_ID = "(dynamicType({f}) = 'String' AND length({f}::String) BETWEEN 1 AND 128)"
_NAME = "(dynamicType({f}) = 'String' AND length({f}::String) BETWEEN 1 AND 256)"
_DIM = f"({_NAME} AND {{f}}::String NOT IN ('*', 'unknown'))"
_OPT_DIM = "({f} IS NULL AND NOT has_{n} OR " + _DIM + ")"
_NUMBER = "(dynamicType({f}) IN ('Int64', 'UInt64', 'Float64'))"
# Labels and predictions compare as trimmed strings, integral floats as integers. A
# Dynamic column makes an integer Float64 when its block also holds floats: JSONType on
# the line tells them apart again (only for the numbers: short-circuited), and the raw
# text keeps an int64 exact.
_AS_LABEL = """multiIf(
    {f} IS NULL, NULL,
    dynamicType({f}) = 'String', trim(BOTH ' \\t\\n\\r\\x0B\\x0C' FROM {f}::String),
    dynamicType({f}) = 'Int64', toString(dynamicElement({f}, 'Int64')),
    dynamicType({f}) = 'Float64' AND JSONType(line, '{path}') = 'Int64',
        JSONExtractRaw(line, '{path}'),
    dynamicType({f}) = 'Float64' AND dynamicElement({f}, 'Float64')
        = round(dynamicElement({f}, 'Float64')) AND abs(dynamicElement({f}, 'Float64')) < 9.2e18,
        toString(toInt64(dynamicElement({f}, 'Float64'))),
    toString({f}))"""
# A scalar label or prediction: a string, an int64, a finite float.
_SCALAR = (
    "(dynamicType({f}) = 'String' OR dynamicType({f}) = 'Int64' OR dynamicType({f}) = 'Float64')"
)


def _num(f: str) -> str:
    """A Dynamic holding a JSON number as Float64 (NULL for any other type: a cast of a
    Dynamic that holds an object would fail for the whole column)."""
    return (
        f"coalesce(toFloat64(dynamicElement({f}, 'Int64')), "
        f"toFloat64(dynamicElement({f}, 'UInt64')), dynamicElement({f}, 'Float64'))"
    )


def _q(f: str) -> str:
    """A value rounded to the 2^-20 grid, half to even, as operators.metrics.quantized."""
    return f"(roundBankers({f} * {QUANTUM}) / {QUANTUM})"


def ceiling_sql(glob: str, bins: int = 10) -> str:
    """The query: every 1-minute finest-cell row of `metrics`, from the log files at `glob`."""
    f = {  # the fields of the parsed tuple, by name
        name: f"x_{name}"
        for name in (
            "type", "request_id", "event_id", "ts", "model_id", "model_version", "endpoint",
            "segment", "tenant", "deployment", "prediction", "confidence", "latency_ms",
            "user_id", "session_id", "kind", "value", "attributes",
        )
    }  # fmt: skip
    fields = ", ".join(f"{name} Dynamic" for name in f)
    untupled = ", ".join(f"t.{name} AS {column}" for name, column in f.items())
    ts_ok = f"""multiIf(
        dynamicType({f["ts"]}) = 'Int64', dynamicElement({f["ts"]}, 'Int64'),
        dynamicType({f["ts"]}) = 'Float64' AND JSONType(line, 'ts') = 'Int64',
            JSONExtractInt(line, 'ts'),
        dynamicType({f["ts"]}) = 'String' AND match({f["ts"]}::String,
            '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}[Tt][0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}(\\\\.[0-9]+)?([Zz]|[+-][0-9]{{2}}:[0-9]{{2}})$'),
            intDiv(toUnixTimestamp64Micro(
                parseDateTime64BestEffortOrNull({f["ts"]}::String, 6, 'UTC')), 1000),
        NULL)"""  # fmt: skip
    inference_ok = " AND ".join(
        [
            _ID.format(f=f["request_id"]),
            *(_DIM.format(f=f[d]) for d in ("model_id", "model_version", "endpoint")),
            *(_OPT_DIM.format(f=f[d], n=d) for d in ("segment", "tenant", "deployment")),
            f"({f['prediction']} IS NULL OR {_SCALAR.format(f=f['prediction'])})",
            f"({f['confidence']} IS NULL OR {_NUMBER.format(f=f['confidence'])}"
            f" AND {_num(f['confidence'])} BETWEEN 0 AND 1)",
            f"({f['latency_ms']} IS NULL OR {_NUMBER.format(f=f['latency_ms'])}"
            f" AND {_num(f['latency_ms'])} BETWEEN 0 AND 1e9)",
        ]
    )
    v, kind = f["value"], f["kind"]
    value_ok = f"""multiIf(
        {kind}::String = 'label', {_SCALAR.format(f=v)},
        {kind}::String IN ('thumbs', 'click', 'conversion'), dynamicType({v}) = 'Bool',
        {kind}::String = 'rating', {_NUMBER.format(f=v)} AND {_num(v)} BETWEEN 1 AND 5,
        {kind}::String = 'reward', {_NUMBER.format(f=v)} AND abs({_num(v)}) <= 1e9,
        {kind}::String = 'dwell', {_NUMBER.format(f=v)} AND {_num(v)} BETWEEN 0 AND 1e9,
        {kind}::String = 'preference', preference.winner IN ('a', 'b', 'tie')
            AND length(preference.policy_a) BETWEEN 1 AND 256
            AND length(preference.policy_b) BETWEEN 1 AND 256
            AND value_keys = 3 AND preference_types = 1,
        {kind}::String = 'report', length(report.category) BETWEEN 1 AND 256
            AND report_types = 1
            AND (report.amount IS NULL OR abs({_num("report.amount")}) <= 1e9),
        false)"""
    feedback_ok = " AND ".join(
        [
            *(_ID.format(f=f[name]) for name in ("event_id", "request_id", "user_id")),
            f"({f['session_id']} IS NULL OR {_ID.format(f=f['session_id'])})",
            f"dynamicType({kind}) = 'String'",
            _OPT_DIM.format(f=f["tenant"], n="tenant"),
            value_ok,
        ]
    )
    conf, lat = _num(f["confidence"]), _num(f["latency_ms"])
    hist = ", ".join(f"countIf(bin = {i})" for i in range(bins))
    fb_num = f"""multiIf(
        kind IN ('rating', 'reward', 'dwell'), {_q("num")},
        kind IN ('thumbs', 'click', 'conversion'), num,
        kind = 'report', {_q("num")}, 0.)"""
    return f"""
WITH
lines AS (
    SELECT _path AS path, _row_number AS pos, line,
           length(line) <= {MAX_EVENT_BYTES} AND JSONType(line) = 'Object' AS object
    FROM file('{glob}', 'LineAsString')
),
parsed AS (
    SELECT path, pos, line,
           JSONExtract(line, 'Tuple({fields})') AS t,
           JSONHas(line, 'segment') AS has_segment, JSONHas(line, 'tenant') AS has_tenant,
           JSONHas(line, 'deployment') AS has_deployment
    FROM lines WHERE object
),
typed AS (
    SELECT *, {ts_ok} AS ts_ms
    FROM (
        SELECT path, pos, line, has_segment, has_tenant, has_deployment, {untupled},
            if(t.kind::String = 'preference', JSONExtract(line, 'value',
                'Tuple(winner String, policy_a String, policy_b String)'), NULL) AS preference,
            if(t.kind::String = 'preference', length(JSONExtractKeys(line, 'value')), 0)
                AS value_keys,
            if(t.kind::String = 'preference', arrayAll(k -> JSONType(line, 'value', k) = 'String',
                ['winner', 'policy_a', 'policy_b']), 0) AS preference_types,
            if(t.kind::String = 'report', JSONExtract(line, 'value',
                'Tuple(category String, amount Dynamic)'), NULL) AS report,
            if(t.kind::String = 'report', JSONType(line, 'value', 'category') = 'String'
                AND arrayAll(k -> k IN ('category', 'amount'), JSONExtractKeys(line, 'value'))
                AND (report.amount IS NULL OR {_NUMBER.format(f="report.amount")}), 0)
                AS report_types
        FROM parsed
    )
    WHERE ts_ms >= {MIN_TS_MS} AND ts_ms < {MAX_TS_MS}
),
valid AS (
        SELECT path, pos, line, ts_ms,
               {f["type"]}::String = 'inference' AS inference,
               if(inference, {f["request_id"]}::String, {f["event_id"]}::String) AS id,
               {f["request_id"]}::String AS request_id,
               if({f["tenant"]} IS NULL, 'default', {f["tenant"]}::String) AS tenant,
               {f["model_id"]}::String AS model_id,
               if({f["deployment"]} IS NULL, 'primary', {f["deployment"]}::String) AS deployment,
               {f["model_version"]}::String AS model_version,
               if({f["segment"]} IS NULL, 'default', {f["segment"]}::String) AS segment,
               {f["endpoint"]}::String AS endpoint,
               if({f["tenant"]} IS NULL, '', {f["tenant"]}::String) AS claimed,
               {_AS_LABEL.format(f=f["prediction"], path="prediction")} AS prediction,
               {conf} AS confidence, {lat} AS latency_ms,
               {kind}::String AS kind,
               multiIf(
                   kind IN ('thumbs', 'click', 'conversion'),
                       if(dynamicElement({v}, 'Bool'), 1., 0.),
                   kind IN ('rating', 'reward', 'dwell'), {_num(v)},
                   kind = 'report', ifNull({_num("report.amount")}, 0.),
                   0.) AS num,
               if(kind = 'label', {_AS_LABEL.format(f=v, path="value")}, NULL) AS label,
               kind = 'label' AND (dynamicType({v}) IN ('String', 'Int64')
                   OR dynamicType({v}) = 'Float64' AND JSONType(line, 'value') = 'Int64')
                   AS categorical
        FROM typed
        WHERE dynamicType({f["type"]}) = 'String' AND multiIf(
            {f["type"]}::String = 'inference', {inference_ok},
            {f["type"]}::String = 'feedback', {feedback_ok},
            false)
),
deduped AS MATERIALIZED (
    SELECT inference, id,
           argMin((ts_ms, request_id, tenant, model_id, deployment, model_version, segment,
                   endpoint, prediction, confidence, latency_ms, kind, num, label, categorical,
                   claimed),
                  (path, pos)) AS r
    FROM valid
    GROUP BY inference, id
),
inferences AS (
    SELECT id AS request_id, 1 AS present,
           (r.1, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11) AS i
    FROM deduped WHERE inference
),
feedback AS (
    SELECT id AS event_id, (r.2, r.1, r.12, r.13, r.14, r.15, r.16) AS e
    FROM deduped WHERE NOT inference
),
joined AS MATERIALIZED (
    SELECT e.2 AS ts_ms, e.3 AS kind, e.4 AS num, e.5 AS label, e.6 AS categorical,
           ifNull(present, 0) = 1 AS found,
           if(found, (i.2, i.3, i.4, i.5, i.6, i.7),
              ('unknown', 'unknown', 'unknown', 'unknown', 'unknown', 'unknown')) AS cell,
           if(found, i.8, NULL) AS prediction
    FROM feedback LEFT JOIN inferences ON e.1 = inferences.request_id
    WHERE NOT found OR e.7 = '' OR e.7 = i.2  -- feedback naming another tenant is refused
),
events AS (
    SELECT intDiv(i.1, {WINDOW_MS}) * {WINDOW_MS} AS window_ms,
           (i.2, i.3, i.4, i.5, i.6, i.7) AS cell,
           1 AS inference, i.9 AS confidence, i.10 AS latency_ms,
           if(confidence IS NULL, -1, least(toInt64(confidence * {bins}), {bins - 1})) AS bin,
           0 AS feedback, 0 AS unjoined, '' AS kind, 0. AS num, 0 AS correct
    FROM inferences
    UNION ALL
    SELECT intDiv(ts_ms, {WINDOW_MS}) * {WINDOW_MS}, cell,
           0, NULL, NULL, -1, 1, NOT found, kind, ifNull({fb_num}, 0.),
           kind = 'label' AND prediction IS NOT NULL AND label = prediction
    FROM joined
),
main AS (
    SELECT window_ms, cell,
        sum(feedback) AS feedback_count, sum(unjoined) AS unjoined_count,
        countIf(kind = 'label') AS labeled_count, sum(correct) AS correct_count,
        countIf(kind = 'thumbs' AND num > 0) AS thumbs_up,
        countIf(kind = 'thumbs' AND num <= 0) AS thumbs_down,
        countIf(kind = 'rating') AS rating_count, sumIf(num, kind = 'rating') AS rating_sum,
        countIf(kind = 'rating' AND num >= 4) AS rating_high_count,
        countIf(kind = 'reward') AS reward_count, sumIf(num, kind = 'reward') AS reward_sum,
        sumIf({_q("num * num")}, kind = 'reward') AS reward_sumsq,
        sumIf(roundBankers((num * num - {_q("num * num")}) * {RESIDUAL}) / {RESIDUAL},
              kind = 'reward') AS reward_sumsq_residual,
        countIf(kind = 'click' AND num > 0) AS clicks,
        countIf(kind = 'conversion' AND num > 0) AS conversions,
        countIf(kind = 'dwell') AS dwell_count, sumIf(num, kind = 'dwell') AS dwell_sum,
        countIf(kind = 'preference') AS preference_count,
        countIf(kind = 'report') AS report_count,
        sumIf(num, kind = 'report') AS report_amount_sum,
        sum(inference) AS inference_count, count(confidence) AS confidence_count,
        sum({_q("ifNull(confidence, 0)")}) AS confidence_sum,
        [{hist}] AS confidence_hist,
        arraySort(groupArray(latency_ms)) AS latencies
    FROM events
    GROUP BY window_ms, cell
),
classes AS (
    SELECT window_ms, cell, avg(2 * tp / (2 * tp + fp + fn)) AS macro_f1, 1 AS seen
    FROM (
        SELECT intDiv(ts_ms, {WINDOW_MS}) * {WINDOW_MS} AS window_ms, cell, c.1 AS class,
               sum(c.2) AS tp, sum(c.3) AS fp, sum(c.4) AS fn
        FROM joined
        ARRAY JOIN if(label = prediction, [(label, 1, 0, 0)],
                      [(label, 0, 0, 1), (prediction, 0, 1, 0)]) AS c
        WHERE categorical AND prediction IS NOT NULL
        GROUP BY window_ms, cell, class
    )
    GROUP BY window_ms, cell
)
SELECT
    window_ms AS window_start,
    cell.1 AS tenant, cell.2 AS model_id, cell.3 AS deployment,
    cell.4 AS model_version, cell.5 AS segment, cell.6 AS endpoint,
    feedback_count, unjoined_count, labeled_count, correct_count,
    if(labeled_count > 0, correct_count / labeled_count, NULL) AS accuracy,
    if(labeled_count > 0, 1 - correct_count / labeled_count, NULL) AS error_rate,
    if(classes.seen = 1, classes.macro_f1, NULL) AS macro_f1,
    thumbs_up, thumbs_down,
    if(thumbs_up + thumbs_down > 0, thumbs_down / (thumbs_up + thumbs_down), NULL)
        AS thumbs_down_rate,
    rating_count,
    if(rating_count > 0, rating_sum / rating_count, NULL) AS rating_mean,
    if(rating_count > 0, rating_high_count / rating_count, NULL) AS csat,
    reward_count, reward_sum,
    if(reward_count > 0, reward_sum / reward_count, NULL) AS reward_mean,
    if(reward_count > 1, sqrt(greatest((reward_sumsq + reward_sumsq_residual
        - reward_sum * reward_sum / reward_count) / (reward_count - 1), 0)), NULL)
        AS reward_stddev,
    inference_count AS impressions, clicks,
    if(inference_count > 0, clicks / inference_count, NULL) AS ctr,
    conversions,
    if(inference_count > 0, conversions / inference_count, NULL) AS conversion_rate,
    if(dwell_count > 0, dwell_sum / dwell_count, NULL) AS dwell_mean,
    preference_count, report_count, report_amount_sum, inference_count,
    if(confidence_count > 0, confidence_sum / confidence_count, NULL) AS confidence_mean,
    feedback_count / 60 AS feedback_per_s, inference_count / 60 AS inference_per_s,
    (labeled_count - correct_count) / 60 AS errors_per_s,
    if(empty(latencies), NULL, latencies[toUInt64(floor(0.5 * (length(latencies) - 1))) + 1])
        AS latency_p50,
    if(empty(latencies), NULL, latencies[toUInt64(floor(0.95 * (length(latencies) - 1))) + 1])
        AS latency_p95,
    if(empty(latencies), NULL, latencies[toUInt64(floor(0.99 * (length(latencies) - 1))) + 1])
        AS latency_p99,
    confidence_hist
FROM main LEFT JOIN classes USING (window_ms, cell)
SETTINGS enable_materialized_cte = 1, input_format_try_infer_datetimes = 0,
    input_format_try_infer_dates = 0, input_format_json_try_infer_numbers_from_strings = 0
"""


@dataclass(frozen=True)
class CeilingRun:
    """One run of the query in its own process."""

    seconds: float  # the query alone (wall), measured inside the process
    cpu: float  # CPU seconds (user + system) of the query alone
    wall: float  # the whole process, start-up (Python, chDB) and the Parquet file included
    rows: int
    peak_rss_kib: int


def run_ceiling(log_root: Path, out: Path, bins: int = 10) -> CeilingRun:
    """Run the query over the log at `log_root` in a child process; rows to `out` (Parquet)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__)),
            "query",
            str(log_root),
            str(out),
            "--bins",
            str(bins),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"the ceiling query failed:\n{stderr.decode()[-3000:]}")
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    return CeilingRun(
        report["seconds"], report["cpu"], wall, report["rows"], report["peak_rss_kib"]
    )


FLOW_ROWS_SQL = """
SELECT * EXCEPT (window, window_end, extra_dims, final, version)
    REPLACE (toUnixTimestamp64Milli(window_start) AS window_start)
FROM {db}.metrics FINAL
WHERE window = '1m' AND final = 1 AND model_version != '*' AND segment != '*' AND endpoint != '*'
"""
# The 1-minute finest cells where the flow found late events (keys as row_key gives them).
LATE_CELLS_SQL = """
SELECT DISTINCT toInt64(toUnixTimestamp64Milli(window_start)), tenant, model_id, deployment,
    model_version, segment, endpoint
FROM pulse.metrics_late
WHERE window = '1m' AND model_version != '*' AND segment != '*' AND endpoint != '*'
"""
COUNTS = frozenset(
    name for name in METRIC_COLUMNS if name in METRICS and METRICS[name][0] == "UInt64"
)
SUM_TOLERANCE = 1e-9  # relative: sums are exact on the grid; ratios divide them
QUANTILE_TOLERANCE = RELATIVE_ACCURACY * (1 + 1e-9)  # the sketch's guarantee


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (int(row["window_start"]), *(row[d] for d in DIMS))


def differences(flow: list[dict[str, Any]], ceiling: list[dict[str, Any]]) -> list[str]:
    """Where the flow's 1-minute finest-cell rows and the ceiling's differ, in words, each
    line starting with the row's key (empty: equal). Counts and the histogram exactly,
    quantiles within the sketch's relative accuracy, the rest (sums, ratios) within
    SUM_TOLERANCE relative."""
    mine, theirs = {row_key(r): r for r in flow}, {row_key(r): r for r in ceiling}
    out = [f"{k} only in the flow" for k in sorted(mine.keys() - theirs.keys())]
    out += [f"{k} only in the ceiling" for k in sorted(theirs.keys() - mine.keys())]
    for key in sorted(mine.keys() & theirs.keys()):
        a, b = mine[key], theirs[key]
        for name in METRIC_COLUMNS:
            x, y = a[name], b[name]
            if name in COUNTS or name == HISTOGRAM_METRIC:
                same = _ints(x) == _ints(y)
            elif x is None or y is None or math.isnan(x) or math.isnan(y):
                same = (x is None or math.isnan(x)) and (y is None or math.isnan(y))
            else:
                tolerance = QUANTILE_TOLERANCE if name in LATENCY_METRICS else SUM_TOLERANCE
                same = math.isclose(x, y, rel_tol=tolerance, abs_tol=1e-12)
            if not same:
                out.append(f"{key} {name}: flow {x!r}, ceiling {y!r}")
    return out


def _ints(value: Any) -> list[int]:
    """A count or a histogram as a list of ints (a driver may return an array as text)."""
    if isinstance(value, str):
        value = json.loads(value)
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The ceiling's rows from its Parquet file."""
    import pyarrow.parquet as pq

    return list(pq.read_table(path).to_pylist())


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


ONE_MINUTE_CONFIG = {
    "windows": [{"name": "1m", "kind": "tumbling", "length": "1m"}],
    "aggregation": {"grouping_sets": [["model_version", "segment", "endpoint"]]},
}


def measure(home: Path, n: int, repeat: int, env: dict[str, str]) -> float:
    """The ceiling against the bounded flow over the same log (``home/log``), from one run:
    the flow's default config and a 1-minute-only config (no rollups, no other windows),
    both with recovery on, alternating with the query `repeat` times. Prints rates, each
    flow's ratio to the ceiling (wall best against best and round by round; CPU; process
    to process), peak RSS, and how the last flow run's 1-minute finest-cell rows compare
    with the query's. Returns the default config's best rate (events/s).

    The ratio issue 13 judges is the strict one: the query alone (timed inside its
    process) against the flow's whole process, whose start (imports, the store's
    migrations) and end (the final windows, the sink's last writes) it includes. Process
    to process counts both whole, the query's start-up (Python, chDB) and its Parquet
    output as well: the like-for-like figure, printed beside it, not instead of it."""
    from scripts.bench import _children_cpu, run_flow

    config = home / "one-minute.yaml"
    config.write_text(json.dumps(ONE_MINUTE_CONFIG))  # YAML is a superset of JSON
    configs = {
        "flow, default config": env,
        "flow, 1-minute-only config": {**env, "PULSE_CONFIG": str(config)},
    }
    out = home / "ceiling.parquet"
    ceilings: list[CeilingRun] = []
    flows: dict[str, list[tuple[float, int, float]]] = {label: [] for label in configs}
    for _ in range(repeat):
        ceilings.append(run_ceiling(home / "log", out))
        for label, extra in configs.items():
            before = _children_cpu()
            seconds, peak, _, _ = run_flow(home, extra)
            flows[label].append((seconds, peak, _children_cpu() - before))
    best = min(ceilings, key=lambda run: run.seconds)
    rate = n / best.seconds
    print(
        f"{'ceiling (chDB query, 1m cells):':<36} {rate:12,.0f} events/s  "
        f"query {best.seconds:.1f} s, CPU {best.cpu:.1f} s, process {best.wall:.1f} s; peak RSS"
        f" {best.peak_rss_kib / 1024:,.0f} MiB; {best.rows:,} rows"
    )
    print(f"  all runs: {', '.join(f'{c.seconds:.1f} s (CPU {c.cpu:.1f} s)' for c in ceilings)}")
    for label, runs in flows.items():
        seconds, _, cpu = min(runs)
        peak = max(r[1] for r in runs)
        pairs = ", ".join(f"{c.seconds / r[0]:.3f}" for c, r in zip(ceilings, runs, strict=True))
        whole = min(c.wall for c in ceilings) / seconds
        print(
            f"{label + ':':<36} {n / seconds:12,.0f} events/s  ratio {best.seconds / seconds:.3f}"
            f" (CPU {min(c.cpu for c in ceilings) / min(r[2] for r in runs):.3f}; process to"
            f" process {whole:.3f})  {seconds:.1f} s, CPU {cpu:.1f} s; peak RSS"
            f" {peak / 1024:,.0f} MiB (highest run)"
        )
        print(
            f"  round by round: {pairs}; all runs "
            + ", ".join(f"{r[0]:.1f} s (CPU {r[2]:.1f} s)" for r in runs)
        )
    found = compare(home, out)
    print(
        f"  rows of the last flow run (1-minute-only) against the query's: {found['rows']:,} "
        f"and {found['ceiling_rows']:,}; {found['differing']:,} differ, {found['late']:,} of "
        "them where the flow found late events "
        f"({found['only_flow']:,} only in the flow, {found['only_ceiling']:,} only in the query)"
    )
    for line in found["examples"]:
        print(f"    e.g. {line}")
    return n / min(flows["flow, default config"])[0]


def compare(home: Path, out: Path) -> dict[str, Any]:
    """The flow's rows in `home` against the query's in `out`, in a child process (the
    bench process must not hold a chDB path that the next flow run deletes)."""
    process = subprocess.run(
        [sys.executable, str(Path(__file__)), "compare", str(home), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if process.returncode != 0:
        raise RuntimeError(f"comparing the rows failed:\n{process.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(process.stdout.strip().splitlines()[-1])
    return result


def _compare(home: Path, out: Path) -> dict[str, Any]:
    from connectors.clickhouse import Target, connect

    client = connect(Target(f"chdb://{home / 'olap'}", "pulse"))
    try:
        flow = list(client.query(FLOW_ROWS_SQL.format(db="pulse")).named_results())
        late = {repr(tuple(row)) for row in client.query(LATE_CELLS_SQL).result_rows}
    finally:
        client.close()
    expected = read_rows(out)
    found = differences(flow, expected)
    differing = {line[: line.index(")") + 1] for line in found}
    return {
        "rows": len(flow),
        "ceiling_rows": len(expected),
        "differing": len(differing),
        "late": len(differing & late),
        "only_flow": sum(line.endswith("only in the flow") for line in found),
        "only_ceiling": sum(line.endswith("only in the ceiling") for line in found),
        "examples": found[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    query = sub.add_parser("query", help="run the query; rows to OUT (Parquet), times to stdout")
    query.add_argument("log", type=Path, help="the local log's root (<home>/log)")
    query.add_argument("out", type=Path, help="where the rows go (Parquet)")
    query.add_argument("--bins", type=int, default=10, help="aggregation.confidence_bins")
    check = sub.add_parser("compare", help="the flow's rows in HOME against OUT's")
    check.add_argument("home", type=Path)
    check.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "compare":
        print(json.dumps(_compare(args.home, args.out), default=str))
        return
    import chdb

    sql = ceiling_sql(f"{args.log.resolve()}/{STREAM_GLOB}", args.bins)
    chdb.query("SELECT 1")  # the engine's start-up, not the query's
    start, cpu = time.perf_counter(), _cpu_seconds()
    result = chdb.query(sql, "Parquet")
    data = result.bytes()
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    args.out.write_bytes(data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {"seconds": seconds, "cpu": cpu, "rows": _count(args.out), "peak_rss_kib": peak}
    print(json.dumps(report))


def _count(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


if __name__ == "__main__":
    main()
