"""The core rules at their exact boundaries, each where it lives (stage or operator).

Each test pins one behaviour that a plausible one-line change of the lateness, join,
dedup or finality code would break without the rest of the suite noticing (issue 14;
`make mutate` plants such changes one at a time). They drive the stages through their
public hooks (`on_item`, `on_notify`, `snapshot`/resume) and read what they emit, so a
rewrite of the stages' insides keeps them meaningful.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pytest

from operators.batches import STREAMS, RawBatch, TableRows
from operators.join import FoundInference, PendingFeedback, StoredInference
from operators.merge_stage import MergeStage
from operators.partition_stage import PartitionStage
from operators.sessions import SessionBatch
from operators.slices import PartialBatch
from tests.harness import (
    CUBE,
    DIMS,
    Output,
    _plain,
    configs,
    final_metric_rows,
    notified,
    semantics,
)
from tests.operators.test_semantics import T0, feedback, inference

SEM = semantics(partitions=1)
OOO, WAIT = SEM.max_out_of_orderness, SEM.join_wait
TOTAL = ("default", "m", "primary", "*", "*", "*")  # the cell rolled up over every dim


class MemoryJoinStore:
    """The :class:`~operators.join.JoinStore` protocol over the rows the stage wrote (what
    ClickHouse `inferences` / `events` would hold), for stage tests without a database."""

    def __init__(self) -> None:
        self.inferences: list[dict[str, Any]] = []
        self.feedback: list[dict[str, Any]] = []

    def write(self, rows: TableRows) -> None:
        table = {"inferences": self.inferences, "events": self.feedback}.get(rows.table)
        if table is not None:
            names = list(rows.columns)
            columns = [_plain(rows.columns[name]) for name in names]
            table.extend(
                dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)
            )

    @staticmethod
    def _stored(row: dict[str, Any]) -> StoredInference:
        return (int(row["ts"]), row["tenant"], row["model_id"], row["deployment"], row["model_version"],
                row["segment"], row["endpoint"], row["prediction"], row["confidence"], row["latency_ms"],
                dict(row["attributes"]))  # fmt: skip

    def lookup(self, request_ids: list[str]) -> dict[str, FoundInference]:
        found: dict[str, FoundInference] = {}
        for row in sorted(self.inferences, key=lambda r: r["source_offset"]):
            if row["request_id"] in request_ids and row["request_id"] not in found:
                found[row["request_id"]] = FoundInference(
                    row["source_partition"], row["source_offset"], self._stored(row)
                )
        return found

    def recent_inferences(
        self, partition: int, up_to_offset: int, since_ts: float, limit: int
    ) -> list[tuple[str, StoredInference]]:
        rows = self._recent(self.inferences, partition, up_to_offset, since_ts, limit)
        return [(row["request_id"], self._stored(row)) for row in rows]

    def recent_feedback(
        self, partition: int, up_to_offset: int, since_ts: float, limit: int
    ) -> list[tuple[str, int]]:
        rows = self._recent(self.feedback, partition, up_to_offset, since_ts, limit)
        return [(row["event_id"], int(row["ts"])) for row in rows]

    @staticmethod
    def _recent(
        rows: list[dict[str, Any]], partition: int, up_to_offset: int, since_ts: float, limit: int
    ) -> list[dict[str, Any]]:
        kept = [r for r in rows if r["source_partition"] == partition
                and r["source_offset"] <= up_to_offset and r["ts"] > since_ts]  # fmt: skip
        return sorted(kept, key=lambda r: r["source_offset"])[-limit:]


class Flow:
    """Partition stages and the merge stage, driven by hand: batches in, ticks when asked;
    every table row they emit is collected (and written to the store, if any)."""

    def __init__(
        self,
        partitions: int = 1,
        *,
        bounded: bool = True,
        store: MemoryJoinStore | None = None,
        grouping_sets: tuple[tuple[str, ...], ...] = CUBE,
    ) -> None:
        sem = semantics(partitions=partitions, grouping_sets=grouping_sets)
        self.partition_config, merge_config = configs(sem, bounded)
        self.now = 1_000_000.0
        self.store = store
        self.out = Output()
        self.stages = {p: self._stage(p) for p in range(partitions)}
        self.merge = MergeStage(merge_config, self.out.stats, clock=self.clock)
        self.offsets: dict[tuple[int, str], int] = defaultdict(int)
        self.watermarks: list[float] = []  # of every partial the partitions sent, in order

    def clock(self) -> float:
        return self.now

    def _stage(self, partition: int, resume: bytes | None = None) -> PartitionStage:
        return PartitionStage(self.partition_config, self.out.stats, resume=resume,
                              clock=self.clock, store=self.store)  # fmt: skip

    def restart(self, partition: int) -> None:
        """Snapshot the partition's stage and resume a new one from it (a crash after the
        snapshot committed)."""
        snapshot = self.stages[partition].snapshot()
        assert snapshot is not None
        self.stages[partition] = self._stage(partition, resume=snapshot)

    def send(
        self,
        stream: str,
        events: Iterable[dict[str, Any]],
        *,
        partition: int = 0,
        ended: bool = False,
        caught_up: bool = True,
    ) -> None:
        """A batch of one stream; its source is caught up after it unless told (ended: for
        good)."""
        lines = [json.dumps(e).encode() for e in events]
        start = self.offsets[(partition, stream)]
        self.offsets[(partition, stream)] += len(lines)
        batch = RawBatch(partition, stream, stream, lines, list(range(start, start + len(lines))),  # type: ignore[arg-type]
                         caught_up=caught_up, end_of_input=ended)  # fmt: skip
        self._route(self.stages[partition].on_item(batch)[0])

    def tick(self, *partitions: int) -> None:
        """One second of processing time: a tick of the given partitions, then the merge's."""
        self.now += 1_000
        for p in partitions:
            self._route(self.stages[p].on_notify()[0])
        self._route(notified(self.merge, self.now))

    def end(self) -> Output:
        """End every stream (a bounded run's end of input) and flush; the rows emitted."""
        for p in self.stages:
            for stream in STREAMS:
                self.send(stream, [], partition=p, ended=True)
        for stage in self.stages.values():
            self._route(stage.on_eof()[0])
        self._route(self.merge.on_eof()[0])
        return self.out

    def _route(self, items: Iterable[Any]) -> None:
        for item in items:
            if isinstance(item, PartialBatch):
                self.watermarks.append(item.watermark)
                self._route(self.merge.on_item(item)[0])
            elif isinstance(item, TableRows):
                self.out.tables[item.table].append(item)
                if self.store is not None:
                    self.store.write(item)
            else:
                assert isinstance(item, SessionBatch)

    def finals(self, window: str = "1m") -> dict[tuple[int, tuple[str, ...]], dict[str, Any]]:
        """Final metrics rows of `window` so far, by (start, dims)."""
        rows = final_metric_rows(self.out.column_rows("metrics", final_only=True))
        return {(start, dims): row for (name, start, dims), row in rows.items() if name == window}

    def rows(self, table: str, **where: Any) -> list[dict[str, Any]]:
        return [r for r in self.out.column_rows(table) if all(r[k] == v for k, v in where.items())]


