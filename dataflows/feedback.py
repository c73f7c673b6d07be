"""The main flow: ``python -m bytewax.run dataflows.feedback:flow``.

    event log (local log | Kafka), one source partition per partition number
      └─ partition_stage   decode, validate, order by time, dedup, join, slice deltas
           ├─ rows ──────────────────────────────────┐  inferences, events, dead letters, late
           ├─ partials ─ merge_stage ─ metric rows ──┤
           └─ by user shard ─ session_stage ─ rows ──┴─ ClickHouse (one buffered writer)
                                              dead letters also to <prefix>.dead-letters (Kafka)
      with rules configured (settings.rules), the merge stage's window emissions also go to
      rules_stage ─ alerts rows ─> ClickHouse; notifications ─> deliver (outbox: webhooks,
                    outcomes ─> ClickHouse deliveries); actions ─> actions_stream

Settings come from config/pulse.yaml and PULSE_* variables (config/settings.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source

from config.settings import Settings, load_settings
from connectors.actions import ActionSink
from connectors.clickhouse import Target, prepare
from connectors.clickhouse_sink import ClickHouseSink
from connectors.console import configure_logging
from connectors.delivery import OutboxSink
from connectors.delivery.configured import delivery_targets
from connectors.delivery.outcome_log import OutcomeLog
from connectors.end_gate import EndGate
from connectors.join_store import ClickHouseJoinStore
from connectors.kafka import (
    DeadLetterTopicSink,
    KafkaEventSource,
    KafkaTarget,
    ensure_topics,
)
from connectors.local_log import LocalLog
from connectors.local_log_source import LocalLogSource
from connectors.recovery import bytewax_run_clustered, bytewax_run_recovery_directory
from connectors.service.store import Store
from connectors.silence_store import SilenceStore
from connectors.sink_demand import SinkDemand
from connectors.telemetry import observe_emission
from connectors.telemetry.logs import log_alert_rows
from operators.batches import RawBatch, TableRows
from operators.errors import PulseError
from operators.merge_stage import MergeConfig, MergeStage
from operators.partition_stage import PartitionConfig, PartitionStage
from operators.rules.alerts import Action, Notification
from operators.rules.silences import Silence
from operators.rules.stage import RulesConfig, RulesStage
from operators.sessions import SessionBatch, SessionConfig, SessionSpec, SessionStage
from operators.slices import PartialBatch
from operators.snapshots import STATE_FORMAT
from operators.stats import STATS, FlowStats
from operators.window_metrics import WindowMetrics
from operators.windows import WindowSpec

MERGE_KEY = "merge"
RULES_KEY = "rules"


def session_specs(settings: Settings) -> tuple[SessionSpec, ...]:
    return tuple(
        SessionSpec(w.name, w.gap) for w in settings.windows if w.kind == "session" and w.gap
    )


def partition_config_of(
    settings: Settings, partitions: int, *, snapshots: bool = True
) -> PartitionConfig:
    """The partition stage's plain values from settings (the flow's, and the benches')."""
    t = settings.time
    return PartitionConfig(
        partitions=partitions,
        specs=window_specs(settings),
        grouping_sets=tuple(settings.aggregation.grouping_set_tuples()),
        allowed_lateness=t.allowed_lateness,
        max_out_of_orderness=t.max_out_of_orderness,
        idle_timeout=t.idle_timeout,
        emit_interval=t.emit_interval,
        bounded=settings.run.bounded,
        join_ttl=settings.join.ttl,
        join_max_entries=settings.join.max_entries,
        join_wait=settings.join.wait,
        dedup_horizon=settings.dedup.horizon,
        dedup_max_entries=settings.dedup.max_entries,
        extra_dims=tuple(settings.aggregation.extra_dims),
        confidence_bins=settings.aggregation.confidence_bins,
        max_event_bytes=settings.validation.max_event_bytes,
        min_ts=settings.validation.min_ts,
        max_ts=settings.validation.max_ts,
        session_shards=settings.aggregation.session_shards if session_specs(settings) else 0,
        snapshots=snapshots,
    )


