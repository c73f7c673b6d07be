"""ClickHouse through clickhouse-connect: the same client and SQL for an in-process chDB
engine (``chdb:///abs/path``) and a server (``http(s)://user:password@host:port``).

This module holds ClickHouse's quirks: numbered migrations, the table schemas read back
with ``DESCRIBE`` (the SQL in ``migrations/`` is the only definition of a table), the
conversion of column-oriented rows to Arrow by column type for ``insert_arrow`` (about
5x faster than row lists through chDB here), :func:`connect_for_inserts`: on the
embedded engine the same ``insert_arrow`` call hands the Arrow stream over in memory, and
:func:`engine_kept`: chDB restarts an engine whose last connection closed.

chDB allows one process per data directory and one engine path per process; the
process that owns it serves queries for others through its HTTP service
(:mod:`connectors.service`; the client side is :mod:`connectors.query_server`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import clickhouse_connect
import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from clickhouse_connect.driver.summary import QuerySummary
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_never, wait_exponential

from connectors.redact import mask_dsn
from operators.arrow import string_maps
from operators.batches import Categorical, NullableColumn
from operators.errors import PulseError

if TYPE_CHECKING:
    from config.settings import Settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class ClickHouseError(PulseError):
    """ClickHouse cannot be reached or used as configured; the message names the target."""


# ClickHouse error codes worth retrying: timeouts, overload, too many parts, memory,
# network and replica trouble.
RETRYABLE_CODES = {159, 164, 202, 203, 209, 210, 241, 242, 252, 285, 319, 425, 999}


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the server is unreachable, overloaded or timing out."""
    if isinstance(exc, OperationalError | ConnectionError | TimeoutError | OSError):
        return True
    if isinstance(exc, DatabaseError):
        code = getattr(exc, "code", None)
        if code in RETRYABLE_CODES:
            return True
        text = str(exc)
        return any(f"Code: {c}." in text for c in RETRYABLE_CODES)
    return False


def retrying_while_transient(
    backoff_max_s: float, before_sleep: Callable[[RetryCallState], None]
) -> Retrying:
    """Retry transient failures forever with exponential backoff (0.1 s doubling up to
    `backoff_max_s`): the flow waits for the store rather than drop or reorder rows."""
    return Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential(multiplier=0.1, max=backoff_max_s),
        stop=stop_never,
        before_sleep=before_sleep,
        reraise=True,
    )


@dataclass(frozen=True)
class Target:
    """Where the OLAP store is: a DSN and the database Feedback Pulse owns in it."""

    dsn: str = field(repr=False)  # may hold a password: show it with redact.mask_dsn
    database: str

    @classmethod
    def of(cls, settings: Settings) -> Target:
        """The configured store (the embedded one under <home>/olap without a DSN)."""
        return cls(settings.clickhouse_dsn, settings.clickhouse.database)

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    @property
    def chdb_path(self) -> Path | None:
        if not self.embedded:
            return None
        path = self.dsn[len("chdb://") :]
        return Path(path) if path.startswith("/") else None


def connect(target: Target) -> Client:
    """A client for `target` (creating an embedded engine's directory if needed)."""
    path = target.chdb_path
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
    elif target.embedded:
        raise ClickHouseError(
            f"an embedded DSN needs an absolute path: chdb:///abs/path, got {mask_dsn(target.dsn)}"
        )
    parsed = urlparse(target.dsn)
    try:
        if target.embedded:
            return clickhouse_connect.get_client(dsn=target.dsn)
        return clickhouse_connect.get_client(
            dsn=target.dsn, connect_timeout=5, send_receive_timeout=60, query_retries=0
        )
    except Exception as exc:  # the driver raises several types; name the target
        host = parsed.hostname or target.dsn
        raise ClickHouseError(f"cannot connect to ClickHouse at {host}: {exc}") from exc


@contextmanager
def engine_kept(target: Target) -> Iterator[None]:
    """Keep an embedded store's engine up for the block (nothing for a server). chDB stops
    its engine when the last connection to it closes and starts it again, loading every
    table, for the next one: a run's migrations close their client before the sink opens
    its own, and that restart cost ~0.15 s of CPU and ~0.2 s of wall time of every start
    (~0.02 s with the engine kept). Hold the store (`query_server.owned`) around it: the
    engine must be closed before the lock is released."""
    if not target.embedded:
        yield
        return
    client = connect(target)  # the first connection: a bad DSN or directory fails here
    try:
        yield
    finally:
        client.close()