# ---- 1. inference lateness: window end + allowed lateness == cutoff is late ---------------


@pytest.mark.parametrize("short_of_edge", [0, 1])
def test_an_inference_whose_window_ends_exactly_at_the_cutoff_is_late(short_of_edge: int) -> None:
    # r0 moves the cutoff (watermark - join wait) to T0 + 60 s - short_of_edge; r1, still in
    # [T0, T0 + 60 s), arrives after it. At equality the 1m window is closed to it.
    edge = T0 + 60_000 + OOO + WAIT
    flow = Flow()
    flow.send("feedback", [], ended=True)
    flow.send("inferences", [inference("r0", edge - short_of_edge), inference("r1", T0 + 59_999)])
    out = flow.end()
    late = short_of_edge == 0
    assert [r["late"] for r in flow.rows("inferences", request_id="r1")] == [int(late)]
    missed = {(r["window"], r["window_start"]) for r in flow.rows("metrics_late", event_id="r1")}
    counted = flow.finals().get((T0, TOTAL))
    if late:
        assert ("1m", T0) in missed and counted is None  # r1 is the window's only inference
    else:
        assert not missed and counted is not None and counted["inference_count"] == 1
    assert out.stats.late_events == int(late)


@pytest.mark.parametrize("short_of_edge", [0, 1])
def test_feedback_whose_window_ends_exactly_at_the_cutoff_is_late(short_of_edge: int) -> None:
    edge = T0 + 60_000 + OOO + WAIT
    flow = Flow()
    flow.send("inferences", [inference("r1", T0)], ended=True)
    flow.send("feedback", [feedback("e0", "r1", edge - short_of_edge, "thumbs", False),
                           feedback("e1", "r1", T0 + 59_999, "thumbs", True)])  # fmt: skip
    flow.end()
    late = short_of_edge == 0
    assert [r["late"] for r in flow.rows("events", event_id="e1")] == [int(late)]
    missed = {(r["window"], r["window_start"]) for r in flow.rows("metrics_late", event_id="e1")}
    assert (("1m", T0) in missed) is late
    assert flow.finals()[(T0, TOTAL)]["thumbs_up"] == (0 if late else 1)


