"""Bytewax sink that writes :class:`TableRows` to ClickHouse in large blocks.

* Rows are buffered per table and inserted by one background thread (chDB and the HTTP
  client release the GIL while the insert runs, so writing overlaps processing), in
  blocks of up to `block_rows`, at least every `flush_interval`. Each table keeps its
  own interval: rows that arrive when their table was last written `flush_interval` ago
  or more are written at once. A window emission (the merge stage's early rows, once per
  `time.emit_interval`) is therefore written when it arrives, not when the interval of
  the raw tables (fed by every source batch) next ends, up to `flush_interval` later;
  each table still gets at most one insert per interval (docs/performance.md,
  "Ceiling and freshness"), unless a stage waits on the sink: then everything buffered
  is written at once (:mod:`connectors.sink_demand`), or rows come marked
  :attr:`~operators.batches.TableRows.write_now` (the early rows of a window spec that
  emits at every tick: written with whatever their lane holds when they arrive, where
  they had waited up to an interval behind the other specs' early rows, which go in
  shares and are never marked). Those lanes also go first: at the head of each round of
  blocks, and between two blocks of a round when they arrive during it (but never
  before a block of their own lane still to be written: a lane's rows keep their
  order), so the minute's early rows wait for about one block, not for a round of final
  rows and raw rows (~1 s once a minute at 24,000 events/s). A wide table's block is
  smaller: at most `block_bytes` (:func:`row_bytes`), because chDB's memory while it
  inserts a block follows the block's bytes, not its rows.
* ``snapshot()`` — called by Bytewax at the end of every epoch, before the epoch's
  snapshot is committed — blocks until every durable row buffered is written. A
  committed snapshot therefore never points past rows that were lost in a crash; rows
  written after it are rewritten on replay under the same keys (see the migrations).
  Early window rows are not waited for (:attr:`TableRows.provisional`: each is replaced
  by a later row of its key, at last the final row): they are buffered apart and written
  at their table's interval. Waiting for them held the worker ~0.7 s every 10 s at
  12,000 events/s behind a sliding window's early rows, the tail of freshness
  (docs/performance.md). One lost in a crash leaves the window's previous early row
  until its next change or its final row.
* Backpressure: while `max_pending_rows` or `max_pending_bytes` are unwritten (buffered
  or being inserted), ``write_batch`` blocks, after each :class:`TableRows` it hands
  over: an outage slows
  the flow down instead of dropping rows or growing memory without bound, and a large
  batch (every window's final rows at the end of a bounded run) is not buffered whole
  before the bound applies. The writer takes one block per table at a time (what it
  holds in flight stays within a block, so a small bound still leaves room to buffer
  while it inserts) and lets go of each block's rows once written.
* Failed inserts are retried with exponential backoff (tenacity) for as long as the
  failure looks transient (connection refused, timeouts, overload). Any other error (a
  schema mismatch) ends the process with exit code 3 and the cause in the log: raising
  inside a Bytewax sink makes Bytewax panic while unwinding, and the abort that follows
  hangs in chDB's fatal-signal handler. Nothing is lost: the snapshot that would have
  covered the failed rows is never committed, so a restart rewrites them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from tenacity import RetryCallState

from connectors.clickhouse import (
    Target,
    connect_for_inserts,
    describe,
    retrying_while_transient,
    to_arrow,
)
from connectors.run_control import exit_write_failed
from connectors.sink_demand import SinkDemand
from operators.batches import Categorical, NullableColumn, TableRows
from operators.stats import FlowStats, timed

log = logging.getLogger("pulse.clickhouse")

# chDB's memory while it inserts a block grows with the block's bytes (about 6x its Arrow
# size: 2.6 KiB per `metrics` row, 0.85 KiB per `metrics_classes` row): a 100k-row
# `metrics` block took +256 MiB for its insert alone, the jump at the end of a bounded run.
# A block is therefore bounded in bytes as well as rows, per table (see docs/performance.md).
BLOCK_BYTES = 8 << 20
# Backpressure in bytes too: a wide table's rows weigh several times a narrow one's.
MAX_PENDING_BYTES = 32 << 20

# Keyed tables are deduplicated when parts merge and by FINAL at read time; doing it again
# for every inserted block (optimize_on_insert) made metrics inserts ~2.6x slower here.
INSERT_SETTINGS = {"optimize_on_insert": 0}


Lane = tuple[str, bool]  # (table, provisional): rows buffered and inserted together


class _Writer:
    """Buffers per table (early rows apart) and writes from one thread; thread-safe."""

    def __init__(
        self,
        target: Target,
        *,
        block_rows: int,
        flush_interval: float,
        max_pending_rows: int,
        retry_backoff_max: float,
        stats: FlowStats,
        block_bytes: int = BLOCK_BYTES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        client_factory: Callable[[Target], Any] | None = None,
        exit_on_failure: bool = True,
    ) -> None:
        self.target = target
        self.exit_on_failure = exit_on_failure
        self.block_rows = block_rows
        self.flush_interval = flush_interval
        self.max_pending_rows = max_pending_rows
        self.block_bytes = block_bytes
        self.max_pending_bytes = max_pending_bytes
        self._row_bytes: dict[str, int] = {}  # per table, from its first rows
        self._pending_bytes = 0
        self._in_flight_bytes = 0
        self.retry_backoff_max = retry_backoff_max
        self.stats = stats
        self._client_factory = client_factory
        self._client: Any = None
        self._schemas: dict[str, list[tuple[str, str]]] = {}
        self._buffers: dict[Lane, deque[TableRows]] = {}
        self._pending = 0
        self._durable = 0  # rows not provisional, buffered or in flight (what flush waits for)
        self._in_flight = 0
        self._flush_requested = False
        self._hurried = False  # someone waits on what is buffered (hurry)
        self._closing = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._failing_since: float | None = None
        self._written_at: dict[Lane, float] = {}  # per lane: its last write (monotonic)
        # Lanes holding rows to write when they arrive (TableRows.write_now).
        self._write_now: set[Lane] = set()
        self._thread = threading.Thread(target=self._run, name="clickhouse-writer", daemon=True)
        self._thread.start()

    # ---- called from the dataflow worker -----------------------------------------------

    def add(self, batch: list[TableRows]) -> None:
        """Hand rows over; after each slice, wait while `max_pending_rows` are unwritten."""
        with self._cond:
            for rows in batch:
                self._raise_if_failed()
                n = len(rows)
                if not n:
                    continue
                width = self._row_bytes.setdefault(rows.table, row_bytes(rows))
                provisional = rows.provisional
                self._buffers.setdefault((rows.table, provisional), deque()).append(rows)
                if rows.write_now:
                    self._write_now.add((rows.table, provisional))
                    self.stats.sink_now_in += n
                self._pending += n
                self._durable += 0 if provisional else n
                self._pending_bytes += n * width
                self.stats.sink_rows_in += n
                self._cond.notify_all()
                while self._over_bound and self._error is None:
                    self._cond.wait(1.0)
            self._raise_if_failed()

    @property
    def _unwritten(self) -> int:
        return self._pending + self._in_flight

    @property
    def _over_bound(self) -> bool:
        """`max_pending_rows` or `max_pending_bytes` unwritten (buffered or in flight)."""
        return (
            self._unwritten >= self.max_pending_rows
            or self._pending_bytes + self._in_flight_bytes >= self.max_pending_bytes
        )

    def block_rows_of(self, table: str) -> int:
        """Rows per INSERT block of `table`: `block_rows`, fewer for a wide table so that
        a block stays within `block_bytes`."""
        width = self._row_bytes.get(table, 1)
        return max(1, min(self.block_rows, self.block_bytes // max(width, 1)))

    def hurry(self) -> None:
        """Write what is buffered now, and what comes until nothing is (no table waits
        for its interval): a stage waits on it (:mod:`connectors.sink_demand`)."""
        with self._cond:
            self._hurried = True
            self._cond.notify_all()

    def flush(self) -> None:
        """Block until every durable row handed over so far is written (provisional ones
        go at their interval, or at :meth:`close`)."""
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            while self._durable and self._error is None:
                self._cond.wait(1.0)
            self._flush_requested = False
            self._raise_if_failed()

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        if self._client is not None and not self._thread.is_alive():
            # An embedded (chDB) store is released only when its last client closes: a
            # process may then open another (chDB takes one data directory at a time).
            self._client.close()
            self._client = None

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"ClickHouse writes failed: {self._error}") from self._error

    # ---- the writer thread -------------------------------------------------------------

    def _take(
        self, now: float, only_now: bool = False, taken: Collection[Lane] = ()
    ) -> list[tuple[Lane, list[TableRows]]]:
        """One block (at most `block_rows` rows) of each lane due for writing
        (:meth:`_due`; `only_now`: of the lanes holding rows to write at once, but for
        those with a block `taken` and not yet written: a lane's rows go in order), those
        lanes first, then durable ones; a chunk that crosses the block's end is sliced;
        the taken blocks are counted in flight."""
        due = []
        lanes = sorted(
            self._buffers.items(), key=lambda item: (item[0] not in self._write_now, item[0][1])
        )
        for lane, chunks in lanes:
            if only_now and (lane not in self._write_now or lane in taken):
                continue
            if not self._due(lane, now):
                continue
            self._written_at[lane] = now
            block: list[TableRows] = []
            room = self.block_rows_of(lane[0])
            while chunks and room:
                rows_taken = chunks.popleft()
                if len(rows_taken) > room:
                    chunks.appendleft(rows_taken.slice(room, len(rows_taken)))
                    rows_taken = rows_taken.slice(0, room)
                block.append(rows_taken)
                room -= len(rows_taken)
            if not chunks:
                del self._buffers[lane]
            if lane in self._write_now and not any(c.write_now for c in chunks):
                self._write_now.discard(lane)  # else the rest of them go in the next round
            due.append((lane, block))
            rows = sum(len(c) for c in block)
            self._in_flight += rows
            self._pending -= rows
            self._in_flight_bytes += rows * self._row_bytes[lane[0]]
            self._pending_bytes -= rows * self._row_bytes[lane[0]]
        if not self._pending:
            self._hurried = False  # all it held is taken: the intervals apply again
        return due

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._ready(time.monotonic()):
                    self._cond.wait(self._next_due(time.monotonic()))
                if self._closing and not self._pending:
                    return
                due = self._take(time.monotonic())
                self._cond.notify_all()
            try:
                while due:
                    (table, provisional), block = due[0]
                    written = sum(len(c) for c in block)
                    self._write(table, block)
                    del due[0], block  # written: its rows may go
                    with self._cond:
                        self._durable -= 0 if provisional else written
                        self._in_flight -= written
                        self._in_flight_bytes -= written * self._row_bytes[table]
                        if self._write_now and due:  # arrived meanwhile: before the rest
                            taken = [lane for lane, _ in due]
                            due[:0] = self._take(time.monotonic(), only_now=True, taken=taken)
                        self._cond.notify_all()
            except BaseException as exc:  # not transient
                self._fail(exc)
                return
            finally:
                with self._cond:
                    for (table, _), block in due:  # taken, not written (a failure)
                        rows = sum(len(c) for c in block)
                        self._in_flight -= rows
                        self._in_flight_bytes -= rows * self._row_bytes[table]
                    self._cond.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            self._error = exc
            self._cond.notify_all()
        if self.exit_on_failure:
            exit_write_failed(
                "ClickHouse write failed permanently, stopping: %s: %s", type(exc).__name__, exc
            )
        log.critical(
            "ClickHouse write failed permanently: %s: %s",
            type(exc).__name__,
            exc,
            extra={"event": "sink_failed"},
        )

    def _due(self, lane: Lane, now: float) -> bool:
        """Whether a lane's rows are written now: a block is full, `flush_interval` has
        passed since the lane's last write (each has its own clock, see the module
        docstring), a flush is asked (durable rows only), the sink closes, a stage waits
        on it (:meth:`hurry`), it holds rows to write now (`write_now`), or the worker
        waits on the bound (nothing else would free it sooner)."""
        table, provisional = lane
        return (
            (self._flush_requested and not provisional)
            or self._closing
            or self._hurried
            or lane in self._write_now
            or self._over_bound
            or now - self._written_at.get(lane, -math.inf) >= self.flush_interval
            or sum(len(c) for c in self._buffers.get(lane, ())) >= self.block_rows_of(table)
        )

    def _ready(self, now: float) -> bool:
        return bool(self._pending) and any(self._due(lane, now) for lane in self._buffers)

    def _next_due(self, now: float) -> float:
        """Seconds until the first buffered lane's interval ends (a wait's timeout)."""
        if not self._buffers:
            return self.flush_interval
        first = min(self._written_at.get(lane, -math.inf) for lane in self._buffers)
        return min(self.flush_interval, max(first + self.flush_interval - now, 0.001))

    def _write(self, table: str, block: list[TableRows]) -> None:
        retrying = retrying_while_transient(self.retry_backoff_max, self._log_retry)
        for attempt in retrying:
            with attempt:
                self._insert(table, block)
        if self._failing_since is not None:
            log.warning(
                "ClickHouse writes resumed after %.1f s",
                time.monotonic() - self._failing_since,
                extra={"event": "sink_resumed", "table": table},
            )
            self._failing_since = None

    @timed("sink_inserts", "sink_insert_us")
    def _insert(self, table: str, block: list[TableRows]) -> None:
        """One INSERT of one block (at most `block_rows` rows)."""
        if self._client is None:
            self._client = (self._client_factory or connect_for_inserts)(self.target)
        schema = self._schemas.get(table)
        if schema is None:
            schema = self._schemas[table] = describe(self._client, self.target.database, table)
        joined = joined_columns([c.columns for c in block])
        if joined is not None:
            arrow = to_arrow(joined, schema)
        else:  # Batches carry their own dictionaries; one block needs one.
            tables = [to_arrow(c.columns, schema) for c in block]
            arrow = pa.concat_tables(tables).unify_dictionaries()
        try:
            self._client.insert_arrow(
                f"{self.target.database}.{table}", arrow, settings=INSERT_SETTINGS
            )
        except BaseException:
            if not self.target.embedded:
                self._client = None  # reconnect on the next attempt
            raise
        self.stats.rows_written += arrow.num_rows
        self.stats.now_written += sum(len(c) for c in block if c.write_now)

    def _log_retry(self, state: RetryCallState) -> None:
        self.stats.sink_retries += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "ClickHouse write failed (attempt %d, %s); retrying in %.1f s",
            state.attempt_number,
            exc,
            delay,
            extra={"event": "sink_retry", "attempt": state.attempt_number, "delay_s": delay},
        )


def joined_columns(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The chunks' columns as one set, so a block is converted to Arrow once: the
    conversion's cost is mostly per column and chunk (a live source's many small batches
    made the writer's `to_arrow` its largest part). numpy columns (and both arrays of a
    NullableColumn) are concatenated, lists chained, Arrow arrays chunked, Categoricals
    recoded onto the union of their categories; None when a column mixes kinds (then each
    chunk is converted on its own)."""
    if len(chunks) == 1:
        return chunks[0]
    if any(chunk.keys() != chunks[0].keys() for chunk in chunks):
        return None
    joined: dict[str, Any] = {}
    for name in chunks[0]:
        parts = [chunk[name] for chunk in chunks]
        if all(isinstance(p, np.ndarray) for p in parts):
            joined[name] = np.concatenate(parts)
        elif all(isinstance(p, list) for p in parts):
            joined[name] = list(chain.from_iterable(parts))  # in C: ~45 % faster
        elif all(isinstance(p, Categorical) for p in parts):
            joined[name] = _joined_categorical(parts)
        elif all(isinstance(p, pa.Array) for p in parts):
            joined[name] = pa.chunked_array(parts)
        elif all(isinstance(p, NullableColumn) for p in parts):
            joined[name] = NullableColumn.joined(parts)
        else:
            return None
    return joined