class EmbeddedArrowInserts:
    """An embedded store's client for the sink: clickhouse-connect's client for everything
    but ``insert_arrow``, which goes through chDB's own connection to the same engine as
    an Arrow IPC stream held in memory (chDB's streaming insert). clickhouse-connect's chDB
    insert writes the same stream to a temp file and reads it back with ``INSERT ... FROM
    INFILE``: replaying a 300k-event run's blocks, 2.6 against 3.1-3.5 s of CPU, and the
    calling thread holds the GIL less (docs/performance.md, "The sink's share ...")."""

    def __init__(self, target: Target) -> None:
        import chdb  # the embedded engine's own package, only where it is used

        path = target.chdb_path
        if path is None:
            raise ClickHouseError(f"not an embedded store: {mask_dsn(target.dsn)}")
        self.client = connect(target)
        # chDB compares engine paths literally: the spelling clickhouse-connect opened.
        self._engine = chdb.connect(os.path.realpath(path))

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self.client.query(sql, parameters=parameters)

    def command(self, sql: str) -> Any:
        return self.client.command(sql)

    def insert_arrow(
        self, table: str, arrow: pa.Table, settings: dict[str, int] | None = None
    ) -> QuerySummary:
        """One INSERT of `arrow` into `table` (database-qualified), its columns by name."""
        columns = ", ".join(f"`{name}`" for name in arrow.column_names)
        clause = ", ".join(f"{key} = {int(value)}" for key, value in (settings or {}).items())
        stream = pa.BufferOutputStream()
        with pa.ipc.new_stream(stream, arrow.schema) as writer:
            writer.write_table(arrow)
        sql = f"INSERT INTO {table} ({columns})" + (f" SETTINGS {clause}" if clause else "")
        try:
            with self._engine.send_insert(sql, "ArrowStream") as inserter:
                inserter.append(stream.getvalue().to_pybytes())
                written = inserter.finish().rows_written
        except Exception as exc:  # chDB raises its own types: classify like the driver's
            raise DatabaseError(str(exc)) from exc
        return QuerySummary({"written_rows": str(written)})

    def close(self) -> None:
        self._engine.close()
        self.client.close()


def connect_for_inserts(target: Target) -> Client | EmbeddedArrowInserts:
    """The sink's client: the server's clickhouse-connect client, whose ``insert_arrow``
    sends Arrow over HTTP, or :class:`EmbeddedArrowInserts` for an embedded store."""
    return EmbeddedArrowInserts(target) if target.embedded else connect(target)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration file, in order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.iterdir()):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path.stem, path.read_text()))
    return found


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.MULTILINE) if s.strip()]