# ---- 2. join give-up: watermark == ts + join.wait releases the feedback unjoined ---------


def test_pending_feedback_gives_up_when_the_watermark_reaches_ts_plus_wait_exactly() -> None:
    pending = PendingFeedback()
    pending.add("r1", "waiting", give_up_at=T0 + WAIT)
    assert pending.due(T0 + WAIT - 1) == []
    assert pending.due(T0 + WAIT) == ["waiting"]
    assert not pending


@pytest.mark.parametrize("short_of_edge", [0, 1])
def test_an_inference_after_the_give_up_does_not_join_its_feedback(short_of_edge: int) -> None:
    # rX moves the watermark (max ts - ooo) to e1's ts + wait - short_of_edge; r1's
    # inference comes right after rX in its log (out of order: only the join is tested).
    # The store has r1 by the time e1's lookup runs: r1 came after the give-up all the same.
    fts = T0 + 5_000
    flow = Flow(store=MemoryJoinStore())
    flow.send("feedback", [feedback("e1", "r1", fts, "thumbs", True)], ended=True)
    flow.send("inferences", [inference("rX", fts + WAIT + OOO - short_of_edge),
                             inference("r1", fts - 1_000)])  # fmt: skip
    out = flow.end()
    gave_up = short_of_edge == 0
    [row] = flow.rows("events", event_id="e1")
    assert row["joined"] == int(not gave_up)
    assert out.stats.unjoined == int(gave_up)
    unknown = flow.finals().get((T0, ("unknown",) * len(DIMS)))
    if gave_up:
        assert unknown is not None and unknown["unjoined_count"] == 1
    else:
        assert unknown is None


def test_an_inference_stored_after_the_give_up_does_not_join_it_at_the_tick() -> None:
    # e1 gives up when rX arrives; its store lookup waits for the partition's tick. r1's
    # inference comes in the next batch and is stored before that tick: it came after the
    # give-up, so e1 stays unjoined, as a lookup at the give-up would have left it.
    store = MemoryJoinStore()
    fts = T0 + 5_000
    flow = Flow(bounded=False, store=store)
    flow.send("feedback", [feedback("e1", "r1", fts, "thumbs", True)])
    flow.send("inferences", [inference("rX", fts + WAIT + OOO)])
    flow.send("inferences", [inference("r1", fts - 1_000)])
    assert [row["request_id"] for row in store.inferences] == ["rX", "r1"]
    assert flow.rows("events", event_id="e1") == []  # released, not yet looked up
    flow.tick(0)
    [row] = flow.rows("events", event_id="e1")
    assert row["joined"] == 0
    assert (flow.out.stats.unjoined, flow.out.stats.found_in_store) == (1, 0)


def test_feedback_given_up_on_before_a_snapshot_is_looked_up_after_the_resume() -> None:
    # e1 gives up and the snapshot comes before its tick: it is resolved after the resume
    # (joined to the inference an earlier run stored), counted once, and a resent copy is
    # a duplicate.
    store = MemoryJoinStore()
    earlier = Flow(store=store)
    earlier.send("inferences", [inference("r1", T0 + 1_000)])
    earlier.end()
    fts = T0 + 5_000
    flow = Flow(bounded=False, store=store)
    flow.offsets[(0, "inferences")] = 1  # the same log, read on after r1
    e1 = feedback("e1", "r1", fts, "thumbs", True)
    flow.send("feedback", [e1])
    flow.send("inferences", [inference("rX", fts + WAIT + OOO)])
    flow.restart(0)
    flow.send("feedback", [e1])
    flow.tick(0)
    out = flow.end()
    [row] = flow.rows("events", event_id="e1")
    assert row["joined"] == 1
    assert (out.stats.found_in_store, out.stats.duplicate_feedback) == (1, 1)
    assert flow.finals()[(T0, TOTAL)]["thumbs_up"] == 1


