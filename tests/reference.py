"""A reference implementation of the aggregation semantics, for tests only.

Plain Python over the whole list of events, written for clarity, not speed, and
independent of the product's code paths (it uses the `ddsketch` library directly for
quantiles, `statistics` for the standard deviation, `json`/`datetime` for parsing).
It implements the documented semantics:

* per partition, the two streams are merged by timestamp (inferences first on ties),
  each stream keeping log order;
* watermark = max event time seen - max_out_of_orderness; the join holds it back by
  join.wait; an event is late for a window when window end + allowed lateness <= that
  held-back watermark at its arrival;
* feedback deduplicated by event_id (first wins), inferences by request_id (first
  wins); feedback joins its inference when it arrives, or gives up when the watermark
  passes ts + join.wait, or at the end of input: then it joins the inference the store
  holds from an earlier run (`stored`), if any, else it is unjoined (dims "unknown");
* feedback naming a `tenant` other than its inference's is not counted: a dead letter
  (`Result.dead`, event_id -> reason); unjoined feedback is not checked;
* every window (tumbling / sliding, aligned to the epoch) is computed for every
  grouping set of (model_version, segment, endpoint), kept dims always present.

The join cache's TTL and the entry caps are not modelled: test data keeps feedback
within join.ttl of its inference.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ddsketch import DDSketch

from operators.metrics import QUANTUM
from operators.partitioning import partition_for

ROLLUP = ("model_version", "segment", "endpoint")
KEPT = ("tenant", "model_id", "deployment")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Window:
    name: str
    length: int
    slide: int

    def starts(self, ts: int) -> list[int]:
        first = ts - ts % self.slide
        return [s for s in range(first, ts - self.length, -self.slide) if s <= ts < s + self.length]


@dataclass(frozen=True)
class Semantics:
    windows: tuple[Window, ...]
    grouping_sets: tuple[tuple[str, ...], ...]
    partitions: int
    max_out_of_orderness: int = 10_000
    allowed_lateness: int = 0
    join_wait: int = 30_000
    confidence_bins: int = 10
    sessions: tuple[tuple[str, int], ...] = (("session_30m", 1_800_000),)


@dataclass
class Cell:
    """Everything accumulated for one window x dims cell."""

    feedback: int = 0
    unjoined: int = 0
    labeled: int = 0
    correct: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    ratings: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    clicks: int = 0
    conversions: int = 0
    dwells: list[float] = field(default_factory=list)
    preference_count: int = 0
    report_count: int = 0
    report_amount: float = 0.0
    inferences: int = 0
    confidences: list[float] = field(default_factory=list)  # rounded, for the mean
    confidence_bins: list[float] = field(default_factory=list)  # as sent, for the histogram
    latencies: list[float] = field(default_factory=list)
    classes: dict[str, list[int]] = field(default_factory=dict)  # class -> [tp, fp, fn]
    preferences: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # -> [a, b, tie]
    reports: dict[str, list[float]] = field(default_factory=dict)  # category -> [count, amount]


def q(value: float) -> float:
    """The documented rounding of summed values: to a multiple of QUANTUM, half to even."""
    return round(value / QUANTUM) * QUANTUM


def parse_ts(value: int | str) -> int:
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(value).timestamp() * 1000)


def label_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


@dataclass
class Result:
    cells: dict[tuple[str, int, tuple[str, ...]], Cell]
    feedback_log: list[
        tuple[str, int, tuple[str, ...], str, Any]
    ]  # counted: user, ts, dims, kind, value
    late: set[tuple[str, int, tuple[str, ...], str, str]]  # (window, start, dims, stream, id)
    events: dict[str, dict[str, Any]]  # event_id -> what the events table should say
    inferences: dict[str, dict[str, Any]]
    dead: dict[str, str] = field(default_factory=dict)  # refused feedback: event_id -> reason


def _merge_streams(
    inferences: list[dict[str, Any]], feedback: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out, i, j = [], 0, 0
    while i < len(inferences) or j < len(feedback):
        if j == len(feedback) or (i < len(inferences) and inferences[i]["ts"] <= feedback[j]["ts"]):
            out.append(inferences[i])
            i += 1
        else:
            out.append(feedback[j])
            j += 1
    return out


def compute(
    lines: Iterable[tuple[str, str, bytes]],
    sem: Semantics,
    stored: Iterable[dict[str, Any]] = (),
) -> Result:
    """`lines`: (stream, key, line) of the *valid* events, in log order; `stored`: the
    inferences an earlier run left in the store (parsed events), not counted here."""
    held = {}
    for inference in stored:
        held.setdefault(inference["request_id"], _with_defaults(dict(inference)))
    per_partition: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {"inferences": [], "feedback": []}
    )
    for stream, key, line in lines:
        event = json.loads(line)
        event["ts"] = parse_ts(event["ts"])
        per_partition[partition_for(key, sem.partitions)][stream].append(event)

    result = Result(defaultdict(Cell), [], set(), {}, {})
    for streams in per_partition.values():
        events = _merge_streams(streams["inferences"], streams["feedback"])
        _run_partition(events, sem, result, held)
    return result


def _with_defaults(inference: dict[str, Any]) -> dict[str, Any]:
    inference.setdefault("segment", "default")
    inference.setdefault("tenant", "default")
    inference.setdefault("deployment", "primary")
    return inference


def _cells_of(dims: dict[str, str], sem: Semantics) -> list[tuple[str, ...]]:
    cells = []
    for kept in sem.grouping_sets:
        cells.append(
            tuple([dims[k] for k in KEPT] + [dims[d] if d in kept else "*" for d in ROLLUP])
        )
    return list(dict.fromkeys(cells))


def _run_partition(
    events: list[dict[str, Any]], sem: Semantics, result: Result, stored: dict[str, Any]
) -> None:
    max_ts = -math.inf
    seen_requests: dict[str, dict[str, Any]] = {}
    seen_feedback: set[str] = set()
    waiting: list[tuple[dict[str, Any], float]] = []  # (feedback, held-back watermark at arrival)

    def held_back() -> float:
        return max_ts - sem.max_out_of_orderness - sem.join_wait

    def count(
        event: dict[str, Any], arrival_wm: float, stream: str, dims: dict[str, str], add
    ) -> bool:
        late_any = False
        for window in sem.windows:
            for start in window.starts(event["ts"]):
                end = start + window.length
                for cell in _cells_of(dims, sem):
                    if end + sem.allowed_lateness <= arrival_wm:
                        late_any = True
                        key = event["event_id"] if stream == "feedback" else event["request_id"]
                        result.late.add((window.name, start, cell, stream, key))
                    else:
                        add(result.cells[(window.name, start, cell)])
        return late_any

    def give_feedback(
        event: dict[str, Any], arrival_wm: float, inference: dict[str, Any] | None
    ) -> None:
        claimed = event.get("tenant")
        if inference is not None and claimed is not None and claimed != inference["tenant"]:
            rid = event["request_id"]
            result.dead[event["event_id"]] = (
                f"feedback.tenant: {claimed!r} is not the tenant of inference {rid!r}"
            )
            return
        if inference is None:
            dims = dict.fromkeys((*KEPT, *ROLLUP), UNKNOWN)
            prediction = None
        else:
            dims = {d: inference[d] for d in (*KEPT, *ROLLUP)}
            prediction = label_text(inference.get("prediction"))
        kind, value = event["kind"], event["value"]
        correct = (
            (label_text(value) == prediction)
            if kind == "label" and prediction is not None
            else None
        )

        def add(cell: Cell) -> None:
            cell.feedback += 1
            cell.unjoined += inference is None
            if kind == "label":
                cell.labeled += 1
                cell.correct += bool(correct)
                if prediction is not None and type(value) in (str, int):  # categorical
                    true = label_text(value)
                    if true == prediction:
                        cell.classes.setdefault(true, [0, 0, 0])[0] += 1
                    else:
                        cell.classes.setdefault(true, [0, 0, 0])[2] += 1
                        cell.classes.setdefault(prediction, [0, 0, 0])[1] += 1
            elif kind == "thumbs":
                cell.thumbs_up += value is True
                cell.thumbs_down += value is False
            elif kind == "rating":
                cell.ratings.append(q(value))
            elif kind == "reward":
                cell.rewards.append(q(value))
            elif kind == "click":
                cell.clicks += value is True
            elif kind == "conversion":
                cell.conversions += value is True
            elif kind == "dwell":
                cell.dwells.append(q(value))
            elif kind == "preference":
                cell.preference_count += 1
                pair = cell.preferences.setdefault(
                    (value["policy_a"], value["policy_b"]), [0, 0, 0]
                )
                pair[{"a": 0, "b": 1, "tie": 2}[value["winner"]]] += 1
            elif kind == "report":
                cell.report_count += 1
                cell.report_amount += q(value.get("amount") or 0.0)
                report = cell.reports.setdefault(value["category"], [0, 0.0])
                report[0] += 1
                report[1] += q(value.get("amount") or 0.0)

        late = count(event, arrival_wm, "feedback", dims, add)
        result.feedback_log.append(
            (event["user_id"], event["ts"], tuple(dims[d] for d in (*KEPT, *ROLLUP)), kind, value)
        )
        result.events[event["event_id"]] = {
            "joined": inference is not None,
            "late": late,
            "model_version": dims["model_version"],
            "correct": correct,
        }

    def release(watermark: float) -> None:
        for item in list(waiting):
            event, arrival_wm = item
            if event["ts"] + sem.join_wait <= watermark:
                waiting.remove(item)
                give_feedback(event, arrival_wm, stored.get(event["request_id"]))

    for event in events:
        if event["ts"] > max_ts:
            max_ts = event["ts"]
        watermark = max_ts - sem.max_out_of_orderness
        if event["type"] == "inference":
            release(watermark)
            if event["request_id"] in seen_requests:
                continue
            seen_requests[event["request_id"]] = _with_defaults(event)
            dims = {d: event[d] for d in (*KEPT, *ROLLUP)}

            def add_inference(cell: Cell, e: dict[str, Any] = event) -> None:
                cell.inferences += 1
                if e.get("confidence") is not None:
                    cell.confidences.append(q(e["confidence"]))
                    cell.confidence_bins.append(e["confidence"])
                if e.get("latency_ms") is not None:
                    cell.latencies.append(e["latency_ms"])

            late = count(event, held_back(), "inference", dims, add_inference)
            result.inferences[event["request_id"]] = {
                "late": late,
                "model_version": event["model_version"],
            }
            for item in [w for w in waiting if w[0]["request_id"] == event["request_id"]]:
                waiting.remove(item)
                give_feedback(item[0], item[1], event)
        else:
            if event["event_id"] in seen_feedback:
                continue
            seen_feedback.add(event["event_id"])
            inference = seen_requests.get(event["request_id"])
            if inference is not None:
                give_feedback(event, held_back(), inference)
            else:
                waiting.append((event, held_back()))
            release(watermark)
    release(math.inf)


# ---- published metrics --------------------------------------------------------------------


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def metrics(cell: Cell, seconds: float, bins: int = 10) -> dict[str, Any]:
    """The published metrics of one cell (README: metric reference)."""
    ratings = cell.ratings
    thumbs = cell.thumbs_up + cell.thumbs_down
    sketch = DDSketch(0.01)
    for latency in cell.latencies:
        sketch.add(latency)
    hist = [0] * bins
    for confidence in cell.confidence_bins:
        hist[min(int(confidence * bins), bins - 1)] += 1
    accuracy = _ratio(cell.correct, cell.labeled)
    f1s = [2 * tp / (2 * tp + fp + fn) for tp, fp, fn in cell.classes.values() if tp + fp + fn]
    return {
        "feedback_count": cell.feedback,
        "unjoined_count": cell.unjoined,
        "labeled_count": cell.labeled,
        "correct_count": cell.correct,
        "accuracy": accuracy,
        "error_rate": None if accuracy is None else 1 - accuracy,
        "macro_f1": statistics.fmean(f1s) if f1s else None,
        "thumbs_up": cell.thumbs_up,
        "thumbs_down": cell.thumbs_down,
        "thumbs_down_rate": _ratio(cell.thumbs_down, thumbs),
        "rating_count": len(ratings),
        "rating_mean": statistics.fmean(ratings) if ratings else None,
        "csat": _ratio(sum(r >= 4 for r in ratings), len(ratings)),
        "reward_count": len(cell.rewards),
        "reward_sum": math.fsum(cell.rewards),
        "reward_mean": statistics.fmean(cell.rewards) if cell.rewards else None,
        "reward_stddev": statistics.stdev(cell.rewards) if len(cell.rewards) > 1 else None,
        "impressions": cell.inferences,
        "clicks": cell.clicks,
        "ctr": _ratio(cell.clicks, cell.inferences),
        "conversions": cell.conversions,
        "conversion_rate": _ratio(cell.conversions, cell.inferences),
        "dwell_mean": statistics.fmean(cell.dwells) if cell.dwells else None,
        "preference_count": cell.preference_count,
        "report_count": cell.report_count,
        "report_amount_sum": cell.report_amount,
        "inference_count": cell.inferences,
        "confidence_mean": statistics.fmean(cell.confidences) if cell.confidences else None,
        "feedback_per_s": cell.feedback / seconds,
        "inference_per_s": cell.inferences / seconds,
        "errors_per_s": (cell.labeled - cell.correct) / seconds,
        "latency_p50": sketch.get_quantile_value(0.5),
        "latency_p95": sketch.get_quantile_value(0.95),
        "latency_p99": sketch.get_quantile_value(0.99),
        "confidence_hist": hist,
    }


def expected_rows(
    result: Result, sem: Semantics
) -> dict[tuple[str, int, tuple[str, ...]], dict[str, Any]]:
    lengths = {w.name: w.length for w in sem.windows}
    return {
        key: metrics(cell, lengths[key[0]] / 1000.0, sem.confidence_bins)
        for key, cell in result.cells.items()
    }


def _none_if_nan(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def close(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Equal, floats within `rel`; null and NaN (a null ratio in memory) are the same."""
    a, b = _none_if_nan(a), _none_if_nan(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-9)
    return a == b


