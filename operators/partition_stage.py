"""The partition stage: everything one source partition needs, with no exchange.

Inferences and their feedback share a partition number (both topics are keyed by
`request_id`), so one ``op.stateful`` logic per partition can, batch-at-a-time:
decode → validate → order the two streams by time (:mod:`operators.stream_merge`) →
deduplicate → join → pre-aggregate into per-slice deltas, with its own watermark
(:mod:`operators.clock`) and timers. It emits rows for the raw tables as they are
produced and, once per `emit_interval` tick, one :class:`PartialBatch` of slice deltas
with its watermark for the merge stage.

Ordering, dedup and join are bulk calls over everything the stream merge releases at
once (``_on_events``): each event's watermark is a running maximum and its lateness a
vectorized comparison (:class:`~operators.columnar.clock.ColumnarClock`), feedback ids go
through the dedup set (:class:`~operators.columnar.dedup_set.DedupSet`) and inferences
into the join buffer (:class:`~operators.columnar.join_buffer.JoinBuffer`) in one call
each, and feedback finds its inference in one probe. Only feedback whose inference comes
later waits in Python (:class:`~operators.join.PendingFeedback`). Each counted event is
then *recorded* (:class:`~operators.columnar.joined.JoinedRecords`, with its cutoff when
late for some windows), and the whole batch is added to the slice deltas at once by the
metric families (:class:`~operators.columnar.accumulator.Accumulator`).
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
import operator
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import compress, repeat
from sys import intern
from typing import Any, cast

import msgspec
import numpy as np
from bytewax.operators import StatefulLogic
from msgspec import UNSET
from numpy.typing import NDArray

from operators.batches import STREAMS, Categorical, DeadLetter, NullableColumn, RawBatch, TableRows
from operators.cells import Cell, CellDims, CellIndex, LocalIds, unknown_cell
from operators.clock import PartitionClock
from operators.columnar.accumulator import Accumulator
from operators.columnar.clock import ColumnarClock
from operators.columnar.dedup_set import DedupSet
from operators.columnar.hash_fifo import hash_keys
from operators.columnar.join_buffer import InferenceColumns, JoinBuffer, object_column
from operators.columnar.joined import NONE, FeedbackSide, InferenceSide, JoinedRecords
from operators.decode import BatchDecoder
from operators.events import Event, Feedback, Inference
from operators.families import CLASSES, KEYED, PREFERENCES, REPORTS, WINNER_CODES, registry
from operators.heap import give_back_free_pages
from operators.join import (
    FoundInference,
    InferenceContext,
    JoinStore,
    PendingFeedback,
    ReleasedFeedback,
    ReplayWindow,
    StoredInference,
    read_before_release,
    tenant_refusal,
)
from operators.metrics import (
    KIND_CODES,
    MainLayout,
    as_label,
    feedback_numbers,
    value_numbers,
)
from operators.partitioning import partition_for
from operators.reasons import TENANT
from operators.rows import EventRows, InferenceRows, LateRows, ReadValues, dead_letter_rows
from operators.sessions import SessionBatch, shard_of
from operators.slices import NO_CUTOFF, PartialBatch, SliceDeltas
from operators.snapshots import decode_state, encode_state
from operators.stage_states import PartitionState
from operators.stats import FlowStats
from operators.stream_merge import StreamMerge
from operators.ticks import next_tick
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


# Released feedback resolved before the tick once this many wait (one lookup's chunk).
RELEASED_BOUND = 10_000


def now_ms() -> float:
    return time.time() * 1000.0


Output = TableRows | PartialBatch | SessionBatch

# Field readers mapped over a batch's events: C-level calls, no Python step per event.
_TS = operator.attrgetter("ts")
_REQUEST_ID = operator.attrgetter("request_id")
_EVENT_ID = operator.attrgetter("event_id")


def _gather(indexes: list[int], values: list[Any]) -> list[Any]:
    """`values` at `indexes`, in one C-level call (an itemgetter of one index gives the
    bare value, of none is not made)."""
    if len(indexes) > 1:
        return list(operator.itemgetter(*indexes)(values))
    return [values[i] for i in indexes]


@dataclass(slots=True)
class _LabelsRead:
    """What :meth:`PartitionStage._labels` read of a feedback sequence, per event: the
    label as labels compare (None: not a label), whether it was compared with a joined
    prediction, and whether it equals it (`right`: False where not compared)."""

    values: NDArray[np.object_]
    compared: NDArray[np.bool_]
    right: NDArray[np.bool_]


@dataclass(slots=True)
class _Held:
    """A sequence's accepted inferences, for the feedback that joins them: `first_slot`
    is the join buffer's slot of the first (slots rise by one), `kept` their indexes
    among the sequence's inferences, `waited` whether feedback was already waiting."""

    first_slot: int
    kept: NDArray[np.int64]
    hashes: NDArray[np.uint64]
    waited: NDArray[np.bool_]
    request_ids: list[str]


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
        self._accumulator = Accumulator(registry(MainLayout(config.confidence_bins)))
        self._inference_rows = InferenceRows()
        self._event_rows = EventRows()
        self._late_rows = LateRows(config.extra_dims)
        self._counted = JoinedRecords()  # this batch's counted events (see _accumulate)
        self._refused: list[DeadLetter] = []  # feedback the join refused (see _refuse)
        # Each stream's topic as its batches name it (a refused feedback's dead letter is
        # keyed by it); the stream's name until its first batch of this process.
        self._topics: dict[str, str] = {stream: stream for stream in STREAMS}
        self._join_evictions = self._dedup_evictions = 0
        # Rebuilt from the store after a resume (_rebuild), not snapshotted.
        self.dedup = DedupSet(config.dedup_horizon, config.dedup_max_entries)
        self.inferences = JoinBuffer(config.join_ttl, config.join_max_entries)
        self._rebuild_pending = resume is not None
        self._replay = ReplayWindow(resumed=False, read=-1)  # a resume starts one
        now = self._now()
        self._last_run = now  # processing time this logic last ran (not state)
        self.next_tick = next_tick(now, config.emit_interval)  # processing time (not state)
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
            released=ReleasedFeedback(),
            processed=dict.fromkeys(STREAMS, -1),
            cells=LocalIds(),
            keys={family: LocalIds() for family in KEYED},
            deltas={f.name: SliceDeltas(f.width) for f in self._accumulator.families},
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
            released=self.released,
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
        self.released = state.released  # given up on, until the tick's store lookup
        self.processed = state.processed  # last source offset processed, per stream
        self.cells = state.cells
        self._cell_dims = CellDims()  # the raw tables' dims columns, from self.cells
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
        held = self.merge.buffers["inferences"].offsets  # read before the snapshot
        self._replay = ReplayWindow(
            resumed=True, read=max([self.processed["inferences"], *held[-1:]])
        )

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
        if value.stream == "inferences":  # valid ones: a dead letter is never processed
            self._replay.read(offsets, value.caught_up or value.end_of_input)
        self.merge.push(
            value.stream, events, offsets, caught_up=value.caught_up, ended=value.end_of_input
        )
        self._process()
        self._accumulate(resolve=self.ended)
        self._collect_rows(out)
        if self.ended:
            self._tick(out)
            self._let_go()
        return out, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[Output], bool]:
        now = self._ran(self._now())
        out: list[Output] = []
        self._process()
        self.clock.advance(now, caught_up=self.merge.caught_up())
        self._release_due()
        self._accumulate(resolve=True)
        self._collect_rows(out)
        if self._has_deltas() or self.clock.emitted != self.sent_watermark:
            self._tick(out)
        if self.ended:
            self._let_go()
        self.next_tick = next_tick(now, self.config.emit_interval)
        return out, StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[Output], bool]:
        out: list[Output] = []
        self._accumulate(resolve=True)
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

    # ---- per batch: order, dedup and join in bulk ----------------------------------------

    def _process(self) -> None:
        """Process what the stream merge releases; close the partition when all ended.

        Everything released is one sequence in merge order, handled in bulk
        (:meth:`_on_events`). That is exact while the join buffer pushes nothing out
        (`join.max_entries`): an inference held at some event then stays held to the end.
        Otherwise the sequence goes in runs of one event type, where the bulk calls are
        exact whatever is pushed out (an inference run only adds, a feedback run only
        probes)."""
        if self.ended:
            return
        if self._rebuild_pending:
            self._rebuild()
        self._expire()
        events: list[Event] = []
        offsets: list[int] = []
        for stream, run_events, run_offsets in self.merge.runs():
            if run_offsets:
                self.processed[stream] = max(self.processed[stream], run_offsets[-1])
            events += run_events
            offsets += run_offsets
        if self.inferences.fits(len(events)):
            self._on_events(events, offsets)
        else:
            start = 0
            for i in range(1, len(events) + 1):
                if i == len(events) or type(events[i]) is not type(events[start]):
                    self._on_events(events[start:i], offsets[start:i])
                    start = i
        self._count_evictions()
        if all(self.merge.ended(name) for name in STREAMS):
            for name in STREAMS:
                self.clock.end(name, len(STREAMS))
            self._release_due()
            self.ended = True

    def _on_events(self, events: list[Event], offsets: list[int]) -> None:
        """One sequence of events in merge order: each event's watermark (a running
        maximum), dedup and join as bulk calls, with the row-wise stage's answers."""
        n = len(events)
        if not n:
            return
        clock = ColumnarClock(self.clock)
        ts = np.fromiter(map(_TS, events), dtype=np.int64, count=n)
        marks = clock.observe(ts)  # the watermark after each event
        cutoffs = clock.emitted(marks)  # what each event is late against
        kinds = np.fromiter(
            map(operator.is_, map(type, events), repeat(Inference)), dtype=np.bool_, count=n
        )
        at = np.flatnonzero(kinds)
        if len(at) == n:
            inferences, inference_offsets = cast(list[Inference], events), offsets
        else:
            inferences, inference_offsets = (
                _gather(at.tolist(), events),
                _gather(at.tolist(), offsets),
            )
        held = self._on_inferences(inferences, inference_offsets, ts[at], cutoffs[at])
        at_feedback = np.flatnonzero(~kinds)
        if len(at_feedback):
            fb_events: list[Feedback] = _gather(at_feedback.tolist(), events)
            fb_offsets = _gather(at_feedback.tolist(), offsets)
            self._on_feedback(fb_events, fb_offsets, at_feedback, ts, cutoffs, marks, held, at)
        elif held.waited.any():
            self._join_waiting(held, at, marks, [], np.empty(0, np.int64), [], cutoffs)
        self._release_due()

    def _on_inferences(
        self,
        events: list[Inference],
        offsets: list[int],
        ts: NDArray[np.int64],
        cutoffs: NDArray[np.float64],
    ) -> _Held:
        """Cells, labels, the join buffer's bulk insert (first of a request wins),
        lateness; raw rows and counted rows for the accepted inferences."""
        n = len(events)
        stats = self.stats
        stats.inferences += n
        first_slot = self.inferences.next_slot
        if not n:
            return _Held(
                first_slot,
                np.empty(0, np.int64),
                np.empty(0, np.uint64),
                np.empty(0, np.bool_),
                [],
            )
        cell_ids = self._cell_ids(events)
        labels = [  # as labels compare to it: metrics.as_label (strings trimmed inline)
            p.strip() if type(p) is str else as_label(p) for p in [e.prediction for e in events]
        ]
        request_ids = [e.request_id for e in events]
        hashes = hash_keys(request_ids)
        rows = InferenceColumns.of(events, ts, cell_ids, labels)
        accepted, _ = self.inferences.add_hashed(hashes, rows)
        kept = np.flatnonzero(accepted)
        stats.duplicate_inferences += n - len(kept)
        every = self.config.routing_check_every
        for j in range((-self.sampled - 1) % every, len(kept), every):
            self._check_routing(request_ids[kept[j]])  # sampled: the every-th accepted
        self.sampled += len(kept)
        kept_list = kept.tolist()
        kept_ts = ts[kept]
        slices = kept_ts - kept_ts % self._slice
        kept_cutoffs = cutoffs[kept]
        late = ColumnarClock.late(
            self._window_ends(slices), kept_cutoffs, self.config.allowed_lateness
        )
        if len(kept) == n:
            kept_events, kept_ids, kept_cells = events, request_ids, cell_ids
            kept_offsets, kept_rows = offsets, rows
        else:
            kept_events, kept_ids = _gather(kept_list, events), _gather(kept_list, request_ids)
            kept_cells, kept_offsets = _gather(kept_list, cell_ids), _gather(kept_list, offsets)
            kept_rows = InferenceColumns(
                kept_ts, rows.cells[kept], rows.labels[kept], rows.confidences[kept],
                rows.latencies[kept],
            )  # fmt: skip
        self._inference_rows.extend(kept_events, kept_rows, kept_ids, kept_offsets, late)
        self.released.arrived(kept_ids)
        counts = ~late
        for j in np.flatnonzero(late).tolist():
            counts[j] = self._late(
                int(slices[j]),
                kept_cells[j],
                float(kept_cutoffs[j]),
                "inference",
                kept_ids[j],
                int(kept_ts[j]),
            )
        side = InferenceSide(
            slices[counts], kept_rows.cells[counts], kept_rows.confidences[counts],
            kept_rows.latencies[counts], np.where(late, kept_cutoffs, NO_CUTOFF)[counts],
        )  # fmt: skip
        self._counted.inferences.append(side)
        waited = (
            self.pending.waiting_for(kept_ids)
            if self.pending
            else np.zeros(len(kept), dtype=np.bool_)
        )
        return _Held(first_slot, kept, hashes[kept], waited, kept_ids)

    def _on_feedback(
        self,
        events: list[Feedback],
        offsets: list[int],
        at: NDArray[np.int64],
        ts: NDArray[np.int64],
        cutoffs: NDArray[np.float64],
        marks: NDArray[np.float64],
        held: _Held,
        at_inferences: NDArray[np.int64],
    ) -> None:
        """Dedup (first occurrence wins) and the join's probe, in bulk. Feedback whose
        inference is held when it comes is counted; the rest waits (:meth:`_join_waiting`)."""
        stats = self.stats
        stats.feedback += len(events)
        new = self.dedup.add(list(map(_EVENT_ID, events)), ts[at])
        fresh = np.flatnonzero(new)
        stats.duplicate_feedback += len(events) - len(fresh)
        if len(fresh) == len(events):
            fb_events, fb_offsets = events, offsets
        else:
            fresh_list = fresh.tolist()
            fb_events, fb_offsets = _gather(fresh_list, events), _gather(fresh_list, offsets)
        positions = at[fresh]
        slots = self.inferences.slots(hash_keys(list(map(_REQUEST_ID, fb_events))))
        # Held when this feedback comes: before this sequence, or added earlier in it (no
        # slot is pushed out within a sequence: see _process).
        added = slots >= held.first_slot
        came = np.full(len(slots), -1, dtype=np.int64)  # sequence position of its inference
        came[added] = at_inferences[held.kept][slots[added] - held.first_slot]
        joined = (slots >= 0) & (~added | (came < positions))
        self._join_waiting(
            held, at_inferences, marks, fb_events, positions, fb_offsets, cutoffs, joined, slots
        )

    def _join_waiting(
        self,
        held: _Held,
        at_inferences: NDArray[np.int64],
        marks: NDArray[np.float64],
        fb_events: list[Feedback],
        positions: NDArray[np.int64],
        fb_offsets: list[int],
        cutoffs: NDArray[np.float64],
        joined: NDArray[np.bool_] | None = None,
        slots: NDArray[np.int64] | None = None,
    ) -> None:
        """Count the joined feedback (in bulk), hold the rest as waiting, then let each
        inference that some waiting feedback wants take it, in sequence order, unless the
        watermark reached that feedback's give-up time first (it is then released, as the
        row-wise stage releases at every watermark step).

        Holding every waiting feedback before the first taker runs is exact: a taker can
        only take feedback that came before it (feedback after its inference found it
        held, and joined), and feedback that a taker's watermark releases early would be
        released by the next one, or by this sequence's last release, before any later
        inference could take it. Only the order in which counted rows are listed differs
        (and so the partition-local numbers of new keys, which the merge maps by value)."""
        pending = self.pending
        if joined is not None and slots is not None:
            self._count_run(fb_events, fb_offsets, positions, cutoffs, joined, slots)
        waiting = np.zeros(0, np.bool_) if joined is None else ~joined
        takers = held.waited.copy()
        if waiting.any():
            wanted = hash_keys(
                [e.request_id for e, w in zip(fb_events, waiting.tolist(), strict=True) if w]
            )
            takers |= np.isin(held.hashes, wanted)
        take = np.flatnonzero(takers)
        take_at = at_inferences[held.kept[take]]
        taken: list[tuple[Feedback, int, float]] = []
        taken_slots: list[int] = []
        for t, at in zip(take.tolist(), take_at.tolist(), strict=True):
            self._release(pending.due(float(marks[at])), boundary=held.first_slot + t)
            items = pending.take(held.request_ids[t])
            taken += items
            taken_slots += [held.first_slot + t] * len(items)
        if taken:
            events, offsets, cutoffs_taken = map(list, zip(*taken, strict=True))
            self._count(
                events, offsets, np.array(taken_slots, dtype=np.int64),
                np.array(cutoffs_taken, dtype=np.float64),
            )  # fmt: skip

    def _count_run(
        self,
        fb_events: list[Feedback],
        fb_offsets: list[int],
        positions: NDArray[np.int64],
        cutoffs: NDArray[np.float64],
        joined: NDArray[np.bool_],
        slots: NDArray[np.int64],
    ) -> None:
        """A sequence's feedback: the joined counted in bulk, the rest held as waiting."""
        if joined.all():
            self._count(fb_events, fb_offsets, slots, cutoffs[positions])
        elif joined.any():
            at = np.flatnonzero(joined)
            chosen = at.tolist()
            self._count(
                _gather(chosen, fb_events), _gather(chosen, fb_offsets),
                slots[at], cutoffs[positions[at]],
            )  # fmt: skip
        pending, wait = self.pending, self.clock.join_wait
        for k in np.flatnonzero(~joined).tolist():
            event = fb_events[k]
            item = (event, fb_offsets[k], float(cutoffs[positions[k]]))
            pending.add(event.request_id, item, event.ts + wait)

    def _cell_ids(self, events: list[Inference]) -> list[int]:
        """Each inference's partition-local finest cell id (new cells numbered in order).
        The dims are interned: a decoded event's strings are its own, and comparing them
        with a held cell's, scattered in memory among ~20k cells, cost a cache miss each
        (in a bounded run 1.6 µs an inference; interned, the comparison is by identity)."""
        names = self.config.extra_dims
        i = intern
        if names:
            cells: list[Cell] = [
                (
                    i(e.tenant),
                    i(e.model_id),
                    i(e.deployment),
                    i(e.model_version),
                    i(e.segment),
                    i(e.endpoint),
                    *(i(e.attributes.get(name, "")) for name in names),
                )
                for e in events
            ]
        else:
            cells = [  # a comprehension: ~2x faster than an attribute getter on Structs
                (i(e.tenant), i(e.model_id), i(e.deployment), i(e.model_version), i(e.segment),
                 i(e.endpoint))
                for e in events
            ]  # fmt: skip
        ids = list(map(self.cells.ids.get, cells, repeat(-1)))
        if -1 in ids:
            id_of = self.cells.id_of
            for j in np.flatnonzero(np.array(ids) < 0).tolist():
                ids[j] = id_of(cells[j])
        return ids

    def _window_ends(self, slices: NDArray[np.int64]) -> NDArray[np.int64]:
        """The earliest window end of each slice start (one lookup per distinct slice)."""
        if len(slices) and (first := int(slices[0])) == slices.min() == slices.max():
            end = self._earliest_end.get(first)  # most sequences fall in one slice
            return np.full(len(slices), self._window_end_floor(first) if end is None else end)
        distinct, inverse = np.unique(slices, return_inverse=True)
        ends = self._earliest_end
        floor = self._window_end_floor
        values = [end if (end := ends.get(s)) is not None else floor(s) for s in distinct.tolist()]
        return np.array(values, dtype=np.int64)[inverse]

    def _count(
        self,
        events: list[Feedback],
        offsets: list[int],
        slots: NDArray[np.int64],
        cutoffs: NDArray[np.float64],
    ) -> None:
        """Count feedback in bulk: each event joined to the held inference at its slot,
        or unjoined where the slot is -1 (it gave up, and the store had nothing). Column
        operations, with a Python step only for the rows that need one (a tenant named,
        a label, a preference or a report, a late event, a session record); each
        family's new keys are numbered in the order of `events`."""
        context, joined = self._contexts(events, slots)
        cells = context.cells
        if any(e.tenant is not UNSET for e in events):
            keep = []
            for j, event in enumerate(events):
                refusal = None
                if event.tenant is not UNSET and joined[j]:
                    refusal = tenant_refusal(event, self.cells.values[int(cells[j])][0])
                if refusal is None:
                    keep.append(j)
                else:
                    self._refuse(event, offsets[j], refusal)
            if len(keep) < len(events):
                events, offsets = _gather(keep, events), _gather(keep, offsets)
                at = np.array(keep, dtype=np.int64)
                context = InferenceColumns(
                    context.ts[at], cells[at], context.labels[at],
                    context.confidences[at], context.latencies[at],
                )  # fmt: skip
                cells, cutoffs, joined = context.cells, cutoffs[at], joined[at]
        n = len(events)
        if not n:
            return
        kinds = [e.kind for e in events]
        values = [e.value for e in events]
        codes = np.fromiter(map(KIND_CODES.__getitem__, kinds), np.int64, n)
        keys = np.full((5, n), NONE, dtype=np.int64)  # as FeedbackSide's keyed columns
        keys[3] = 0  # the winner code where there is no pair
        labels = self._labels(codes, values, context.labels, keys)
        ts = np.fromiter(map(_TS, events), np.int64, n)
        slices = ts - ts % self._slice
        late = ColumnarClock.late(self._window_ends(slices), cutoffs, self.config.allowed_lateness)
        carried = value_numbers(codes, values)
        correct = NullableColumn(labels.right, labels.compared)
        read = ReadValues(ts, codes, values, carried, labels.values, correct)
        self._event_rows.extend(events, read, context, joined, offsets, late)
        numbers = feedback_numbers(codes, carried)
        shards = self.config.session_shards
        if shards:
            dims, records = self.cells.values, self.session_records
            for event, cell_id, kind, number in zip(
                events, cells.tolist(), kinds, numbers.tolist(), strict=True
            ):
                user = event.user_id
                record = (user, event.ts, dims[cell_id], kind, number)
                records[shard_of(user, shards)].append(record)
        keyed_kinds = (codes == KIND_CODES["preference"]) | (codes == KIND_CODES["report"])
        for j in np.flatnonzero(keyed_kinds).tolist():
            value = values[j]
            if kinds[j] == "preference":
                keys[2, j] = self.keys[PREFERENCES].id_of((value["policy_a"], value["policy_b"]))
                keys[3, j] = WINNER_CODES[value["winner"]]
            else:
                keys[4, j] = self.keys[REPORTS].id_of(value["category"])
        counts = ~late
        for j in np.flatnonzero(late).tolist():
            counts[j] = self._late(
                int(slices[j]), int(cells[j]), float(cutoffs[j]), "feedback",
                events[j].event_id, int(ts[j]),
            )  # fmt: skip
        kept = keys[:, counts]
        side = FeedbackSide(
            slices[counts], cells[counts], codes[counts], numbers[counts], labels.right[counts],
            ~joined[counts], kept[0], kept[1], kept[2], kept[3], kept[4],
            np.where(late, cutoffs, NO_CUTOFF)[counts],
        )  # fmt: skip
        self._counted.feedback.append(side)

    def _labels(
        self,
        codes: NDArray[np.int64],
        values: list[Any],
        predictions: NDArray[np.object_],
        keys: NDArray[np.int64],
    ) -> _LabelsRead:
        """Each label as labels compare (:func:`~operators.metrics.as_label`, strings
        trimmed inline), whether it equals its joined prediction, and for categorical
        labels (strings and ints) the class ids of both, into `keys` rows 0 and 1. New
        classes are numbered in event order, a label before its prediction."""
        n = len(values)
        read = _LabelsRead(
            np.full(n, None, np.object_), np.zeros(n, np.bool_), np.zeros(n, np.bool_)
        )
        rows = np.flatnonzero(codes == KIND_CODES["label"])
        if not len(rows):
            return read
        given = [values[j] for j in rows.tolist()]
        labels = [v.strip() if type(v) is str else as_label(v) for v in given]
        read.values[rows] = labels
        paired = predictions[rows] != None  # noqa: E711  (elementwise: joined to a prediction)
        at = rows[paired]
        mine, theirs = object_column(labels)[paired], predictions[at]
        read.right[at] = mine == theirs
        read.compared[at] = True
        categorical = np.fromiter(
            (type(v) is str or type(v) is int for v in given), np.bool_, len(given)
        )
        if (keyed := categorical[paired]).any():
            true_ids, predicted_ids = self._class_ids(mine[keyed].tolist(), theirs[keyed].tolist())
            keys[0, at[keyed]] = true_ids
            keys[1, at[keyed]] = predicted_ids
        return read

    def _class_ids(self, labels: list[str], predictions: list[str]) -> tuple[list[int], list[int]]:
        """The class ids of labels and their predictions (new ones numbered in order)."""
        classes = self.keys[CLASSES]
        true_ids = list(map(classes.ids.get, labels, repeat(-1)))
        predicted_ids = list(map(classes.ids.get, predictions, repeat(-1)))
        if -1 in true_ids or -1 in predicted_ids:
            id_of = classes.id_of
            for k in range(len(labels)):
                if true_ids[k] < 0 or predicted_ids[k] < 0:
                    true_ids[k], predicted_ids[k] = id_of(labels[k]), id_of(predictions[k])
        return true_ids, predicted_ids

    def _contexts(
        self, events: list[Feedback], slots: NDArray[np.int64]
    ) -> tuple[InferenceColumns, NDArray[np.bool_]]:
        """The join's context columns of each event (its held inference's, or for an
        unjoined one its own cell of unknown dims and no inference fields), and which
        joined."""
        joined = slots >= 0
        if joined.all():
            return self.inferences.columns(slots), joined
        n = len(events)
        id_of, unjoined_cell = self.cells.id_of, self._unjoined_cell
        unjoined = compress(events, (~joined).tolist())
        cells = np.fromiter((id_of(unjoined_cell(e)) for e in unjoined), np.int64)
        context = InferenceColumns(
            np.zeros(n, np.int64), np.empty(n, np.int64), np.full(n, None, dtype=np.object_),
            np.full(n, np.nan), np.full(n, np.nan),
        )  # fmt: skip
        context.cells[~joined] = cells
        if joined.any():
            held = self.inferences.columns(slots[joined])
            context.ts[joined] = held.ts
            context.cells[joined] = held.cells
            context.labels[joined] = held.labels
            context.confidences[joined] = held.confidences
            context.latencies[joined] = held.latencies
        return context, joined

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
    ) -> bool:
        """An event late for some windows: rows in metrics_late for those. True when some
        window containing it is still open at `cutoff`: the event is then counted with that
        cutoff (the merge adds it to the open windows only)."""
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
        return still_open

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
        """Feedback whose wait is over stops waiting for a live inference now (after every
        inference held so far); its store lookup waits for the tick
        (:meth:`_resolve_released`)."""
        if self.pending:
            self._release(self.pending.due(self.clock.watermark), self.inferences.next_slot)

    def _release(self, items: list[tuple[Feedback, int, float]], boundary: int) -> None:
        """Released feedback, given up on at the join buffer's slot `boundary`: an
        inference already held at a later slot came after the release."""
        if items:
            slots = self.inferences.slots(hash_keys([event.request_id for event, _, _ in items]))
            read_up_to = self._replay.read_up_to(self.processed["inferences"])
            self.released.add(items, (slots >= boundary).tolist(), read_up_to)

    def _resolve_released(self) -> None:
        """Released feedback: joined to a stored inference if the store has it, else
        unjoined; one lookup for everything released since the last (each costs ~2.5 ms
        in chDB, whatever its size). Feedback whose inference came after its release
        stays unjoined without a lookup (:class:`~operators.join.ReleasedFeedback`), and so
        does feedback released during a replay whose stored inference the stage had not
        read then (stored by the crashed execution: :func:`~operators.join.read_before_release`)."""
        due = self.released.take()
        if not due:
            return
        found: dict[str, FoundInference] = {}
        wanted = list(dict.fromkeys(event.request_id for event, _, _, gone, _ in due if not gone))
        if self._store is not None and wanted:
            found = self._store.lookup(wanted)
            self.stats.looked_up += len(wanted)
        partition = self.partition
        request_ids = [
            rid
            if not gone
            and (hit := found.get(rid := event.request_id)) is not None
            and read_before_release(hit, partition, read_up_to)
            else None
            for event, _, _, gone, read_up_to in due
        ]
        # Stored inferences are held like fresh ones (their later feedback needs no lookup).
        found_ids = list(dict.fromkeys(rid for rid in request_ids if rid is not None))
        self.stats.found_in_store += len(found_ids)
        if found_ids:
            held = (self.inferences.slots(hash_keys(found_ids)) >= 0).tolist()
            new = compress(found_ids, [not h for h in held])
            self._remember([(rid, found[rid].inference) for rid in new])
        slots = np.full(len(due), -1, dtype=np.int64)
        at = [j for j, rid in enumerate(request_ids) if rid is not None]
        if at:
            slots[at] = self.inferences.slots(hash_keys(_gather(at, request_ids)))
        self.stats.unjoined += int(np.count_nonzero(slots < 0))
        events, offsets, cutoffs, _, _ = map(list, zip(*due, strict=True))
        self._count(events, offsets, slots, np.array(cutoffs, dtype=np.float64))

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
        self._remember(recent)
        seen = self._store.recent_feedback(
            self.partition, self.processed["feedback"], watermark - config.dedup_horizon,
            config.dedup_max_entries,
        )  # fmt: skip
        # deduplicated, not stored yet
        waiting = [event for event, _, _ in self.pending.items()] + self.released.events()
        ids = [event_id for event_id, _ in seen] + [event.event_id for event in waiting]
        times = [ts for _, ts in seen] + [event.ts for event in waiting]
        self.dedup.add(ids, np.array(times, dtype=np.int64))
        log.info(
            "partition %d resumed: %d recent inferences and %d feedback ids rebuilt from the store",
            self.partition, len(recent), len(seen),
        )  # fmt: skip

    def _remember(self, recent: list[tuple[str, StoredInference]]) -> None:
        """Hold stored inferences like fresh ones, in order (their later feedback needs no
        lookup)."""
        names = self.config.extra_dims
        contexts: list[InferenceContext] = []
        for _, stored in recent:
            ts, tenant, model_id, deployment, model_version, segment, endpoint = stored[:7]
            prediction, confidence, latency, attributes = stored[7:]
            extras = tuple(attributes.get(name, "") for name in names)
            cell = (tenant, model_id, deployment, model_version, segment, endpoint, *extras)
            contexts.append((ts, self.cells.id_of(cell), prediction, confidence, latency))
        if contexts:
            ts_, cells, labels, confidences, latencies = zip(*contexts, strict=True)
            rows = InferenceColumns(
                np.array(ts_, dtype=np.int64), np.array(cells, dtype=np.int64),
                object_column(list(labels)), np.array(confidences, dtype=np.float64),
                np.array(latencies, dtype=np.float64),
            )  # fmt: skip
            self.inferences.add([request_id for request_id, _ in recent], rows)

    def _expire(self) -> None:
        watermark = self.clock.watermark
        self.inferences.expire(watermark)
        self.dedup.expire(watermark)

    def _let_go(self) -> None:
        """Once every stream ended and the last counted events are out, free what only more
        input could use: the join buffer, the dedup set (neither is snapshotted: a resume
        rebuilds them from the store) and the late path's caches. In a bounded run the
        merge stage then builds its last windows in that memory (the bench log: ~1M ids)
        and chDB inserts them: the C heap's free pages go back to the system
        (:mod:`operators.heap`), chDB's allocator would not reuse them."""
        if not len(self.inferences) and not len(self.dedup):
            return
        config = self.config
        self.dedup = DedupSet(config.dedup_horizon, config.dedup_max_entries)
        self.inferences = JoinBuffer(config.join_ttl, config.join_max_entries)
        self._join_evictions = self._dedup_evictions = 0
        self._rollups.clear()
        self._earliest_end.clear()
        for deltas in self.deltas.values():
            deltas.release()
        give_back_free_pages()

    def _count_evictions(self) -> None:
        """Report evictions (max_entries) as increments, several partitions share the
        stats; after the events that caused them, so the count does not depend on
        whether another batch came after them."""
        self.stats.join_evictions += self.inferences.evicted - self._join_evictions
        self.stats.dedup_evictions += self.dedup.evicted - self._dedup_evictions
        self._join_evictions, self._dedup_evictions = self.inferences.evicted, self.dedup.evicted

    def _check_routing(self, request_id: str) -> None:
        """Sampled check that producers key by request_id with Kafka's partitioner."""
        if partition_for(request_id, self.config.partitions) != self.partition:
            self.stats.misrouted += 1

    # ---- per batch: vectorized ---------------------------------------------------------

    def _accumulate(self, resolve: bool = False) -> None:
        """Add the batch's counted events to the slice deltas, all at once, through every
        family; at a tick (`resolve`) or when many wait, first the released feedback's
        store lookup, which counts it."""
        if resolve or len(self.released) >= RELEASED_BOUND:
            self._resolve_released()
        self._add_counted()

    def _add_counted(self) -> None:
        if self._counted:
            self._accumulator.add(self._counted.take(), self.deltas)

    def _has_deltas(self) -> bool:
        return any(len(d) for d in self.deltas.values())

    def _collect_rows(self, out: list[Output]) -> None:
        if self._refused:
            out.append(dead_letter_rows(self._refused))
            self._refused = []
        for builder in (self._inference_rows, self._event_rows):
            rows = builder.take(self.partition, self._dim_columns)
            if rows is not None:
                out.append(rows)
        late = self._late_rows.take()
        if late is not None:
            out.append(late)

    def _dim_columns(self, cell_ids: NDArray[np.int64]) -> dict[str, Categorical]:
        return self._cell_dims.columns(self.cells.values, cell_ids)

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
