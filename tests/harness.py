"""Drive the partition and merge stages in-process (no Bytewax), and compare any run's
output with the reference implementation."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from operators.batches import STREAMS, Categorical, NullableColumn, RawBatch, TableRows
from operators.merge_stage import MergeConfig, MergeStage
from operators.partition_stage import PartitionConfig, PartitionStage
from operators.partitioning import partition_for
from operators.sessions import SessionBatch, SessionConfig, SessionSpec, SessionStage
from operators.slices import PartialBatch
from operators.stats import FlowStats
from operators.windows import WindowSpec
from tests import reference as ref

DIMS = ("tenant", "model_id", "deployment", "model_version", "segment", "endpoint")
CUBE = (
    ("model_version", "segment", "endpoint"), ("segment", "endpoint"), ("model_version", "endpoint"),
    ("endpoint",), ("model_version", "segment"), ("segment",), ("model_version",), (),
)  # fmt: skip
DEFAULT_WINDOWS = (
    ref.Window("1m", 60_000, 60_000),
    ref.Window("1h", 3_600_000, 3_600_000),
    ref.Window("5m_30s", 300_000, 30_000),
)


def semantics(partitions: int = 4, **kw: Any) -> ref.Semantics:
    kw.setdefault("windows", DEFAULT_WINDOWS)
    kw.setdefault("grouping_sets", CUBE)
    return ref.Semantics(partitions=partitions, **kw)


@dataclass
class Output:
    tables: dict[str, list[TableRows]] = field(default_factory=lambda: defaultdict(list))
    stats: FlowStats = field(default_factory=FlowStats)

    def column_rows(self, table: str, final_only: bool = False) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for chunk in self.tables[table]:
            if final_only and not np.asarray(chunk.columns["final"]).any():
                continue
            names = list(chunk.columns)
            columns = [_plain(chunk.columns[n]) for n in names]
            rows.extend(
                dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)
            )
        return rows


def _plain(column: Any) -> list[Any]:
    if isinstance(column, Categorical):
        return [column.categories[code] for code in column.codes.tolist()]
    if isinstance(column, pa.Array | pa.ChunkedArray):
        return column.to_pylist()
    if isinstance(column, NullableColumn):
        flags = column.valid.tolist()
        return [v if ok else None for v, ok in zip(column.values.tolist(), flags, strict=True)]
    return column.tolist() if isinstance(column, np.ndarray) else list(column)


SESSION_SHARDS = 3


def session_config(sem: ref.Semantics) -> SessionConfig:
    return SessionConfig(
        specs=tuple(SessionSpec(name, gap) for name, gap in sem.sessions),
        partitions=sem.partitions, shards=SESSION_SHARDS,
        allowed_lateness=sem.allowed_lateness, extra_dims=(),
    )  # fmt: skip


def configs(sem: ref.Semantics, bounded: bool = True) -> tuple[PartitionConfig, MergeConfig]:
    specs = tuple(WindowSpec(w.name, w.length, w.slide) for w in sem.windows)
    partition = PartitionConfig(
        partitions=sem.partitions, specs=specs, grouping_sets=sem.grouping_sets,
        allowed_lateness=sem.allowed_lateness, max_out_of_orderness=sem.max_out_of_orderness,
        idle_timeout=5_000, emit_interval=1_000, bounded=bounded, join_ttl=600_000,
        join_max_entries=1_000_000, join_wait=sem.join_wait, dedup_horizon=86_400_000,
        dedup_max_entries=1_000_000, extra_dims=(), confidence_bins=sem.confidence_bins,
        max_event_bytes=65_536, min_ts=0, max_ts=1 << 62,
        session_shards=SESSION_SHARDS if sem.sessions else 0,
    )  # fmt: skip
    merge = MergeConfig(
        partitions=sem.partitions, specs=specs, grouping_sets=sem.grouping_sets, extra_dims=(),
        allowed_lateness=sem.allowed_lateness, emit_interval=1_000,
        confidence_bins=sem.confidence_bins,
        # As the settings do (dataflows.feedback.early_latest): a sliding window's early
        # rows from its oldest open window only.
        early_latest=tuple(w.slide < w.length for w in sem.windows),
    )  # fmt: skip
    return partition, merge


class Stages:
    """A partition stage per partition, the merge stage and the session shards, wired as
    the flow wires them: `handle` routes each output on until it reaches a table."""

    def __init__(
        self,
        partition_config: PartitionConfig,
        merge_config: MergeConfig,
        sem: ref.Semantics,
        out: Output,
        clock: Callable[[], float],
    ) -> None:
        self.out = out
        self.partitions = {p: PartitionStage(partition_config, out.stats, clock=clock)
                           for p in range(sem.partitions)}  # fmt: skip
        self.merge = MergeStage(merge_config, out.stats, clock=clock)
        self.shards = {s: SessionStage(session_config(sem)) for s in range(SESSION_SHARDS)}

    def handle(self, items: Iterable[Any]) -> None:
        for item in items:
            if isinstance(item, PartialBatch):
                self.handle(self.merge.on_item(item)[0])
            elif isinstance(item, SessionBatch):
                self.handle(self.shards[item.shard].on_item(item)[0])
            else:
                self.out.tables[item.table].append(item)


def notified(merge: MergeStage, now: float) -> list[TableRows]:
    """`on_notify` as Bytewax calls it: again at once while the stage has more to hand
    over now (the rest of a tick's early rows, final windows the sink is ready for)."""
    out = merge.on_notify()[0]
    while merge.call_again_now(now):
        out += merge.on_notify()[0]
    return out


def sink_gets(stats: FlowStats, tables: list[TableRows]) -> tuple[int, int]:
    """Count `tables` handed over as the ClickHouse sink does; returns (rows, rows of them
    to write at once), for :func:`sink_writes`."""
    rows, now = sum(map(len, tables)), sum(len(t) for t in tables if t.write_now)
    stats.sink_rows_in += rows
    stats.sink_now_in += now
    return rows, now


def sink_writes(stats: FlowStats, rows: int, now: int) -> None:
    """Count `rows` written as the ClickHouse sink does, `now` of them written at once."""
    stats.rows_written += rows
    stats.now_written += now


def sink_writes_all(stats: FlowStats) -> None:
    """Count every row handed over so far as written."""
    sink_writes(stats, stats.sink_pending, stats.sink_now_in - stats.now_written)


def run_stages(
    lines: Iterable[tuple[str, str | bytes, bytes]],
    sem: ref.Semantics,
    *,
    seed: int = 0,
    max_batch: int = 50,
    tick_every: int = 10,
) -> Output:
    """Bounded run: feed each partition's streams in random-sized batches, interleaved at
    random, with random extra ticks; end every stream; collect all outputs."""
    rng = random.Random(seed)
    partition_config, merge_config = configs(sem)
    out = Output()
    queues: dict[int, dict[str, list[bytes]]] = defaultdict(lambda: {s: [] for s in STREAMS})
    for stream, key, line in lines:
        queues[partition_for(key, sem.partitions)][stream].append(line)
    clock = [0.0]
    wired = Stages(partition_config, merge_config, sem, out, lambda: clock[0])
    stages, merge, shards, handle = wired.partitions, wired.merge, wired.shards, wired.handle

    offsets = {(p, s): 0 for p in range(sem.partitions) for s in STREAMS}
    pending = [(p, s) for p in range(sem.partitions) for s in STREAMS]
    for p, s in pending:
        handle(stages[p].on_item(RawBatch(p, s, s))[0])  # announce, not caught up
    steps = 0
    while pending:
        p, s = rng.choice(pending)
        queue = queues[p][s]
        take = rng.randint(1, max_batch)
        chunk, queues[p][s] = queue[:take], queue[take:]
        start = offsets[(p, s)]
        offsets[(p, s)] += len(chunk)
        ended = not queues[p][s]
        handle(stages[p].on_item(RawBatch(p, s, s, chunk, list(range(start, start + len(chunk))),
                                          caught_up=ended, end_of_input=ended))[0])  # fmt: skip
        if ended:
            pending.remove((p, s))
        steps += 1
        if tick_every and steps % tick_every == 0:
            clock[0] += 1_000
            for stage in stages.values():
                handle(stage.on_notify()[0])
            handle(notified(merge, clock[0]))
    for stage in stages.values():
        handle(stage.on_eof()[0])
    handle(merge.on_eof()[0])
    for shard in shards.values():
        handle(shard.on_eof()[0])
    return out


# ---- comparison with the reference ----------------------------------------------------------

METRIC_NAMES = tuple(ref.metrics(ref.Cell(), 60.0))
# Squares of rewards are rounded to the 2^-20 grid before summing (operators.metrics): the
# standard deviation then agrees with statistics.stdev to ~1e-6 (more for tiny variances).
TOLERANCE = {"reward_stddev": 1e-4}


def final_metric_rows(
    rows: Iterable[dict[str, Any]],
) -> dict[tuple[str, int, tuple[str, ...]], dict[str, Any]]:
    """Latest final row per (window, start, dims), from rows of the metrics table."""
    best: dict[tuple[str, int, tuple[str, ...]], dict[str, Any]] = {}
    for row in rows:
        key = (row["window"], int(row["window_start"]), tuple(row[d] for d in DIMS))
        if key not in best or row["version"] >= best[key]["version"]:
            best[key] = row
    return best


def assert_metrics_match(
    got: dict[tuple[str, int, tuple[str, ...]], dict[str, Any]],
    expected: dict[tuple[str, int, tuple[str, ...]], dict[str, Any]],
) -> None:
    not_final = [k for k, row in got.items() if not row["final"]]
    assert not not_final, f"{len(not_final)} windows never became final, e.g. {not_final[:3]}"
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    assert not missing and not extra, (
        f"{len(missing)} cells missing (e.g. {sorted(missing)[:3]}), "
        f"{len(extra)} unexpected (e.g. {sorted(extra)[:3]})"
    )
    problems = []
    for key, want in expected.items():
        row = got[key]
        for name in METRIC_NAMES:
            if not ref.close(want[name], row[name], TOLERANCE.get(name, 1e-9)):
                problems.append(f"{key} {name}: expected {want[name]!r}, got {row[name]!r}")
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:20])