def wilson(successes: float, n: float, z: float = 1.959963984540054) -> tuple[float, float, float]:
    """Rate and Wilson score interval, written out plainly."""
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return p, centre - half, centre + half


def keyed_rows(result: Result) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Expected rows of metrics_classes / metrics_preferences / metrics_reports, keyed by
    (window, start, dims, key...)."""
    out: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {
        "classes": {},
        "preferences": {},
        "reports": {},
    }
    for (window, start, dims), cell in result.cells.items():
        for name, (tp, fp, fn) in cell.classes.items():
            out["classes"][(window, start, dims, name)] = {
                "tp": tp, "fp": fp, "fn": fn, "support": tp + fn,
                "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
                "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            }  # fmt: skip
        for (a, b), (wins_a, wins_b, ties) in cell.preferences.items():
            n = wins_a + wins_b + ties
            rate, low, high = wilson(wins_a + 0.5 * ties, n)
            out["preferences"][(window, start, dims, a, b)] = {
                "wins_a": wins_a, "wins_b": wins_b, "ties": ties, "comparisons": n,
                "win_rate_a": rate, "win_rate_a_low": low, "win_rate_a_high": high,
            }  # fmt: skip
        for category, (count, amount) in cell.reports.items():
            out["reports"][(window, start, dims, category)] = {
                "report_count": count,
                "report_amount_sum": amount,
            }
    return out


def sessions(result: Result, gap: int, window: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Expected `sessions` rows: per user, counted feedback sorted by time, split where two
    consecutive events are `gap` or more apart. Keyed by (window, user_id, session_start)."""
    by_user: dict[str, list[tuple[int, tuple[str, ...], str, Any]]] = defaultdict(list)
    for user, ts, dims, kind, value in result.feedback_log:
        by_user[user].append((ts, dims, kind, value))
    out = {}
    for user, events in by_user.items():
        events.sort(key=lambda e: (e[0], e[1]))
        groups: list[list[tuple[int, tuple[str, ...], str, Any]]] = []
        for event in events:
            if groups and event[0] - groups[-1][-1][0] < gap:
                groups[-1].append(event)
            else:
                groups.append([event])
        for group in groups:
            ratings = [float(v) for _, _, k, v in group if k == "rating"]
            thumbs = [v for _, _, k, v in group if k == "thumbs"]
            out[(window, user, group[0][0])] = {
                "session_end": group[-1][0],
                "dims": group[0][1],
                "session_events": len(group),
                "session_duration_s": (group[-1][0] - group[0][0]) / 1000.0,
                "ratings": len(ratings),
                "rating_mean": statistics.fmean(ratings) if ratings else None,
                "thumbs": len(thumbs),
                "thumbs_up_rate": sum(thumbs) / len(thumbs) if thumbs else None,
            }
    return out