def test_an_inference_a_crashed_run_stored_after_the_give_up_does_not_join_it_on_replay() -> None:
    # e1 gives up when rX arrives; r1's inference comes next and the sink stores it; then
    # the process dies before the tick, and the stage resumes from a snapshot taken before
    # rX. The replay gives e1 up at rX again (the source not caught up: r1 follows) and
    # looks it up at the next tick, before r1 is read again: the store holds r1 (from the
    # crashed run), but the stage had not read it when e1 gave up, so e1 stays unjoined,
    # as the run without the crash left it.
    store = MemoryJoinStore()
    fts = T0 + 5_000
    flow = Flow(bounded=False, store=store)
    flow.send("feedback", [feedback("e1", "r1", fts, "thumbs", True)])
    snapshot = flow.stages[0].snapshot()
    flow.send("inferences", [inference("rX", fts + WAIT + OOO)])
    flow.send("inferences", [inference("r1", fts - 1_000)])
    assert [row["request_id"] for row in store.inferences] == ["rX", "r1"]
    flow.stages[0] = flow._stage(0, resume=snapshot)  # the crash; the log is read again
    flow.offsets[(0, "inferences")] = 0
    flow.send("feedback", [])  # read up to the end again: nothing after e1
    flow.send("inferences", [inference("rX", fts + WAIT + OOO)], caught_up=False)
    flow.tick(0)
    [row] = flow.rows("events", event_id="e1")
    assert row["joined"] == 0
    assert (flow.out.stats.unjoined, flow.out.stats.found_in_store) == (1, 0)
    flow.send("inferences", [inference("r1", fts - 1_000)])  # read again: held, not a duplicate
    assert flow.out.stats.duplicate_inferences == 0


def test_after_the_replay_an_inference_stored_from_an_earlier_log_joins_again() -> None:
    # The store holds r9 from an earlier log (offset 500: the topics were recreated since).
    # A resumed stage checks stored offsets only while it re-reads what the crashed
    # execution may have read: once it has processed its inference stream up to where the
    # source first was caught up, e1's lookup joins r9 as a run without the crash does.
    store = MemoryJoinStore()
    store.inferences.append({"request_id": "r9", "ts": T0 + 1_000, "tenant": "default",
                             "model_id": "m", "deployment": "primary", "model_version": "v1",
                             "segment": "s", "endpoint": "/p", "prediction": None,
                             "confidence": None, "latency_ms": None, "attributes": {},
                             "source_partition": 0, "source_offset": 500})  # fmt: skip
    fts = T0 + 5_000
    flow = Flow(bounded=False, store=store)
    flow.send("feedback", [])
    flow.restart(0)
    flow.send("feedback", [feedback("e1", "r9", fts, "thumbs", True)])
    # Caught up: the replay is over once rA is processed (the invalid line after it, a
    # dead letter, is never processed: the window must not wait for it).
    flow.send("inferences", [inference("rA", fts - 2_000), {"type": "inference"}])
    flow.send("feedback", [feedback("eX", "rZ", fts + WAIT + OOO)])  # e1 gives up here
    flow.tick(0)
    [row] = flow.rows("events", event_id="e1")
    assert row["joined"] == 1 and row["model_version"] == "v1"
    assert flow.out.stats.found_in_store == 1


# ---- 3. label correctness across types --------------------------------------------------


CORRECTNESS: list[tuple[Any, Any, bool]] = [  # (prediction, label, correct): as trimmed strings, 1 == 1.0
    ("1", 1, True), ("1", 1.0, True), ("1", " 1 ", True), ("cat", " cat ", True),
    (" cat", "cat", True), (1, "1", True), (1.0, 1, True), (2.5, "2.5", True),
    ("1", 1.5, False), ("1", 2, False), ("cat", "Cat", False), ("cat", "dog", False),
]  # fmt: skip


def test_a_label_is_correct_when_it_equals_the_prediction_as_a_trimmed_string() -> None:
    flow = Flow()
    infs = [inference(f"r{i}", T0 + i, prediction=p) for i, (p, _, _) in enumerate(CORRECTNESS)]
    fbs = [feedback(f"e{i}", f"r{i}", T0 + 1_000 + i, "label", label)
           for i, (_, label, _) in enumerate(CORRECTNESS)]  # fmt: skip
    flow.send("inferences", infs)
    flow.send("feedback", fbs)
    flow.end()
    verdicts = {r["event_id"]: r["correct"] for r in flow.rows("events")}
    assert verdicts == {f"e{i}": int(ok) for i, (_, _, ok) in enumerate(CORRECTNESS)}
    total = flow.finals()[(T0, TOTAL)]
    assert total["labeled_count"] == len(CORRECTNESS)
    assert total["correct_count"] == sum(ok for _, _, ok in CORRECTNESS)


# ---- 4. feedback waiting for its inference across a restart ------------------------------


def test_a_resent_event_id_that_was_waiting_at_the_snapshot_counts_once() -> None:
    store = MemoryJoinStore()
    flow = Flow(bounded=False, store=store)
    waiting = feedback("e1", "r1", T0 + 5_000, "thumbs", True)
    flow.send("inferences", [inference("r0", T0)])
    flow.send("feedback", [waiting])  # r1's inference not seen yet: e1 waits
    flow.tick(0)
    assert flow.rows("events", event_id="e1") == []
    flow.restart(0)
    flow.send("feedback", [waiting])  # the producer sends it again after the resume
    flow.send("inferences", [inference("r1", T0 + 1_000)])
    out = flow.end()
    assert len(flow.rows("events", event_id="e1")) == 1
    assert flow.finals()[(T0, TOTAL)]["feedback_count"] == 1
    assert out.stats.duplicate_feedback == 1