def merge_config_of(settings: Settings, partitions: int, *, snapshots: bool = True) -> MergeConfig:
    """The merge stage's plain values from settings (the flow's, and the benches')."""
    t = settings.time
    return MergeConfig(
        partitions=partitions,
        specs=window_specs(settings),
        grouping_sets=tuple(settings.aggregation.grouping_set_tuples()),
        extra_dims=tuple(settings.aggregation.extra_dims),
        allowed_lateness=t.allowed_lateness,
        emit_interval=t.emit_interval,
        confidence_bins=settings.aggregation.confidence_bins,
        early_rows=not settings.run.bounded,
        early_emit_budget=t.early_emit_budget,
        early_intervals=early_intervals(settings),
        early_latest=early_latest(settings),
        snapshots=snapshots,
    )


def window_specs(settings: Settings) -> tuple[WindowSpec, ...]:
    specs = []
    for window in settings.windows:
        if window.kind == "tumbling":
            assert window.length is not None
            specs.append(WindowSpec.tumbling(window.name, window.length))
        elif window.kind == "sliding":
            assert window.length is not None and window.slide is not None
            specs.append(WindowSpec(window.name, window.length, window.slide))
    return tuple(specs)


def early_intervals(settings: Settings) -> tuple[int, ...]:
    """Per window spec (window_specs' order): how often its early rows go out."""
    every = settings.time.emit_interval
    return tuple(
        max(every, w.early_interval or every) for w in settings.windows if w.kind != "session"
    )


def early_latest(settings: Settings) -> tuple[bool, ...]:
    """Per window spec (window_specs' order): whether only its latest window emits early
    rows (a sliding window's default, `early_windows: latest`)."""
    return tuple(
        w.kind == "sliding" and w.early_windows != "all"
        for w in settings.windows
        if w.kind != "session"
    )


def clickhouse_target(settings: Settings) -> Target:
    return Target.of(settings)


def kafka_target(settings: Settings) -> KafkaTarget:
    k = settings.kafka
    return KafkaTarget(k.bootstrap_servers, k.topic_prefix, dict(k.client_config))


def prepare_store(settings: Settings) -> Target:
    """Create the database and tables (numbered migrations, idempotent) and the views that
    follow the settings."""
    target = clickhouse_target(settings)
    prepare(target, settings.aggregation.grouping_set_tuples())
    return target


def event_source(
    settings: Settings, end_gate: EndGate | None = None
) -> tuple[Source[RawBatch], int]:
    """The configured event log as a Bytewax source, and its partition count; a bounded
    source's end waits for `end_gate` (connectors/end_gate.py)."""
    if settings.log.backend == "local":
        root = settings.home_dir / "log"
        LocalLog(root, settings.log.partitions, settings.log.segment_bytes)
        source = LocalLogSource(
            root,
            read_bytes=settings.source.read_bytes,
            poll_interval_ms=settings.source.poll_interval,
            bounded=settings.run.bounded,
            end_gate=end_gate,
        )
        return source, source.partitions
    target = kafka_target(settings)
    partitions = ensure_topics(target, settings.log.partitions, settings.kafka.replication_factor)
    kafka_source = KafkaEventSource(
        target,
        partitions=partitions,
        batch_size=settings.kafka.consumer_batch_size,
        poll_interval_ms=settings.source.poll_interval,
        bounded=settings.run.bounded,
        end_gate=end_gate,
    )
    return kafka_source, partitions


@dataclass(frozen=True)
class Built:
    flow: Dataflow
    shape: dict[str, Any]  # what shapes the state: a recovery store must match it


def build_flow(settings: Settings, stats: FlowStats = STATS, recovery: bool = True) -> Dataflow:
    return build(settings, stats, recovery).flow