def late_keys(rows: Iterable[dict[str, Any]]) -> set[tuple[str, int, tuple[str, ...], str, str]]:
    return {
        (r["window"], int(r["window_start"]), tuple(r[d] for d in DIMS), r["stream"], r["event_id"])
        for r in rows
    }


KEYED_TABLES = {
    "classes": ("metrics_classes", ("class",)),
    "preferences": ("metrics_preferences", ("policy_a", "policy_b")),
    "reports": ("metrics_reports", ("category",)),
}


def final_keyed_rows(
    rows: Iterable[dict[str, Any]], key_columns: tuple[str, ...]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (
            row["window"],
            int(row["window_start"]),
            tuple(row[d] for d in DIMS),
            *(row[k] for k in key_columns),
        )
        if key not in best or row["version"] >= best[key]["version"]:
            best[key] = row
    return best


def assert_keyed_match(rows_of: Any, result: ref.Result) -> None:
    """`rows_of(table)` gives a table's rows; compare every keyed family with the reference."""
    expected = ref.keyed_rows(result)
    for family, (table, key_columns) in KEYED_TABLES.items():
        got = final_keyed_rows(rows_of(table), key_columns)
        want = expected[family]
        assert want, f"the traffic should produce {table} rows"
        assert set(got) == set(want), (
            f"{table}: {len(set(want) - set(got))} missing, {len(set(got) - set(want))} unexpected"
        )
        problems = [f"{key} {name}: expected {value!r}, got {got[key][name]!r}"
                    for key, values in want.items() for name, value in values.items()
                    if not ref.close(value, got[key][name])]  # fmt: skip
        assert not problems, f"{table}: {len(problems)} differences:\n" + "\n".join(problems[:10])
        assert all(row["final"] for row in got.values())


def assert_sessions_match(
    rows: Iterable[dict[str, Any]], result: ref.Result, sem: ref.Semantics
) -> None:
    expected: dict[tuple[str, str, int], dict[str, Any]] = {}
    for name, gap in sem.sessions:
        expected.update(ref.sessions(result, gap, name))
    got = {(r["window"], r["user_id"], int(r["session_start"])): r for r in rows}
    assert expected, "the traffic should produce sessions"
    assert set(got) == set(expected), (
        f"{len(set(expected) - set(got))} sessions missing, {len(set(got) - set(expected))} unexpected"
    )
    problems = []
    for key, want in expected.items():
        row = got[key]
        if (
            tuple(row[d] for d in DIMS) != want["dims"]
            or int(row["session_end"]) != want["session_end"]
        ):
            problems.append(
                f"{key}: dims/end {tuple(row[d] for d in DIMS)}, {row['session_end']} != {want['dims']}, {want['session_end']}"
            )
        for name in (
            "session_events",
            "session_duration_s",
            "ratings",
            "rating_mean",
            "thumbs",
            "thumbs_up_rate",
        ):
            if not ref.close(want[name], row[name]):
                problems.append(f"{key} {name}: expected {want[name]!r}, got {row[name]!r}")
        if row["late"]:
            problems.append(f"{key} marked late")
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:10])