# ---- 5. finality waits for every partition -----------------------------------------------


def test_no_window_is_final_until_every_partition_has_passed_its_end() -> None:
    flow = Flow(partitions=2, bounded=False)
    past_end = T0 + 60_000 + OOO + WAIT + 1_000  # emitted watermark past the 1m window's end
    flow.send("feedback", [], partition=0)
    flow.send("inferences", [inference("r0", T0 + 1_000), inference("r1", past_end)], partition=0)
    flow.tick(0)
    assert flow.finals() == {}, "partition 1 has not reported: nothing may be final"
    flow.send("feedback", [], partition=1)
    flow.send("inferences", [inference("r2", T0 + 2_000)], partition=1)
    flow.tick(0, 1)
    assert flow.finals() == {}, "partition 1 is still before the window's end"
    flow.send("inferences", [inference("r3", past_end)], partition=1)
    flow.tick(0, 1)
    total = flow.finals()[(T0, TOTAL)]
    assert total["inference_count"] == 2  # both partitions' events, in one final row


# ---- 6. one metrics_late row per distinct rollup cell ------------------------------------


def test_a_late_event_has_one_late_row_per_distinct_rollup_cell() -> None:
    # The cube, and (endpoint, segment) again: two grouping sets give the same cell. (The
    # settings drop such repeats, and "*" is not a valid dim value; the stage must not
    # rely on either.)
    flow = Flow(grouping_sets=(*CUBE, ("endpoint", "segment")))
    flow.send("inferences", [inference("r1", T0 + 1_000, segment="web")])
    flow.send("feedback", [feedback("e0", "r1", T0 + 130_000, "thumbs", False),
                           feedback("e1", "r1", T0 + 5_000, "thumbs", True)])  # fmt: skip
    flow.end()
    late = [(r["window"], r["window_start"], tuple(r[d] for d in DIMS))
            for r in flow.rows("metrics_late", event_id="e1")]  # fmt: skip
    assert len(late) == len(set(late)), "a cell listed twice for the same window"
    cells = {dims[3:] for window, start, dims in late if (window, start) == ("1m", T0)}
    assert len(cells) == len(CUBE) and ("*", "web", "/p") in cells


# ---- a final row outranks every early row, also one a later replay writes ----------------


def test_a_final_row_outranks_early_rows_a_replay_writes_later() -> None:
    """`metrics` keeps the row with the highest version per key: a replay after a crash
    (processing time has moved on) writes early rows again, which must not replace the
    final row written before."""

    def early_then(final: bool, now: float) -> list[dict[str, Any]]:
        flow = Flow(bounded=False)
        flow.now = now
        flow.send("feedback", [])
        flow.send("inferences", [inference("r1", T0 + 1_000)])
        flow.tick(0)  # an early row of [T0, T0 + 1 min)
        if final:
            flow.send("inferences", [inference("r2", T0 + 60_000 + OOO + WAIT)])
            flow.tick(0)
        return flow.out.column_rows("metrics")

    first = early_then(final=True, now=1_000_000.0)
    assert any(not r["final"] for r in first) and any(r["final"] for r in first)
    replayed = early_then(final=False, now=1_000_000.0 + 3_600_000)
    kept = final_metric_rows(first + replayed)[("1m", T0, TOTAL)]
    assert kept["final"] == 1 and kept["inference_count"] == 1


# ---- idleness needs caught-up sources ----------------------------------------------------


@pytest.mark.parametrize("caught_up", [False, True])
def test_a_silent_partition_with_a_backlog_is_never_idle(caught_up: bool) -> None:
    """Ticks on time for three idle timeouts and no data: a partition whose inference
    source says more is to be read keeps its watermark; a caught-up one goes idle and its
    watermark follows processing time."""
    flow = Flow(bounded=False)
    flow.send("feedback", [])
    flow.send("inferences", [inference("r1", T0)], caught_up=caught_up)
    for _ in range(3 * flow.partition_config.idle_timeout // 1_000):
        flow.tick(0)
    held = T0 - OOO - WAIT
    assert flow.watermarks and flow.watermarks[0] == held
    if caught_up:
        assert flow.watermarks[-1] > T0
    else:
        assert set(flow.watermarks) == {held}