def build(
    settings: Settings, stats: FlowStats = STATS, recovery: bool = True, prepared: bool = False
) -> Built:
    """The flow; `recovery=False` skips pickling state for snapshots nobody keeps;
    `prepared`: the store is ready already (a run's :class:`~connectors.store_start.StoreStart`)."""
    target = clickhouse_target(settings) if prepared else prepare_store(settings)
    # A bounded run's end of input waits until the merge stage has drained its final
    # windows in bounded slices (connectors/end_gate.py).
    end_gate = EndGate() if settings.run.bounded else None
    # Final windows that wait on the sink ask it to write now (connectors/sink_demand.py).
    sink_demand = SinkDemand()
    source, partitions = event_source(settings, end_gate)
    sessions = session_specs(settings)
    grouping_sets = tuple(settings.aggregation.grouping_set_tuples())
    extra_dims = tuple(settings.aggregation.extra_dims)
    t = settings.time
    partition_config = partition_config_of(settings, partitions, snapshots=recovery)
    merge_config = merge_config_of(settings, partitions, snapshots=recovery)

    flow = Dataflow("feedback_pulse")
    raw = op.input("events", flow, source)
    by_partition = op.key_on("by_partition", raw, lambda batch: str(batch.partition))
    store = ClickHouseJoinStore(target, settings.clickhouse.retry_backoff_max)
    staged = op.stateful(
        "partition_stage",
        by_partition,
        lambda resume: PartitionStage(partition_config, stats, resume, store=store),
    )
    rows = op.filter_map("rows", staged, _rows)
    partials = op.filter_map("partials", staged, _partials)
    merged = op.stateful(
        "merge_stage",
        partials,
        lambda resume: MergeStage(merge_config, stats, resume, end=end_gate, sink=sink_demand),
    )
    op.inspect("telemetry", merged, observe_emission)
    metric_rows = op.map("metric_rows", merged, _store_rows)
    outputs = [rows, metric_rows]
    if settings.rules:
        outputs.append(_rules(settings, merged, target, stats, recovery))
    if sessions:
        session_config = SessionConfig(
            specs=sessions,
            partitions=partitions,
            shards=settings.aggregation.session_shards,
            allowed_lateness=t.allowed_lateness,
            extra_dims=extra_dims,
            snapshots=recovery,
        )
        batches = op.filter_map("session_batches", staged, _session_batches)
        closed = op.stateful(
            "session_stage", batches, lambda resume: SessionStage(session_config, resume, stats)
        )
        outputs.append(op.map("session_rows", closed, lambda kv: (kv[1].table, kv[1])))
    to_store = op.merge("to_store", *outputs)
    op.output(
        "clickhouse",
        to_store,
        ClickHouseSink(
            target,
            block_rows=settings.clickhouse.insert_block_rows,
            flush_interval_ms=settings.clickhouse.flush_interval,
            max_pending_rows=settings.clickhouse.max_pending_rows,
            retry_backoff_max_ms=settings.clickhouse.retry_backoff_max,
            stats=stats,
            demand=sink_demand,
        ),
    )
    if settings.log.backend == "kafka":
        dead = op.filter_map(
            "dead_letter_rows", rows, lambda kv: kv if kv[0] == "dead_letters" else None
        )
        op.output("dead_letter_topic", dead, DeadLetterTopicSink(kafka_target(settings)))
    shape = {
        "source": settings.log.backend,
        "topics": settings.kafka.topic_prefix if settings.log.backend == "kafka" else None,
        "partitions": partitions,
        "windows": [
            w.model_dump(mode="json", exclude={"early_interval", "early_windows"})
            for w in settings.windows
        ],
        "grouping_sets": [list(g) for g in grouping_sets],
        "extra_dims": list(extra_dims),
        "confidence_bins": settings.aggregation.confidence_bins,
        "session_shards": settings.aggregation.session_shards,
        "database": settings.clickhouse.database,
        "state_format": STATE_FORMAT,
    }
    if settings.rules:  # a flow without rules keeps its shape (and its store)
        shape["rules"] = [rule.model_dump(mode="json", by_alias=True) for rule in settings.rules]
    return Built(flow, shape)


