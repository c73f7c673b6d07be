"""Snapshots of the stateful steps: a resumed step goes on exactly like one never
stopped, and a snapshot it cannot read fails with a clear error before anything in it
is unpickled."""

from __future__ import annotations

import pickle
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import pytest

from connectors.clickhouse import describe, migrate, to_arrow
from connectors.join_store import ClickHouseJoinStore
from operators.batches import STREAMS, RawBatch, TableRows
from operators.merge_stage import MergeStage
from operators.partition_stage import PartitionStage
from operators.partitioning import partition_for
from operators.sessions import SessionBatch, SessionStage
from operators.slices import PartialBatch
from operators.snapshots import STATE_FORMAT, StateFormatError
from operators.stage_states import MergeState, PartitionState, RulesState, SessionShardState
from operators.stats import FlowStats
from operators.synthetic import TrafficGenerator, TrafficProfile
from tests.conftest import Store
from tests.harness import (
    SESSION_SHARDS,
    _plain,
    configs,
    notified,
    semantics,
    session_config,
)

SEM = semantics(partitions=2, sessions=(("session_20s", 20_000),))
STORED_TABLES = ("inferences", "events")  # what the join store reads back on resume


@dataclass(frozen=True)
class Batch:
    partition: int
    stream: str
    lines: list[bytes]
    offsets: list[int]
    ended: bool = False


@dataclass(frozen=True)
class Tick:
    now: float


Step = Batch | Tick


def schedule() -> list[Step]:
    """Four minutes of traffic (with disorder, duplicates, orphans and very late events)
    as the batches a source would deliver, a tick every few batches, then the end."""
    profile = TrafficProfile(seed=11, duration_s=240, rate=6, late_rate=0.02, late_by_ms=90_000)
    waiting: dict[tuple[int, str], list[bytes]] = defaultdict(list)
    offsets: dict[tuple[int, str], int] = defaultdict(int)
    steps: list[Step] = []
    now = 0.0

    def flush(key: tuple[int, str], ended: bool = False) -> None:
        lines, start = waiting.pop(key, []), offsets[key]
        offsets[key] += len(lines)
        steps.append(Batch(key[0], key[1], lines, list(range(start, start + len(lines))), ended))

    for event in TrafficGenerator(profile).events():
        key = (partition_for(event.key, SEM.partitions), event.stream)
        waiting[key].append(event.line)
        if len(waiting[key]) >= 12:
            flush(key)
            if len(steps) % 4 == 0:
                now += 1_000
                steps.append(Tick(now))
    for partition in range(SEM.partitions):
        for stream in STREAMS:
            flush((partition, stream), ended=True)
    return steps


@dataclass
class Flow:
    """The three stateful steps wired as in the dataflow, driven in-process; what each
    step emitted, by step."""

    store: ClickHouseJoinStore
    snapshots: dict[str, bytes] | None = None
    now: float = 0.0
    emitted: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    to_store: list[TableRows] = field(default_factory=list)
    tables: set[str] = field(default_factory=set)  # of the rows emitted
    # The keyed families' early rows as their tables keep them (each key's latest row):
    # an early emission writes the keys that changed since the window's last one, found
    # from its cached rollups, which a resumed stage rebuilds (its first emission of a
    # window writes every key of a changed cell).
    keyed: dict[tuple[Any, ...], str] = field(default_factory=dict)
    # The sliding window's early rows from its latest window only (the default), or from
    # every open one taking turns (`early_windows: all`).
    early_windows: str = "latest"

    def __post_init__(self) -> None:
        partition_config, merge_config = configs(SEM)
        if self.early_windows == "all":
            merge_config = replace(merge_config, early_latest=())
        saved = self.snapshots or {}
        stats, clock = FlowStats(), lambda: self.now
        self.partitions = {
            p: PartitionStage(
                partition_config, stats, saved.get(f"partition {p}"), clock, self.store
            )
            for p in range(SEM.partitions)
        }
        self.merge = MergeStage(merge_config, stats, saved.get("merge"), clock)
        self.shards = {
            s: SessionStage(session_config(SEM), saved.get(f"shard {s}"), stats)
            for s in range(SESSION_SHARDS)
        }

    def run(self, steps: Iterable[Step]) -> None:
        for step in steps:
            if isinstance(step, Tick):
                self.now = step.now
                for p, stage in self.partitions.items():
                    self._route(f"partition {p}", stage.on_notify()[0])
                # Called again at once while it has more (Bytewax's notify_at = now).
                self._route("merge", notified(self.merge, self.now))
                continue
            batch = RawBatch(step.partition, step.stream, step.stream, step.lines, step.offsets,  # type: ignore[arg-type]
                             caught_up=step.ended, end_of_input=step.ended)  # fmt: skip
            self._route(
                f"partition {step.partition}", self.partitions[step.partition].on_item(batch)[0]
            )

    def finish(self) -> None:
        for p, stage in self.partitions.items():
            self._route(f"partition {p}", stage.on_eof()[0])
        self._route("merge", self.merge.on_eof()[0])
        for s, shard in self.shards.items():
            self._route(f"shard {s}", shard.on_eof()[0])

    def take_snapshots(self) -> dict[str, bytes]:
        stages: dict[str, Any] = {f"partition {p}": s for p, s in self.partitions.items()}
        stages["merge"] = self.merge
        stages.update({f"shard {s}": shard for s, shard in self.shards.items()})
        return {name: stage.snapshot() for name, stage in stages.items()}

    def _route(self, step: str, items: list[Any]) -> None:
        for item in items:
            if isinstance(item, TableRows) and item.table in KEYED_TABLES and _early(item):
                table, columns = _comparable(item)
                for row in zip(*columns.values(), strict=True):
                    r = dict(zip(columns, row, strict=True))
                    del r["version"]
                    key = (table, *(r[k] for k in KEYED_TABLES[table]))
                    self.keyed[key] = repr(r)
            else:
                self.emitted[step].append(repr(_comparable(item)))
            if isinstance(item, PartialBatch):
                self._route("merge", self.merge.on_item(item)[0])
            elif isinstance(item, SessionBatch):
                self._route(f"shard {item.shard}", self.shards[item.shard].on_item(item)[0])
            else:
                self.tables.add(item.table)
                if item.table in STORED_TABLES:
                    self.to_store.append(item)