def _joined_categorical(parts: list[Categorical]) -> Categorical:
    first = parts[0].categories
    if all(p.categories is first or p.categories == first for p in parts):
        return Categorical(np.concatenate([np.asarray(p.codes) for p in parts]), first)
    index: dict[str, int] = {}
    codes = []
    for part in parts:
        recode = np.array(
            [index.setdefault(c, len(index)) for c in part.categories], dtype=np.int32
        )
        codes.append(recode[np.asarray(part.codes, dtype=np.int64)])
    return Categorical(np.concatenate(codes), list(index))


def row_bytes(rows: TableRows) -> int:
    """Estimated bytes per row of `rows` as numbers: numpy columns by their item size (a
    matrix by its row), dictionary codes by theirs, a nullable column's with its flag, an
    Arrow array's by its buffers, a list's or object array's value as a pointer and, for
    a string, its characters. Close to the Arrow size of the block, which is what chDB's
    insert memory follows."""
    n = len(rows)
    if not n:
        return 1
    total = 0
    for values in rows.columns.values():
        if isinstance(values, Categorical):
            total += values.codes.itemsize
        elif isinstance(values, NullableColumn):
            total += values.values.itemsize + 1
        elif isinstance(values, pa.Array):
            total += values.nbytes // n
        elif isinstance(values, np.ndarray) and values.dtype != np.object_:
            total += values.itemsize * (values.size // max(len(values), 1))
        else:
            first = values[0] if len(values) else None
            total += 8 + (len(first) if isinstance(first, str | bytes) else 0)
    return max(total, 1)


class ClickHouseSinkPartition(StatefulSinkPartition[TableRows, None]):
    def __init__(self, writer: _Writer) -> None:
        self.writer = writer

    def write_batch(self, values: list[TableRows]) -> None:
        """Hand the rows over one item at a time, letting go of each: the list is the only
        reference to them, so a large batch (every final row `on_eof` returns at once)
        shrinks as it is written instead of staying whole until the last item is taken."""
        values.reverse()
        while values:
            self.writer.add([values.pop()])

    def snapshot(self) -> None:
        self.writer.flush()
        return None

    def close(self) -> None:
        self.writer.close()


class ClickHouseSink(FixedPartitionedSink[TableRows, None]):
    """All rows go through one writer partition (one ClickHouse client per cluster)."""

    def __init__(
        self,
        target: Target,
        *,
        block_rows: int,
        flush_interval_ms: int,
        max_pending_rows: int,
        retry_backoff_max_ms: int,
        stats: FlowStats,
        on_open: Callable[[], None] | None = None,
        demand: SinkDemand | None = None,
    ) -> None:
        """`demand`: how a waiting stage asks this sink's writer to write now."""
        self.target = target
        self.demand = demand
        self.options = {
            "block_rows": block_rows,
            "flush_interval": flush_interval_ms / 1000.0,
            "max_pending_rows": max_pending_rows,
            "retry_backoff_max": retry_backoff_max_ms / 1000.0,
            "stats": stats,
        }
        self.on_open = on_open

    def list_parts(self) -> list[str]:
        return ["clickhouse"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> ClickHouseSinkPartition:
        if self.on_open is not None:
            self.on_open()
        writer = _Writer(self.target, **self.options)  # type: ignore[arg-type]
        if self.demand is not None:
            self.demand.attach(writer.hurry)
        return ClickHouseSinkPartition(writer)