def _rules(
    settings: Settings, merged: Stream[Any], target: Target, stats: FlowStats, recovery: bool
) -> Stream[tuple[str, TableRows]]:
    """The rules stage on the merge stage's window emissions: its `alerts` rows (returned,
    for the ClickHouse sink), notifications to the outbox (outcomes to `deliveries`) and
    actions to the actions stream."""
    from operators.rules.evaluators import evaluator_for

    config = RulesConfig.of(
        settings,
        lambda rule: evaluator_for(rule, settings),
        runtime_silences=_runtime_silences(target),
        snapshots=recovery,
    )
    emissions = op.filter_map("window_metrics", merged, _window_metrics)
    ruled = op.stateful("rules_stage", emissions, lambda resume: RulesStage(config, stats, resume))
    op.inspect("alert_log", ruled, log_alert_rows)
    notifications = op.filter_map("notifications", ruled, _of_type(Notification))
    op.output(
        "deliver",
        notifications,
        OutboxSink(delivery_targets(settings.notify), on_outcome=OutcomeLog(target, stats)),
    )
    actions = op.filter_map("actions", ruled, _of_type(Action))
    op.output("actions_stream", actions, ActionSink.for_settings(settings))
    return op.filter_map("alert_rows", ruled, _alert_rows)


def _runtime_silences(target: Target) -> Callable[[int], list[Silence]]:
    """`pulse silence` silences, polled by the rules stage through a client of this process
    (it holds an embedded store; other processes change silences through its service)."""
    return SilenceStore(target, query=Store(target).query).active


def _store_rows(item: tuple[str, TableRows]) -> tuple[str, TableRows]:
    """What the sink keeps until written: window emissions without their field matrix."""
    value = item[1]
    rows = value.table_rows() if isinstance(value, WindowMetrics) else value
    return rows.table, rows


def _window_metrics(item: tuple[str, TableRows]) -> tuple[str, WindowMetrics] | None:
    value = item[1]
    return (RULES_KEY, value) if isinstance(value, WindowMetrics) else None


def _alert_rows(item: tuple[str, Any]) -> tuple[str, TableRows] | None:
    value = item[1]
    return (value.table, value) if isinstance(value, TableRows) else None


def _of_type(kind: type) -> Callable[[tuple[str, Any]], tuple[str, Any] | None]:
    """Items of one kind out of the rules stage, keyed for their one-partition sink."""

    def pick(item: tuple[str, Any]) -> tuple[str, Any] | None:
        return item if isinstance(item[1], kind) else None

    return pick


def _rows(item: tuple[str, Any]) -> tuple[str, TableRows] | None:
    value = item[1]
    return (value.table, value) if isinstance(value, TableRows) else None


def _session_batches(item: tuple[str, Any]) -> tuple[str, SessionBatch] | None:
    value = item[1]
    return (f"shard-{value.shard}", value) if isinstance(value, SessionBatch) else None


def _partials(item: tuple[str, Any]) -> tuple[str, PartialBatch] | None:
    value = item[1]
    return (MERGE_KEY, value) if isinstance(value, PartialBatch) else None


def flow() -> Dataflow:
    """Entry point for ``python -m bytewax.run dataflows.feedback:flow``.

    The run path is `pulse run`'s (:class:`dataflows.running.FlowRun`): with ``-r DIR`` the
    recovery partitions are checked (or claimed), so a changed flow or a damaged store
    stops here instead of restarting from zero; the summary is printed at exit.
    """
    from dataflows.running import FlowRun

    configure_logging(verbose=False)
    try:
        argv = sys.argv[1:]
        settings = load_settings()
        configure_logging(verbose=False, log_format=settings.telemetry.log_format)
        run = FlowRun(
            settings,
            bytewax_run_recovery_directory(argv),
            create_store=False,
            shared_store=bytewax_run_clustered(argv),
        )
        built = run.start()
    except PulseError as exc:
        print(f"feedback-pulse: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    run.finish_at_exit()
    return built
