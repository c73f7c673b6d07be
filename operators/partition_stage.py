"""The partition stage: everything one source partition needs, with no exchange.

Inferences and their feedback share a partition number (both topics are keyed by
`request_id`), so one ``op.stateful`` logic per partition can, batch-at-a-time:
decode → validate → order the two streams by time (:mod:`operators.stream_merge`) →
deduplicate → join → pre-aggregate into per-slice deltas, with its own watermark
(:mod:`operators.clock`) and timers. It emits rows for the raw tables as they are
produced and, once per `emit_interval` tick, one :class:`PartialBatch` of slice deltas
with its watermark for the merge stage.

Per event, only what depends on order runs in Python (watermark, dedup, join,
lateness); the event is then *recorded*, and the metric fields and slice sums of the
whole batch are computed at once with numpy (:func:`operators.metrics.feedback_fields`).
State per partition stays small in snapshots: Bytewax serializes a changed key's whole
state at every snapshot, so the two bulky parts, the recent-inference cache and the
dedup ids, are not in it. The stage records the last source offset it processed per
stream; after a restart it rebuilds both from the rows it had written up to those offsets
(:class:`~operators.join.JoinStore`; the sink flushes before a snapshot commits). The
snapshot (:class:`~operators.stage_states.PartitionState`) holds the clock, not-yet-ordered
events, feedback waiting to join, one tick of deltas and the cell dictionary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
from bytewax.operators import StatefulLogic
from msgspec import UNSET

from operators.batches import STREAMS, DeadLetter, RawBatch, TableRows
from operators.cells import EXTRA_KEY_BITS, Cell, CellIndex, LocalIds, unknown_cell
from operators.clock import PartitionClock
from operators.decode import BatchDecoder
from operators.dedup import RecentIds
from operators.events import Event, Feedback, Inference
from operators.families import (
    CLASSES,
    FN,
    FP,
    KEYED,
    LATENCY,
    MAIN,
    PREFERENCES,
    REPORT_AMOUNT,
    REPORT_COUNT,
    REPORTS,
    TP,
    WINNER_CODES,
    widths,
)
from operators.join import (
    InferenceCache,
    InferenceContext,
    JoinStore,
    PendingFeedback,
    StoredInference,
    tenant_refusal,
)
from operators.metrics import (
    KIND_CODES,
    MainLayout,
    as_label,
    feedback_fields,
    feedback_number,
    inference_fields,
)
from operators.partitioning import partition_for
from operators.reasons import TENANT
from operators.rows import EventRows, InferenceRows, LateRows, dead_letter_rows
from operators.sessions import SessionBatch, shard_of
from operators.sketch import buckets_of
from operators.slices import PartialBatch, SliceDeltas
from operators.snapshots import decode_state, encode_state
from operators.stage_states import PartitionState
from operators.stats import FlowStats
from operators.stream_merge import StreamMerge
from operators.windows import WindowSpec, is_final, slice_length


@dataclass(frozen=True)
class PartitionConfig:
    """Plain values the partition stage needs (built from settings by the dataflow)."""

    partitions: int
    specs: tuple[WindowSpec, ...]
    grouping_sets: tuple[tuple[str, ...], ...]
    allowed_lateness: int
    max_out_of_orderness: int
    idle_timeout: int
    emit_interval: int
    bounded: bool
    join_ttl: int
    join_max_entries: int
    join_wait: int
    dedup_horizon: int
    dedup_max_entries: int
    extra_dims: tuple[str, ...]
    confidence_bins: int
    max_event_bytes: int
    min_ts: int
    max_ts: int
    routing_check_every: int = 64
    session_shards: int = 0  # 0: no session windows configured
    # Without recovery Bytewax still asks for snapshots every epoch; skip the pickling.
    snapshots: bool = True

    @property
    def slice_len(self) -> int:
        return slice_length(self.specs)


log = logging.getLogger("pulse.partition")


def now_ms() -> float:
    return time.time() * 1000.0


Output = TableRows | PartialBatch | SessionBatch


@dataclass
class _Counted:
    """Events counted on time in the current batch, one entry each, by kind of event."""

    inference_slices: list[int] = field(default_factory=list)
    inference_cells: list[int] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    latencies: list[float | None] = field(default_factory=list)
    feedback_slices: list[int] = field(default_factory=list)
    feedback_cells: list[int] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    numbers: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    unjoined: list[bool] = field(default_factory=list)
    # keyed families: (slice, cell, key id, family-specific value)
    classes: list[tuple[int, int, int, int]] = field(default_factory=list)  # pred class id
    preferences: list[tuple[int, int, int, int]] = field(default_factory=list)  # winner
    reports: list[tuple[int, int, int, float]] = field(default_factory=list)  # amount


class PartitionStage(StatefulLogic[RawBatch, Output, bytes]):
    """One source partition's decode, dedup, join and slice pre-aggregation."""

    def __init__(
        self,
        config: PartitionConfig,
        stats: FlowStats,
        resume: bytes | None = None,
        clock: Any = now_ms,
        store: JoinStore | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self._now = clock
        self._store = store
        self._slice = config.slice_len
        self._decoder = BatchDecoder(
            config.max_event_bytes, config.min_ts, config.max_ts, config.extra_dims
        )
        # Only for the rollup cells of late rows (the merge stage owns the real index).
        self._index = CellIndex(config.grouping_sets, config.extra_dims)
        self._rollups: dict[int, list[Cell]] = {}
        self._earliest_end: dict[int, int] = {}
        self._unknown = unknown_cell(len(config.extra_dims))
        self._width = MainLayout(config.confidence_bins).width
        self._inference_rows = InferenceRows()
        self._event_rows = EventRows()
        self._late_rows = LateRows(config.extra_dims)
        self._counted = _Counted()
        self._released: list[tuple[Feedback, int, float]] = []  # see _resolve_released
        self._refused: list[DeadLetter] = []  # feedback the join refused (see _refuse)
        self._topics: dict[str, str] = {stream: stream for stream in STREAMS}  # as read
        self._join_evictions = self._dedup_evictions = 0
        # Rebuilt from the store after a resume (_rebuild), not snapshotted.
        self.dedup = RecentIds(config.dedup_horizon, config.dedup_max_entries)
        self.inferences = InferenceCache(config.join_ttl, config.join_max_entries)
        self._rebuild_pending = resume is not None
        now = self._now()
        self._last_run = now  # processing time this logic last ran (not state)
        self.next_tick = now + config.emit_interval  # processing time (not state)
        if resume is None:
            self.from_state(self._initial_state(now))
        else:
            self.from_state(decode_state(PartitionState, resume))
            self._restarted(now)

    def _initial_state(self, now: float) -> PartitionState:
        config = self.config
        return PartitionState(
            # Bytewax builds the logic without its key: the partition comes with the first batch.
            partition=-1,
            clock=PartitionClock(
                max_out_of_orderness=config.max_out_of_orderness,
                join_wait=config.join_wait,
                idle_timeout=config.idle_timeout,
                bounded=config.bounded,
                last_data=now,
            ),
            merge=StreamMerge(),
            pending=PendingFeedback(),
            processed=dict.fromkeys(STREAMS, -1),
            cells=LocalIds(),
            keys={family: LocalIds() for family in KEYED},
            deltas={name: SliceDeltas(w) for name, w in widths(self._width).items()},
            session_records=[[] for _ in range(config.session_shards)],
            sent_watermark=-float("inf"),
            ended=False,
            sampled=0,
        )

    def to_state(self) -> PartitionState:
        """What a snapshot stores (:mod:`operators.stage_states`)."""
        return PartitionState(
            partition=self.partition,
            clock=self.clock,
            merge=self.merge,
            pending=self.pending,
            processed=self.processed,
            cells=self.cells,
            keys=self.keys,
            deltas=self.deltas,
            session_records=self.session_records,
            sent_watermark=self.sent_watermark,
            ended=self.ended,
            sampled=self.sampled,
        )

    def from_state(self, state: PartitionState) -> None:
        """Take `state` (a fresh one, or a snapshot's) as this stage's own."""
        self.partition = state.partition
        self.clock = state.clock
        self.merge = state.merge
        self.pending = state.pending
        self.processed = state.processed  # last source offset processed, per stream
        self.cells = state.cells
        self.keys = state.keys
        self.deltas = state.deltas
        # Counted feedback for the session shards, sent with the next tick.
        self.session_records = state.session_records
        self.sent_watermark = state.sent_watermark
        self.ended = state.ended
        self.sampled = state.sampled

    def _restarted(self, now: float) -> None:
        """Processing time does not count while the flow is down: a restart is not
        silence, and the sources have yet to say whether they are caught up. The run mode
        is this run's, not the snapshot's."""
        self.clock.bounded = self.config.bounded
        self.clock.touch(now)
        self.merge.restart()

    # ---- bytewax hooks -----------------------------------------------------------------

    def on_item(self, value: RawBatch) -> tuple[list[Output], bool]:
        self.partition = value.partition
        self._topics[value.stream] = value.topic
        now = self._ran(self._now())
        out: list[Output] = []
        events: list[Event] = []
        offsets: list[int] = []
        self.stats.count_read(value.topic, value.stream, len(value.lines))
        if value.lines:
            self.clock.touch(now)
            decoded = self._decoder.decode(value.topic, self.partition, value.lines, value.offsets)
            self.stats.decoded += len(decoded.events)
            if decoded.dead_letters:
                self.stats.dead_letters += len(decoded.dead_letters)
                self.stats.count_dead_letters(decoded.dead_letters)
                out.append(dead_letter_rows(decoded.dead_letters))
            events, offsets = decoded.events, decoded.offsets
        self.merge.push(
            value.stream, events, offsets, caught_up=value.caught_up, ended=value.end_of_input
        )
        self._process()
        self._accumulate()
        self._collect_rows(out)
        if self.ended:
            self._tick(out)
        return out, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[Output], bool]:
        now = self._ran(self._now())
        out: list[Output] = []
        self._process()
        self.clock.advance(now, caught_up=self.merge.caught_up())
        self._release_due()
        self._accumulate()
        self._collect_rows(out)
        if self._has_deltas() or self.clock.emitted != self.sent_watermark:
            self._tick(out)
        self.next_tick = now + self.config.emit_interval
        return out, StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[Output], bool]:
        out: list[Output] = []
        self._accumulate()
        self._collect_rows(out)
        if self._has_deltas() or any(self.session_records):
            self._tick(out)
        return out, StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.ended:
            return None
        return datetime.fromtimestamp(self.next_tick / 1000.0, tz=UTC)

    def snapshot(self) -> bytes | None:  # type: ignore[override]
        if not self.config.snapshots:
            return None
        return encode_state(self.to_state(), self.stats)

    def _ran(self, now: float) -> float:
        """Time in which this logic did not run although its tick was due (the worker
        was held by a long emission, a slow sink, another partition's backlog) is not
        quiet time: the idle clock pauses for it, as Flink's pausable idleness clock
        does for backpressure. Sources polled late would otherwise look quiet."""
        expected = self.config.emit_interval
        gap = now - self._last_run
        if gap > 2 * expected:
            self.clock.pause(gap - expected)
        self._last_run = now
        return now

    # ---- per event: what depends on order ----------------------------------------------

    def _process(self) -> None:
        """Process what the stream merge releases; close the partition when all ended."""
        if self.ended:
            return
        if self._rebuild_pending:
            self._rebuild()
        self._expire()
        for stream, events, offsets in self.merge.runs():
            if offsets:
                self.processed[stream] = max(self.processed[stream], offsets[-1])
            start = 0
            # A run is from one stream; split it where the event type changes.
            for i in range(1, len(events) + 1):
                if i == len(events) or type(events[i]) is not type(events[start]):
                    if type(events[start]) is Inference:
                        self._on_inferences(events[start:i], offsets[start:i])  # type: ignore[arg-type]
                    else:
                        self._on_feedback(events[start:i], offsets[start:i])  # type: ignore[arg-type]
                    start = i
        if all(self.merge.ended(name) for name in STREAMS):
            for name in STREAMS:
                self.clock.end(name, len(STREAMS))
            self._release_due()
            self.ended = True

    def _on_inferences(self, events: list[Inference], offsets: list[int]) -> None:
        clock = self.clock
        observe = clock.observe  # the watermark rule, per event (cost: see its docstring)
        watermark, cutoff = clock.watermark, clock.emitted
        deadline = self.pending.next_deadline()
        g, lateness = self._slice, self.config.allowed_lateness
        extra_names = self.config.extra_dims
        cache, pending, stats = self.inferences, self.pending, self.stats
        add_row = self._inference_rows.add
        partition = self.partition
        ends = self._earliest_end
        cell_ids = self.cells.ids
        counted = self._counted
        slices, cells = counted.inference_slices, counted.inference_cells
        confidences, latencies = counted.confidences, counted.latencies
        stats.inferences += len(events)
        for event, offset in zip(events, offsets, strict=True):
            ts = event.ts
            mark = observe(ts)
            if mark != watermark:
                watermark, cutoff = mark, clock.emitted
                if deadline is not None and deadline <= watermark:
                    self._release_due()
                    deadline = pending.next_deadline()
            if extra_names:
                extras = tuple(event.attributes.get(name, "") for name in extra_names)
                cell: Cell = (event.tenant, event.model_id, event.deployment, event.model_version,
                              event.segment, event.endpoint, *extras)  # fmt: skip
            else:
                cell = (event.tenant, event.model_id, event.deployment, event.model_version,
                        event.segment, event.endpoint)  # fmt: skip
            cell_id = cell_ids.get(cell)
            if cell_id is None:
                cell_id = self.cells.id_of(cell)
            prediction = event.prediction
            label = prediction.strip() if type(prediction) is str else as_label(prediction)
            confidence, latency = event.confidence, event.latency_ms
            context = (ts, cell_id, label, confidence, latency)
            request_id = event.request_id
            if not cache.add(request_id, context):
                stats.duplicate_inferences += 1
                continue
            self.sampled += 1
            if self.sampled % self.config.routing_check_every == 0:
                self._check_routing(request_id)
            slice_start = ts - ts % g
            end = ends.get(slice_start)
            if end is None:
                end = self._window_end_floor(slice_start)
            late = is_final(end, cutoff, lateness)
            add_row(event, label, partition, offset, late)
            if not late:
                slices.append(slice_start)
                cells.append(cell_id)
                confidences.append(confidence)
                latencies.append(latency)
            else:
                vector = inference_fields(
                    np.array([np.nan if confidence is None else confidence]), self._width,
                    self.config.confidence_bins,
                )[0]  # fmt: skip
                late_parts = [(MAIN, 0, vector)]
                if latency is not None:
                    bucket = int(buckets_of(np.array([latency]))[0])
                    late_parts.append((LATENCY, bucket, np.ones(1)))
                self._late(slice_start, cell_id, cutoff, "inference", request_id, ts, late_parts)
            if pending:
                for waiting_event, waiting_offset, waiting_cutoff in pending.take(request_id):
                    self._count_feedback(waiting_event, waiting_offset, context, waiting_cutoff)
        self._release_due()

    def _on_feedback(self, events: list[Feedback], offsets: list[int]) -> None:
        clock = self.clock
        observe, wait = clock.observe, clock.join_wait
        watermark, cutoff = clock.watermark, clock.emitted
        dedup, cache, pending, stats = self.dedup, self.inferences, self.pending, self.stats
        count_feedback = self._count_feedback
        stats.feedback += len(events)
        for event, offset in zip(events, offsets, strict=True):
            ts = event.ts
            mark = observe(ts)
            if mark != watermark:
                watermark, cutoff = mark, clock.emitted
            if not dedup.add(event.event_id, ts):
                stats.duplicate_feedback += 1
                continue
            request_id = event.request_id
            context = cache.get(request_id)
            if context is None:
                pending.add(request_id, (event, offset, cutoff), ts + wait)
            else:
                count_feedback(event, offset, context, cutoff)
        # No inference comes inside a feedback run, so releasing once at its end gives
        # the same joins as releasing at every watermark step.
        self._release_due()

    def _count_feedback(
        self,
        event: Feedback,
        offset: int,
        context: InferenceContext | None,
        cutoff: float,
    ) -> None:
        ts = event.ts
        kind = event.kind
        value = event.value
        correct: bool | None = None
        classes: tuple[int, int] | None = None  # (true, predicted) class ids
        if context is None:
            cell_id = self.cells.id_of(self._unjoined_cell(event))
        else:
            cell_id = context[1]
            # The join's tenant rule (operators.join), asked only of feedback naming one.
            if event.tenant is not UNSET:
                refusal = tenant_refusal(event, self.cells.values[cell_id][0])
                if refusal is not None:
                    self._refuse(event, offset, refusal)
                    return
            prediction = context[2]
            if kind == "label" and prediction is not None:
                label = value.strip() if type(value) is str else as_label(value)
                correct = label == prediction  # the rule: metrics.as_label, inlined
                if type(value) is str or type(value) is int:  # categorical labels
                    ids = self.keys[CLASSES]
                    classes = (ids.id_of(label), ids.id_of(prediction))
        slice_start = ts - ts % self._slice
        end = self._earliest_end.get(slice_start)
        if end is None:
            end = self._window_end_floor(slice_start)
        late = is_final(end, cutoff, self.config.allowed_lateness)
        self._event_rows.add(
            event, context, self.cells.values[cell_id], self.partition, offset, late, correct
        )
        number = feedback_number(kind, value)
        shards = self.config.session_shards
        if shards:
            cell = self.cells.values[cell_id]
            self.session_records[shard_of(event.user_id, shards)].append(
                (event.user_id, ts, cell, kind, number)
            )
        keyed: tuple[str, int, int | float] | None = None  # (family, key id, value)
        if kind == "preference":
            pair = self.keys[PREFERENCES].id_of((value["policy_a"], value["policy_b"]))
            keyed = (PREFERENCES, pair, WINNER_CODES[value["winner"]])
        elif kind == "report":
            keyed = (REPORTS, self.keys[REPORTS].id_of(value["category"]), number)
        if not late:
            counted = self._counted
            counted.feedback_slices.append(slice_start)
            counted.feedback_cells.append(cell_id)
            counted.kinds.append(KIND_CODES[kind])
            counted.numbers.append(number)
            counted.correct.append(bool(correct))
            counted.unjoined.append(context is None)
            if classes is not None:
                counted.classes.append((slice_start, cell_id, classes[0], classes[1]))
            if keyed is not None:
                records = counted.preferences if keyed[0] == PREFERENCES else counted.reports
                records.append((slice_start, cell_id, keyed[1], keyed[2]))  # type: ignore[arg-type]
            return
        vector = feedback_fields(
            np.array([KIND_CODES[kind]]), np.array([number]), np.array([bool(correct)]),
            np.array([context is None]), self._width,
        )[0]  # fmt: skip
        parts = [(MAIN, 0, vector)]
        if classes is not None:
            parts.extend(_class_parts(*classes))
        if keyed is not None:
            parts.append(_keyed_part(*keyed))
        self._late(slice_start, cell_id, cutoff, "feedback", event.event_id, ts, parts)

    def _refuse(self, event: Feedback, offset: int, reason: str) -> None:
        """Feedback the join refused: a dead letter at its source position, not counted.
        Its line is gone by now: `raw` is the decoded event re-encoded (ts in epoch ms)."""
        dead = DeadLetter(self._topics["feedback"], self.partition, offset,
                          msgspec.json.encode(event), TENANT, reason)  # fmt: skip
        self._refused.append(dead)
        self.stats.count_dead_letters((dead,))

    def _unjoined_cell(self, event: Feedback) -> Cell:
        names = self.config.extra_dims
        if not names:
            return self._unknown
        base = self._unknown[: len(self._unknown) - len(names)]
        return base + tuple(event.attributes.get(name, "") for name in names)

    def _late(
        self,
        slice_start: int,
        cell_id: int,
        cutoff: float,
        stream: str,
        event_id: str,
        ts: int,
        parts: list[tuple[str, int, np.ndarray]],
    ) -> None:
        """An event late for some windows: rows in metrics_late; the rest get a cutoff delta.

        `parts` are its contributions: (family, extra key, field vector).
        """
        self.stats.late_events += 1
        g, lateness = self._slice, self.config.allowed_lateness
        still_open = False
        rollups = self._rollups.get(cell_id)
        if rollups is None:
            rollups = self._rollups[cell_id] = self._index.rollups_of(self.cells.values[cell_id])
        for spec in self.config.specs:
            for start in spec.starts_containing_slice(slice_start, g):
                end = start + spec.length
                if is_final(end, cutoff, lateness):
                    self._late_rows.add(spec.name, start, end, rollups, stream, event_id, ts)
                else:
                    still_open = True
        if still_open:
            for family, extra, vector in parts:
                self.deltas[family].add_restricted(slice_start, cell_id, extra, cutoff, vector)

    def _window_end_floor(self, slice_start: int) -> int:
        """The earliest end among the windows that contain this slice."""
        if len(self._earliest_end) > 4096:
            self._earliest_end.clear()
        g = self._slice
        end = min(
            -((-(slice_start + g - spec.length)) // spec.slide) * spec.slide + spec.length
            for spec in self.config.specs
        )
        self._earliest_end[slice_start] = end
        return end

    def _release_due(self) -> None:
        """Feedback whose wait is over stops waiting for a live inference now; its store
        lookup is batched with the rest of this call's (:meth:`_resolve_released`)."""
        if self.pending:
            self._released.extend(self.pending.due(self.clock.watermark))

    def _resolve_released(self) -> None:
        """Released feedback: joined to a stored inference if the store has it, else
        unjoined. One query per hook call rather than one per watermark step (each query
        costs ~10 ms in chDB); done before `_accumulate`, so never pending at a snapshot."""
        due, self._released = self._released, []
        if not due:
            return
        found: dict[str, StoredInference] = {}
        if self._store is not None:
            wanted = list(dict.fromkeys(event.request_id for event, _, _ in due))
            found = self._store.lookup(wanted)
            self.stats.looked_up += len(wanted)
            self.stats.found_in_store += len(found)
        for event, offset, cutoff in due:
            stored = found.get(event.request_id)
            if stored is None:
                self.stats.unjoined += 1
                self._count_feedback(event, offset, None, cutoff)
                continue
            context = self.inferences.get(event.request_id) or self._remember(
                event.request_id, stored
            )
            self._count_feedback(event, offset, context, cutoff)

    def _rebuild(self) -> None:
        """After a restart: the cache and dedup ids as they were at the snapshot."""
        self._rebuild_pending = False
        if self._store is None or self.partition < 0:
            return
        config, watermark = self.config, self.clock.watermark
        recent = self._store.recent_inferences(
            self.partition, self.processed["inferences"], watermark - config.join_ttl,
            config.join_max_entries,
        )  # fmt: skip
        for request_id, stored in recent:
            self._remember(request_id, stored)
        seen = self._store.recent_feedback(
            self.partition, self.processed["feedback"], watermark - config.dedup_horizon,
            config.dedup_max_entries,
        )  # fmt: skip
        for event_id, ts in seen:
            self.dedup.add(event_id, ts)
        for event, _, _ in self.pending.items():  # waiting: deduplicated, not yet stored
            self.dedup.add(event.event_id, event.ts)
        log.info(
            "partition %d resumed: %d recent inferences and %d feedback ids rebuilt from the store",
            self.partition, len(recent), len(seen),
        )  # fmt: skip

    def _remember(self, request_id: str, stored: StoredInference) -> InferenceContext:
        """Hold a stored inference like a fresh one (its later feedback needs no lookup)."""
        ts, tenant, model_id, deployment, model_version, segment, endpoint = stored[:7]
        prediction, confidence, latency, attributes = stored[7:]
        extras = tuple(attributes.get(name, "") for name in self.config.extra_dims)
        cell = (tenant, model_id, deployment, model_version, segment, endpoint, *extras)
        context = (ts, self.cells.id_of(cell), prediction, confidence, latency)
        self.inferences.add(request_id, context)
        return context

    def _expire(self) -> None:
        watermark = self.clock.watermark
        self.inferences.expire(watermark)
        self.dedup.expire(watermark)
        # Report evictions as increments (several partitions share the stats).
        self.stats.join_evictions += self.inferences.evicted - self._join_evictions
        self.stats.dedup_evictions += self.dedup.evicted - self._dedup_evictions
        self._join_evictions, self._dedup_evictions = self.inferences.evicted, self.dedup.evicted

    def _check_routing(self, request_id: str) -> None:
        """Sampled check that producers key by request_id with Kafka's partitioner."""
        if partition_for(request_id, self.config.partitions) != self.partition:
            self.stats.misrouted += 1

    # ---- per batch: vectorized ---------------------------------------------------------

    def _accumulate(self) -> None:
        """Add the batch's counted events to the slice deltas, all at once (first the
        released feedback's store lookup, which counts it)."""
        self._resolve_released()
        counted, self._counted = self._counted, _Counted()
        deltas = self.deltas
        if counted.inference_cells:
            slices = np.array(counted.inference_slices, dtype=np.int64)
            cells = np.array(counted.inference_cells, dtype=np.int64)
            confidence = np.array(counted.confidences, dtype=np.float64)
            fields = inference_fields(confidence, self._width, self.config.confidence_bins)
            deltas[MAIN].add(slices, cells << EXTRA_KEY_BITS, fields)
            latency = np.array(counted.latencies, dtype=np.float64)
            present = ~np.isnan(latency)
            if present.any():
                keys = cells[present] << EXTRA_KEY_BITS | buckets_of(latency[present])
                deltas[LATENCY].add(slices[present], keys, np.ones((int(present.sum()), 1)))
        if counted.feedback_cells:
            slices = np.array(counted.feedback_slices, dtype=np.int64)
            cells = np.array(counted.feedback_cells, dtype=np.int64)
            fields = feedback_fields(
                np.array(counted.kinds), np.array(counted.numbers), np.array(counted.correct),
                np.array(counted.unjoined), self._width,
            )  # fmt: skip
            deltas[MAIN].add(slices, cells << EXTRA_KEY_BITS, fields)
        if counted.classes:
            slices, cells, true, predicted = np.array(counted.classes, dtype=np.int64).T
            hit = true == predicted
            # A hit is a tp of its class; a miss an fn of the true class and fp of the other.
            keys = np.concatenate((true, predicted[~hit]))
            values = np.zeros((len(keys), 3))
            values[: len(true), TP] = hit
            values[: len(true), FN] = ~hit
            values[len(true) :, FP] = 1.0
            rows = np.concatenate((np.arange(len(true)), np.flatnonzero(~hit)))
            deltas[CLASSES].add(slices[rows], cells[rows] << EXTRA_KEY_BITS | keys, values)
        if counted.preferences:
            slices, cells, pairs, winners = np.array(counted.preferences, dtype=np.int64).T
            values = np.zeros((len(pairs), 3))
            values[np.arange(len(pairs)), winners] = 1.0
            deltas[PREFERENCES].add(slices, cells << EXTRA_KEY_BITS | pairs, values)
        if counted.reports:
            records = np.array(counted.reports, dtype=np.float64)
            slices, cells, categories = records[:, :3].astype(np.int64).T
            values = np.zeros((len(records), 2))
            values[:, REPORT_COUNT] = 1.0
            values[:, REPORT_AMOUNT] = records[:, 3]
            deltas[REPORTS].add(slices, cells << EXTRA_KEY_BITS | categories, values)

    def _has_deltas(self) -> bool:
        return any(len(d) for d in self.deltas.values())

    def _collect_rows(self, out: list[Output]) -> None:
        if self._refused:
            out.append(dead_letter_rows(self._refused))
            self._refused = []
        for builder in (self._inference_rows, self._event_rows, self._late_rows):
            rows = builder.take()
            if rows is not None:
                out.append(rows)

    def _tick(self, out: list[Output]) -> None:
        """What goes downstream once per tick: the partial, and a batch for every shard."""
        partial = self._partial()
        out.append(partial)
        for shard, records in enumerate(self.session_records):
            out.append(SessionBatch(self.partition, shard, partial.watermark, records))
        self.session_records = [[] for _ in self.session_records]

    def _partial(self) -> PartialBatch:
        watermark = float("inf") if self.ended else self.clock.emitted
        batch = PartialBatch(self.partition, watermark, self.ended, new_cells=self.cells.take_new())
        for family, ids in self.keys.items():
            new = ids.take_new()
            if new:
                batch.new_keys[family] = new
        for name, deltas in self.deltas.items():
            delta = deltas.drain()
            if delta is not None:
                batch.families[name] = delta
        self.sent_watermark = watermark
        self.stats.saw_watermark(self.partition, watermark)
        return batch


def _class_parts(true: int, predicted: int) -> list[tuple[str, int, np.ndarray]]:
    """Confusion contributions of one label: (family, class id, [tp, fp, fn])."""
    if true == predicted:
        return [(CLASSES, true, np.array([1.0, 0.0, 0.0]))]
    return [
        (CLASSES, true, np.array([0.0, 0.0, 1.0])),
        (CLASSES, predicted, np.array([0.0, 1.0, 0.0])),
    ]


def _keyed_part(family: str, key: int, value: float) -> tuple[str, int, np.ndarray]:
    if family == PREFERENCES:
        vector = np.zeros(3)
        vector[int(value)] = 1.0
        return family, key, vector
    return family, key, np.array([1.0, value])