def migrate(client: Client, database: str) -> list[str]:
    """Create the database and apply pending migrations (idempotent); returns those applied."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {
        row[0]
        for row in client.query(f"SELECT version FROM {database}.schema_migrations").result_rows
    }
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        for statement in _statements(sql.replace("{db}", database)):
            client.command(statement)
        # A plain INSERT statement: `client.insert` would import pandas (~0.4 s of every
        # fresh run's start) to look at one row. `name` is a file name _MIGRATION_FILE
        # admitted: [a-z0-9_] only, nothing to quote.
        client.command(
            f"INSERT INTO {database}.schema_migrations (version, name) "
            f"VALUES ({int(version)}, '{name}')"
        )
        applied.append(name)
    return applied


def prepare(target: Target, grouping_sets: Sequence[tuple[str, ...]]) -> None:
    """A store ready for a flow: the migrations, then the views that follow the settings
    (`session_metrics` over the configured grouping sets), on a client of its own."""
    client = connect(target)
    try:
        migrate(client, target.database)
        client.command(session_view_sql(target.database, list(grouping_sets)))
    finally:
        client.close()


SESSION_ROLLUP_DIMS = ("model_version", "segment", "endpoint")


def session_view_sql(database: str, grouping_sets: list[tuple[str, ...]]) -> str:
    """`session_metrics`: sessions aggregated by dims and rollups, per hour of closing."""
    configured = {d for g in grouping_sets for d in g}
    base = "window, hour, tenant, model_id, deployment, extra_dims"
    # Group by renamed columns: an output alias equal to a grouped column would shadow it.
    sets = ", ".join(f"({', '.join([base, *(f'{d}_' for d in g)])})" for g in grouping_sets)
    dims = ", ".join(
        f"if(grouping({d}_) = 1, '*', {d}_) AS {d}" if d in configured else f"'*' AS {d}"
        for d in SESSION_ROLLUP_DIMS
    )
    renamed = ", ".join(f"{d} AS {d}_" for d in SESSION_ROLLUP_DIMS)
    return (
        f"CREATE OR REPLACE VIEW {database}.session_metrics AS SELECT {base}, {dims}, "
        "count() AS sessions, avg(session_events) AS session_events_mean, "
        "avg(session_duration_s) AS session_duration_s_mean, "
        "avgIf(rating_mean, ratings > 0) AS session_rating_mean, "
        "avgIf(thumbs_up_rate, thumbs > 0) AS session_thumbs_up_rate, "
        "countIf(late = 1) AS late_sessions "
        f"FROM (SELECT *, {renamed}, toStartOfHour(closes_at) AS hour "
        f"FROM {database}.sessions FINAL) "
        f"GROUP BY GROUPING SETS ({sets})"
    )


def describe(client: Client, database: str, table: str) -> list[tuple[str, str]]:
    """(column, ClickHouse type) of a table, skipping columns with a DEFAULT."""
    rows = client.query(f"DESCRIBE TABLE {database}.{table}").result_rows
    return [(row[0], row[1]) for row in rows if not row[2]]


# ---- Arrow conversion -------------------------------------------------------------------

_TIMESTAMP = pa.timestamp("ms", tz="UTC")
_INTEGER = {
    "UInt8": pa.uint8(),
    "UInt16": pa.uint16(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
    "Int8": pa.int8(),
    "Int16": pa.int16(),
    "Int32": pa.int32(),
    "Int64": pa.int64(),
}


def _unwrap(ch_type: str) -> tuple[str, bool]:
    nullable = False
    while True:
        match = re.fullmatch(r"(LowCardinality|Nullable)\((.*)\)", ch_type)
        if not match:
            return ch_type, nullable
        nullable = nullable or match.group(1) == "Nullable"
        ch_type = match.group(2)


def to_arrow_column(values: Any, ch_type: str) -> pa.Array:
    """Python list, numpy array, Categorical or NullableColumn -> Arrow array ClickHouse
    reads as `ch_type`; an Arrow array (built with the rows: :mod:`operators.arrow`) as it
    is. Arrays go without a Python object per value: a float array's NaN is null, a
    NullableColumn's `valid` is the Arrow validity, a string column may be an object array
    (None is null)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    if isinstance(values, Categorical):
        return pa.DictionaryArray.from_arrays(
            pa.array(values.codes, pa.int32()), pa.array(values.categories, pa.string())
        )
    base, nullable = _unwrap(ch_type)
    mask = None
    if isinstance(values, NullableColumn):
        if not (base.startswith("DateTime64") or base in _INTEGER):  # its mask would be lost
            raise ClickHouseError(f"a NullableColumn is for integer and time columns: {ch_type}")
        values, mask = values.values, ~values.valid
    if base.startswith("DateTime64"):
        if isinstance(values, np.ndarray):
            return pa.array(values.astype(np.int64, copy=False), _TIMESTAMP, mask=mask)
        return pa.array(values, pa.int64()).cast(_TIMESTAMP)
    if base in _INTEGER:
        if isinstance(values, np.ndarray):
            dtype = _INTEGER[base].to_pandas_dtype()
            return pa.array(values.astype(dtype, copy=False), _INTEGER[base], mask=mask)
        return pa.array(values, _INTEGER[base])
    if base in ("Float64", "Float32"):
        if isinstance(values, np.ndarray):
            return pa.array(values.astype(np.float64, copy=False), from_pandas=nullable)
        return pa.array(values, pa.float64())
    if base == "String":
        if isinstance(values, np.ndarray):
            return pa.array(values, pa.string())
        if values and isinstance(next((v for v in values if v is not None), None), bytes):
            return pa.array(values, pa.binary())
        return pa.array(values, pa.string())
    if base == "Map(String, String)":
        return string_maps(values)
    match = re.fullmatch(r"Array\((U?Int\d+)\)", base)
    if match:
        item = _INTEGER[match.group(1)]
        matrix = np.asarray(values)
        if matrix.ndim == 2:
            offsets = np.arange(0, matrix.size + 1, max(matrix.shape[1], 1), dtype=np.int32)
            flat = pa.array(matrix.ravel().astype(item.to_pandas_dtype()))
            return pa.ListArray.from_arrays(pa.array(offsets), flat)
        return pa.array(values, pa.list_(item))
    raise ClickHouseError(f"no Arrow conversion for ClickHouse type {ch_type}")


def to_arrow(columns: dict[str, Any], schema: list[tuple[str, str]]) -> pa.Table:
    """A table in the column order of `schema`; every schema column must be present."""
    missing = [name for name, _ in schema if name not in columns]
    if missing:
        raise ClickHouseError(f"rows lack columns {missing}")
    arrays = [to_arrow_column(columns[name], ch_type) for name, ch_type in schema]
    return pa.Table.from_arrays(arrays, names=[name for name, _ in schema])