KEYED_KEY = ("window", "window_start", "tenant", "model_id", "deployment", "model_version",
             "segment", "endpoint", "extra_dims")  # fmt: skip
KEYED_TABLES = {
    "metrics_classes": (*KEYED_KEY, "class"),
    "metrics_preferences": (*KEYED_KEY, "policy_a", "policy_b"),
    "metrics_reports": (*KEYED_KEY, "category"),
}


def _early(item: TableRows) -> bool:
    return not np.asarray(item.columns["final"]).any()


def _comparable(item: Any) -> Any:
    """An output as plain values (repr-able, NaN-safe through repr)."""
    if isinstance(item, TableRows):
        return item.table, {name: _plain(column) for name, column in item.columns.items()}
    if isinstance(item, PartialBatch):
        families = {
            name: [d.slice_starts.tolist(), d.cutoffs.tolist(), d.cell_ids.tolist(),
                   d.extras.tolist(), d.values.tolist()]
            for name, d in item.families.items()
        }  # fmt: skip
        return (
            "partial",
            item.partition,
            item.watermark,
            item.ended,
            families,
            item.new_cells,
            item.new_keys,
        )
    assert isinstance(item, SessionBatch)
    return "session_batch", item.partition, item.shard, item.watermark, item.records


def _write(store: Store, rows: list[TableRows]) -> None:
    """What the ClickHouse sink has flushed when a snapshot commits."""
    client = store.open()
    schemas = {table: describe(client, "pulse", table) for table in STORED_TABLES}
    for chunk in rows:
        client.insert_arrow(f"pulse.{chunk.table}", to_arrow(chunk.columns, schemas[chunk.table]))


@pytest.mark.parametrize("early_windows", ["latest", "all"])
def test_every_step_resumed_from_its_snapshot_emits_what_the_uninterrupted_one_does(
    store: Store, early_windows: str
) -> None:
    """Halfway through, every step is snapshotted and rebuilt from its snapshot (the rows
    written so far in ClickHouse, as after a crash); from then on each step must emit
    exactly what the same step never stopped emits, output for output (early rows too:
    which windows have emitted, and how far into their parts' logs, is in the snapshot)."""
    migrate(store.open(), "pulse")
    steps = schedule()
    half = len(steps) // 2
    kept_store, resumed_store = ClickHouseJoinStore(store.target), ClickHouseJoinStore(store.target)
    kept = Flow(kept_store, early_windows=early_windows)
    kept.run(steps[:half])
    _write(store, kept.to_store)
    snapshots = kept.take_snapshots()
    # The snapshot holds work in progress of every kind.
    assert any(len(stage.pending) for stage in kept.partitions.values())
    assert any(len(stage.merge) for stage in kept.partitions.values())
    assert any(shard.users for shard in kept.shards.values())
    assert any(state.panes for state in kept.merge.specs)

    resumed = Flow(
        resumed_store, snapshots, now=kept.now, keyed=dict(kept.keyed), early_windows=early_windows
    )
    kept.emitted.clear()
    kept.tables.clear()
    try:
        for flow in (kept, resumed):
            flow.run(steps[half:])
            flow.finish()
    finally:
        kept_store.close()  # the embedded store is free for the next test's
        resumed_store.close()

    assert set(resumed.emitted) == set(kept.emitted)
    for step, outputs in kept.emitted.items():
        assert resumed.emitted[step] == outputs, f"{step} emits otherwise after a resume"
    assert resumed.keyed == kept.keyed and kept.keyed
    assert {"metrics", "metrics_late", "sessions", "events", "inferences"} <= kept.tables


