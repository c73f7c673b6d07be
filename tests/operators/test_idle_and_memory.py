"""Unbounded runs: quiet partitions still close their windows; state stays bounded on an
endless stream (counted in entries, not time)."""

from __future__ import annotations

import json
from dataclasses import replace

from operators.batches import RawBatch
from operators.merge_stage import MergeStage
from operators.partition_stage import PartitionConfig, PartitionStage
from operators.partitioning import partition_for
from operators.sessions import SessionBatch
from operators.slices import SCATTER_FROM_ROWS, PartialBatch
from operators.stats import FlowStats
from operators.synthetic import TrafficGenerator, TrafficProfile
from tests.harness import configs, notified, semantics

T0 = 1_767_225_600_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _line(event: dict) -> bytes:
    return json.dumps(event).encode()


def test_a_stream_that_stops_has_its_last_window_final_an_idle_timeout_later() -> None:
    partition_config, merge_config = configs(semantics(partitions=1), bounded=False)
    clock, stats = Clock(), FlowStats()
    stage = PartitionStage(partition_config, stats, clock=clock)
    merge = MergeStage(merge_config, stats, clock=clock)
    # Traffic up to 03:00 (T0 + 60 s) exactly, then nothing.
    inferences = [_line({"type": "inference", "request_id": f"r{i}", "ts": T0 + i * 1000, "model_id": "m",
                         "model_version": "v", "endpoint": "/e"}) for i in range(61)]  # fmt: skip
    waiting = _line({"type": "feedback", "event_id": "e1", "request_id": "never", "ts": T0 + 59_000,
                     "kind": "thumbs", "value": True, "user_id": "u"})  # fmt: skip
    out = stage.on_item(RawBatch(0, "feedback", "feedback", [waiting], [0], caught_up=True))[0]
    out += stage.on_item(
        RawBatch(0, "inferences", "inferences", inferences, list(range(61)), caught_up=True)
    )[0]

    stopped = clock.now

    def final_1m_windows(quiet_for: float) -> set[int]:
        items = list(out)
        out.clear()
        while clock.now < stopped + quiet_for:  # ticks every second, as Bytewax calls them
            clock.now = min(clock.now + 1000, stopped + quiet_for)
            items += stage.on_notify()[0]
        rows = []
        for item in items:
            if isinstance(item, PartialBatch):
                rows += merge.on_item(item)[0]
        rows += notified(merge, clock.now)
        return {int(s) for r in rows if r.table == "metrics" for s, w, f in
                zip(r.columns["window_start"], r.columns["window"].codes, r.columns["final"], strict=True)
                if f and r.columns["window"].categories[w] == "1m"}  # fmt: skip

    idle = partition_config.idle_timeout
    assert T0 not in final_1m_windows(1000)  # traffic just stopped: [T0, T0 + 60 s) is open
    assert T0 not in final_1m_windows(idle - 1)  # still inside idle_timeout
    assert T0 in final_1m_windows(idle)  # idle_timeout after the last event, no new event
    assert stats.unjoined == 1  # the feedback that waited gave up on the way


