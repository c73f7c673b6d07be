"""Pipeline self-metrics (`pulse.pipeline.*`): the flow's counters as OTel instruments.

The steps only bump plain integers on :class:`operators.stats.FlowStats` (no SDK call on
the hot path); observable instruments read them when a reader collects (a scrape, an OTLP
export), so the cost is paid per collection, not per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from operators.stats import FlowStats

Read = Callable[[FlowStats], Iterable[Observation]]


def _one(read: Callable[[FlowStats], float | None]) -> Read:
    def observe(stats: FlowStats) -> Iterable[Observation]:
        value = read(stats)
        return [] if value is None else [Observation(value)]

    return observe


def _lines_read(stats: FlowStats) -> Iterable[Observation]:
    return [
        Observation(n, {"topic": topic, "stream": stream})
        for (topic, stream), n in list(stats.lines_read.items())
    ]


def _dead_letters(stats: FlowStats) -> Iterable[Observation]:
    return [Observation(n, {"reason": r}) for r, n in list(stats.dead_letter_reasons.items())]


def _duplicates(stats: FlowStats) -> Iterable[Observation]:
    return [
        Observation(stats.duplicate_inferences, {"stream": "inferences"}),
        Observation(stats.duplicate_feedback, {"stream": "feedback"}),
    ]


def _consumer_lag(stats: FlowStats) -> Iterable[Observation]:
    return [
        Observation(lag, {"topic": topic, "partition": str(partition)})
        for (topic, partition), lag in list(stats.kafka_lag.items())
    ]


def _watermark_lag(stats: FlowStats) -> float | None:
    if not stats.watermark_ms:
        return None
    return max(0.0, time.time() - stats.watermark_ms / 1000.0)


# name, unit, description, read: monotonic counts
COUNTERS: tuple[tuple[str, str, str, Read], ...] = (
    ("events_read", "{event}", "Lines read from the event log", _lines_read),
    ("events_decoded", "{event}", "Events decoded and valid", _one(lambda s: s.decoded)),
    ("inferences", "{event}", "Inferences taken in order", _one(lambda s: s.inferences)),
    ("feedback", "{event}", "Feedback events taken in order", _one(lambda s: s.feedback)),
    ("dead_letters", "{event}", "Events dead-lettered, by reason", _dead_letters),
    ("duplicates", "{event}", "Duplicate events dropped, by stream", _duplicates),
    ("late_events", "{event}", "Events later than allowed lateness", _one(lambda s: s.late_events)),
    ("unjoined", "{event}", "Feedback without its inference", _one(lambda s: s.unjoined)),
    ("windows_final", "{window}", "Windows made final", _one(lambda s: s.windows_final)),
    ("metric_rows", "{row}", "Metric rows emitted", _one(lambda s: s.metric_rows)),
    ("emissions", "{emission}", "Merge-stage emissions", _one(lambda s: s.emissions)),
    ("emission.duration", "s", "Time spent emitting", _one(lambda s: s.emission_us / 1e6)),
    ("sink.rows", "{row}", "Rows written to ClickHouse", _one(lambda s: s.rows_written)),
    ("sink.inserts", "{insert}", "ClickHouse inserts", _one(lambda s: s.sink_inserts)),
    ("sink.insert.duration", "s", "Time in inserts", _one(lambda s: s.sink_insert_us / 1e6)),
    ("sink.retries", "{retry}", "ClickHouse insert retries", _one(lambda s: s.sink_retries)),
    ("snapshots", "{snapshot}", "State snapshots taken", _one(lambda s: s.snapshots)),
    ("snapshot.size", "By", "Bytes of state snapshots", _one(lambda s: s.snapshot_bytes)),
    ("snapshot.duration", "s", "Time taking snapshots", _one(lambda s: s.snapshot_us / 1e6)),
)

# name, unit, description, read: current values
GAUGES: tuple[tuple[str, str, str, Read], ...] = (
    ("join_hit_rate", "1", "Feedback joined to its inference", _one(lambda s: s.join_hit_rate)),
    ("watermark.lag", "s", "Wall clock minus the flow's watermark", _one(_watermark_lag)),
    ("sink.pending", "{row}", "Rows waiting for ClickHouse", _one(lambda s: s.sink_pending)),
    ("kafka.consumer_lag", "{message}", "Messages behind the log end", _consumer_lag),
)  # fmt: skip


def register_pipeline_metrics(meter: Meter, stats: FlowStats) -> None:
    """Observable instruments over `stats`, named `pulse.pipeline.<name>`."""
    for name, unit, description, read in COUNTERS:
        meter.create_observable_counter(
            f"pulse.pipeline.{name}", [_callback(read, stats)], unit, description
        )
    for name, unit, description, read in GAUGES:
        meter.create_observable_gauge(
            f"pulse.pipeline.{name}", [_callback(read, stats)], unit, description
        )


def _callback(read: Read, stats: FlowStats) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        return read(stats)

    return callback