def _snapshots() -> dict[str, tuple[type, bytes]]:
    """A real snapshot of each step, and its class."""
    partition_config, merge_config = configs(SEM)
    stats = FlowStats()
    line = b'{"type": "inference", "request_id": "r1", "ts": 1767225600000, "model_id": "m", "model_version": "v", "endpoint": "/e"}'
    partition = PartitionStage(partition_config, stats, clock=lambda: 0.0)
    partition.on_item(RawBatch(0, "inferences", "inferences", [line], [0]))
    merge = MergeStage(merge_config, stats, clock=lambda: 0.0)
    shard = SessionStage(session_config(SEM), stats=stats)
    found = {"partition_stage": (PartitionStage, partition.snapshot()),
             "merge_stage": (MergeStage, merge.snapshot()),
             "session_stage": (SessionStage, shard.snapshot())}  # fmt: skip
    assert all(data is not None for _, data in found.values())
    return found  # type: ignore[return-value]


def _resume(cls: type, data: bytes) -> Any:
    partition_config, merge_config = configs(SEM)
    if cls is PartitionStage:
        return PartitionStage(partition_config, FlowStats(), data, clock=lambda: 0.0)
    if cls is MergeStage:
        return MergeStage(merge_config, FlowStats(), data, clock=lambda: 0.0)
    return SessionStage(session_config(SEM), data)


KINDS = ("partition_stage", "merge_stage", "session_stage")


@pytest.mark.parametrize("kind", KINDS)
def test_a_snapshot_of_an_unknown_state_version_is_refused_before_unpickling(kind: str) -> None:
    cls, data = _snapshots()[kind]
    header, _, _ = data.partition(b"\n")
    version = {state.KIND: state.VERSION for state in LAYOUTS}[kind]
    assert header == f"pulse-state {kind} v{version}".encode()
    # A future version whose body this version could not even unpickle.
    future = (
        f"pulse-state {kind} v{version + 1}\n".encode()
        + b"\x80\x05coperators.stage_states\nStateOfTheFuture\n."
    )
    with pytest.raises(
        StateFormatError,
        match=rf"{kind} state version '{version + 1}' is unknown .*reads version {version}.*"
        "recovery directory",
    ):
        _resume(cls, future)


@pytest.mark.parametrize("kind", KINDS)
def test_a_snapshot_from_before_versioned_states_is_refused(kind: str) -> None:
    """State format 3 pickled a dict of attributes and resumed it with __dict__.update:
    such a snapshot must not be taken for a state of this version."""
    cls, _ = _snapshots()[kind]
    legacy = pickle.dumps({"watermarks": {}, "users": {}, "next_tick": 0.0})
    with pytest.raises(StateFormatError, match=rf"{kind} snapshot has no state header"):
        _resume(cls, legacy)


def test_a_state_whose_fields_changed_without_a_new_version_is_refused() -> None:
    cls, data = _snapshots()["session_stage"]
    renamed = b"pulse-state session_stage v1\n" + pickle.dumps({"sessions": {}, "watermarks": {}})
    with pytest.raises(StateFormatError, match=r"fields changed without a new VERSION"):
        _resume(cls, renamed)
    with pytest.raises(
        StateFormatError, match=r"'merge_stage' snapshot cannot resume the session_stage"
    ):
        _resume(cls, _snapshots()["merge_stage"][1])
    assert _resume(cls, data).watermarks == {}


# The stored layout as of STATE_FORMAT 9. A change to a state type's fields must come with
# a new VERSION and STATE_FORMAT (then record the new layout here).
LAYOUTS = {
    PartitionState: (3, ("partition", "clock", "merge", "pending", "released", "processed",
                         "cells", "keys", "deltas", "session_records", "sent_watermark", "ended",
                         "sampled")),
    MergeState: (1, ("cells", "local_cells", "keys", "specs", "watermarks", "ended", "next_tick")),
    SessionShardState: (1, ("users", "watermarks")),
    RulesState: (3, ("alerts", "evaluators", "groups", "inhibiting", "clock")),
}  # fmt: skip


def test_a_state_type_changes_only_with_a_new_version() -> None:
    recorded = (9, {cls.KIND: layout for cls, layout in LAYOUTS.items()})
    now = (
        STATE_FORMAT,
        {cls.KIND: (cls.VERSION, tuple(f.name for f in fields(cls))) for cls in LAYOUTS},
    )
    assert now == recorded, (
        "a state type changed: bump its VERSION and STATE_FORMAT, record it here"
    )