def test_state_stays_bounded_on_an_endless_stream() -> None:
    sem = semantics(partitions=2)
    partition_config, merge_config = configs(sem, bounded=False)
    partition_config = replace(partition_config, dedup_horizon=900_000, join_ttl=600_000)
    clock, stats = Clock(), FlowStats()
    stages = {p: PartitionStage(partition_config, stats, clock=clock) for p in range(2)}
    merge = MergeStage(merge_config, stats, clock=clock)
    # 3 hours of event time at 3 inferences/s, fed in 60-second steps, one tick per step.
    events = TrafficGenerator(
        TrafficProfile(seed=3, duration_s=3 * 3600, rate=3, late_rate=0)
    ).events()
    sizes = []
    step, batch, next_step = (
        60_000,
        {(p, s): [] for p in range(2) for s in ("inferences", "feedback")},
        T0 + 60_000,
    )
    offsets = dict.fromkeys(batch, 0)

    def feed() -> None:
        for (p, s), lines in batch.items():
            out = stages[p].on_item(RawBatch(p, s, s, lines, list(range(offsets[(p, s)], offsets[(p, s)] + len(lines))),
                                             caught_up=True))[0]  # fmt: skip
            offsets[(p, s)] += len(lines)
            lines.clear()
            route(out)
        clock.now += 1000
        for stage in stages.values():
            route(stage.on_notify()[0])
        notified(merge, clock.now)

    def route(items: list) -> None:
        for item in items:
            if isinstance(item, PartialBatch):
                merge.on_item(item)
            assert not isinstance(item, SessionBatch) or item.records is not None

    for event in events:
        while event.emit_ms >= next_step:
            feed()
            next_step += step
            if (next_step - T0) % 1_800_000 == 0:
                sizes.append(_state_entries(stages, merge))
        batch[(partition_for(event.key, 2), event.stream)].append(event.line)
    feed()
    # Half an hour of state after warm-up; it must not grow with the stream.
    warm = sizes[len(sizes) // 3 :]
    assert max(warm) <= 1.25 * min(warm), sizes
    assert stats.windows_final > 300


def _state_entries(stages: dict[int, PartitionStage], merge: MergeStage) -> int:
    partition_state = sum(
        len(s.inferences)
        + len(s.dedup)
        + len(s.pending)
        + len(s.merge)
        + sum(len(d) for d in s.deltas.values())
        for s in stages.values()
    )
    parts = [
        part for state in merge.specs for part in (*state.panes.values(), *state.extras.values())
    ]
    merge_state = sum(len(sums) for part in parts for sums in part.families.values())
    # The early rows' caches: each open window's rollups, each part's deltas since.
    cached = sum(len(cache) for state in merge.specs for window in state.rolled.values()
                 for cache in window.values())  # fmt: skip
    # Each part's log of changes: (family, (keys, values)), None after a restore.
    fresh = sum(len(entry[1][0]) for part in parts for entry in part.fresh if entry is not None)
    return partition_state + merge_state + cached + fresh


def _caught_up_after_one_inference() -> tuple[PartitionConfig, Clock, FlowStats, PartitionStage]:
    """An unbounded partition that read one inference; both sources say they are caught up."""
    partition_config, _ = configs(semantics(partitions=1), bounded=False)
    clock, stats = Clock(), FlowStats()
    stage = PartitionStage(partition_config, stats, clock=clock)
    inference = _line({"type": "inference", "request_id": "r1", "ts": T0, "model_id": "m",
                       "model_version": "v", "endpoint": "/e"})  # fmt: skip
    stage.on_item(RawBatch(0, "inferences", "inferences", [inference], [0], caught_up=True))
    stage.on_item(RawBatch(0, "feedback", "feedback", [], [], caught_up=True))
    return partition_config, clock, stats, stage


def test_downtime_before_a_resume_is_not_mistaken_for_quiet_streams() -> None:
    """While the flow is down, processing time passes but no stream is quiet: after the
    resume, feedback still waits for the inference stream (which was caught up before
    the crash, and has a backlog now) instead of being joined against nothing."""
    partition_config, clock, stats, stage = _caught_up_after_one_inference()
    watermark = stage.clock.watermark
    snapshot = stage.snapshot()
    assert snapshot is not None

    clock.now += 100 * partition_config.idle_timeout  # the flow was down
    resumed = PartitionStage(partition_config, stats, resume=snapshot, clock=clock)
    feedback = _line({"type": "feedback", "event_id": "e2", "request_id": "r2", "ts": T0 + 5_000,
                      "kind": "thumbs", "value": True, "user_id": "u"})  # fmt: skip
    resumed.on_item(RawBatch(0, "feedback", "feedback", [feedback], [1], caught_up=False))
    resumed.on_notify()
    assert len(resumed.merge) == 1, "the feedback must wait for the inference stream"
    assert resumed.clock.watermark == watermark, "a restart must not advance the watermark"
    assert stats.unjoined == 0

    clock.now += partition_config.idle_timeout  # silence is not enough: still waiting
    resumed.on_notify()
    assert len(resumed.merge) == 1
    # The inference source has read its backlog (here: nothing new) and says so.
    resumed.on_item(RawBatch(0, "inferences", "inferences", [], [], caught_up=True))
    assert len(resumed.merge) == 0


def test_a_worker_too_busy_to_poll_is_not_a_quiet_stream() -> None:
    """Sources with a backlog, not polled for many idle timeouts (the worker was held by
    a slow sink or a long emission): nothing gives up waiting, the watermark stays."""
    partition_config, _ = configs(semantics(partitions=1), bounded=False)
    clock, stats = Clock(), FlowStats()
    stage = PartitionStage(partition_config, stats, clock=clock)
    stage.on_item(RawBatch(0, "inferences", "inferences", [], [], caught_up=False))
    feedback = _line({"type": "feedback", "event_id": "e1", "request_id": "r1", "ts": T0 + 1_000,
                      "kind": "thumbs", "value": True, "user_id": "u"})  # fmt: skip
    stage.on_item(RawBatch(0, "feedback", "feedback", [feedback], [0], caught_up=False))
    watermark = stage.clock.watermark

    clock.now += 10 * partition_config.idle_timeout
    stage.on_notify()
    assert stage.clock.watermark == watermark
    assert len(stage.merge) == 1, "the feedback must wait for the inference stream's backlog"

    inference = _line({"type": "inference", "request_id": "r1", "ts": T0, "model_id": "m",
                       "model_version": "v", "endpoint": "/e"})  # fmt: skip
    stage.on_item(RawBatch(0, "inferences", "inferences", [inference], [0], caught_up=True))
    stage.on_item(RawBatch(0, "feedback", "feedback", [], [], caught_up=True))
    stage.on_eof()
    assert stats.unjoined == 0 and stats.late_events == 0
    assert len(stage.pending) == 0  # joined


def test_time_the_worker_was_held_elsewhere_is_not_quiet_time() -> None:
    """Caught-up sources, then the worker is held for many idle timeouts (one long
    emission, a slow sink): the stage's first tick after that does not take the gap for
    silence; ticks on time afterwards do."""
    partition_config, clock, _, stage = _caught_up_after_one_inference()
    watermark = stage.clock.watermark

    clock.now += 10 * partition_config.idle_timeout  # held: no tick ran meanwhile
    stage.on_notify()
    assert stage.clock.watermark == watermark, "a held worker is not a quiet partition"
    for _ in range(partition_config.idle_timeout // 1000):
        clock.now += 1000
        stage.on_notify()
    assert stage.clock.watermark > watermark  # quiet for idle_timeout of running time


def test_a_partition_whose_input_ended_lets_go_of_its_join_and_dedup_state() -> None:
    """A bounded partition that has read its last line holds no inference or feedback id
    (the merge stage builds its last windows in that memory), and its counts are the same
    as when it keeps them: the joined feedback was counted before the state went."""
    partition_config, _ = configs(semantics(partitions=1), bounded=True)
    stats = FlowStats()
    stage = PartitionStage(partition_config, stats, clock=Clock())
    inferences = [_line({"type": "inference", "request_id": f"r{i}", "ts": T0 + i,
                         "model_id": "m", "model_version": "v", "endpoint": "/e"})
                  for i in range(50)]  # fmt: skip
    feedback = [_line({"type": "feedback", "event_id": f"e{i}", "request_id": f"r{i}",
                       "ts": T0 + 100 + i, "kind": "thumbs", "value": True, "user_id": "u"})
                for i in range(50)]  # fmt: skip
    stage.on_item(RawBatch(0, "inferences", "inferences", inferences, list(range(50))))
    stage.on_item(RawBatch(0, "feedback", "feedback", feedback, list(range(50))))
    stage.on_item(RawBatch(0, "inferences", "inferences", [], [], end_of_input=True))
    assert not stage.ended and len(stage.inferences) == 50, "feedback may still come"
    assert len(stage.dedup) == 50
    stage.on_item(RawBatch(0, "feedback", "feedback", [], [], end_of_input=True))
    assert stage.ended
    assert len(stage.inferences) == 0 and len(stage.dedup) == 0
    assert stats.feedback == 50 and stats.unjoined == 0
    assert stats.join_evictions == 0 and stats.dedup_evictions == 0


def test_an_ended_partition_frees_its_scatter_tables() -> None:
    """A bounded partition whose input ended keeps no scatter table: the end of a bounded
    run closes every window in memory the partitions no longer need."""
    n = 2 * SCATTER_FROM_ROWS  # one batch of counted events in one slice: a table
    partition_config, _ = configs(semantics(partitions=1), bounded=True)
    stats = FlowStats()
    stage = PartitionStage(partition_config, stats, clock=Clock())
    inferences = [_line({"type": "inference", "request_id": f"r{i}", "ts": T0 + i,
                         "model_id": "m", "model_version": "v", "endpoint": f"/e{i % 40}"})
                  for i in range(n)]  # fmt: skip
    feedback = [_line({"type": "feedback", "event_id": f"e{i}", "request_id": f"r{i}",
                       "ts": T0 + n + i, "kind": "thumbs", "value": True, "user_id": "u"})
                for i in range(n)]  # fmt: skip
    stage.on_item(RawBatch(0, "inferences", "inferences", inferences, list(range(n))))
    stage.on_item(RawBatch(0, "feedback", "feedback", feedback, list(range(n))))
    stage.on_item(RawBatch(0, "inferences", "inferences", [], [], end_of_input=True))
    assert not stage.ended
    assert sum(d.tables_held for d in stage.deltas.values()) > 0, "the test makes a table"
    stage.on_item(RawBatch(0, "feedback", "feedback", [], [], end_of_input=True))
    assert stage.ended and stats.feedback == n
    assert sum(d.tables_held for d in stage.deltas.values()) == 0
