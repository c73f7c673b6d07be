"""Read-only SQL for ``POST /v1/query``: ClickHouse enforces it, ClickHouse's parser vets it.

Every statement a caller's SQL reaches ClickHouse in (the checks below and the query
itself) runs with, in this order, ``max_result_rows`` (``service.query_max_rows``) with
``result_overflow_mode='throw'``, ``max_execution_time`` (``service.query_timeout``), for a
tenant-bound key ``additional_table_filters`` (``tenant = T`` on every table and view of
the database with a ``tenant`` column, from ``system.columns``; ``0``, no rows, on every
other table the engine has, ``system.*`` included, but ``system.one``), and ``readonly=1``
last.
Findings with chDB 26.9 through clickhouse-connect 1.12 (per-query settings ride as a
trailing ``SETTINGS`` clause; tests/service/test_sql_readonly.py pins each one):

* ``readonly=1`` refuses DROP, INSERT, CREATE, ALTER, SET and the table functions that
  reach out (``file``, ``url``, ``remote``, ``s3``, ...): "Cannot execute query in readonly
  mode". It must come last: a setting after it in the same clause is refused too.
* ``readonly=1`` refuses any setting in the caller's own ``SETTINGS`` clause ("Cannot
  modify 'additional_table_filters' setting in readonly mode"), so the tenant filter and
  the limits cannot be lifted. ``readonly=2`` would allow it: never used.
* Not enough alone: chDB runs several statements in one call (``CREATE ...; SELECT 1``)
  and the clause binds to the last one only; the scalar ``file('/etc/hostname')`` reads
  any file under readonly; ``SELECT ... INTO OUTFILE`` writes one; and ``merge('db',
  '.*')`` reads tables past ``additional_table_filters``. Hence the checks, each done by
  ClickHouse's own parser before the query runs:

  1. ``formatQuerySingleLine(sql)`` (the SQL as a string parameter, so nothing runs): one
     statement, else ClickHouse's syntax error. The same SQL wrapped as a subquery,
     ``SELECT * FROM (sql)``, must format to the wrapper around that: so it is one SELECT
     (WITH, UNION, ...), with no INTO OUTFILE, FORMAT, EXPLAIN, SHOW or other statement.
  2. ``EXPLAIN AST`` (parsing only, nothing evaluated): every function it names must not
     be a table function outside :data:`TABLE_FUNCTIONS` (``numbers``, ``values``, ...:
     they only generate rows) nor a scalar one that reads outside the tables
     (:data:`DENIED_FUNCTIONS`: ``file``, ``dictGet*``, ``joinGet*``, ...).
  3. For a tenant-bound key, ``EXPLAIN QUERY TREE`` (names resolved: CTEs, aliases, the
     default database): every table read must be one with a ``tenant`` column, so
     ``dead_letters``, ``deliveries``, ``silences`` and ``system.*`` (but ``system.one``,
     what a SELECT without FROM reads) are refused by name: what they hold is not any
     one tenant's. An all-tenants key (``"*"``) may read them. This step only names the
     table; the boundary is the ``0`` filter above, because the analysis behind EXPLAIN
     QUERY TREE already runs scalar subqueries: without it, ``WHERE (SELECT
     throwIf(count() > 0, 'x') FROM pulse.dead_letters) = 0`` answered through its error
     whether a table it may not read has rows (a test pins that it no longer does).

A server DSN gets the same settings and checks; its HTTP interface refuses INTO OUTFILE
and several statements by itself.

The checks cost three or four statements before the query itself, and a dashboard or a
poller sends the same SQL again and again. The SQL that passed is remembered
(:class:`VettedSql`) by what ClickHouse is sent for it: the bound text, the server-side
parameters, and the tenant filter, which names every table the engine has, so a table
created or recreated since is a new key and checked again. A refusal is never remembered.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from clickhouse_connect.driver.binding import _query_is_insert, bind_query

from connectors.query_server import QueryError, QueryResult
from connectors.service.auth import Principal
from connectors.service.store import Store

# Table functions that only generate rows from their arguments.
TABLE_FUNCTIONS = frozenset(
    {
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "values",
        "generaterandom",
        "generate_series",
        "generateseries",
        "primes",
        "null",
        "format",
    }
)
# Scalar functions that read outside the query's tables (lower case; a trailing "*" is a
# prefix): files, dictionaries (their sources can be files, URLs or other servers), Join
# tables and other tables' metadata by name.
DENIED_FUNCTIONS = ("file", "dict*", "joinget*", "hascolumnintable")

_AST_FUNCTION = re.compile(r"^\s*Function (\S+)")
_TREE_TABLE = re.compile(r"^\s*TABLE id: \d+.*?, table_name: ([^,\s]+)")


class SqlRefused(QueryError):
    """The SQL is not a read this service runs; the message says what and why."""


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Tables a tenant-bound key reads unfiltered: a SELECT without FROM reads system.one.
HARMLESS_TABLES = frozenset({"system.one"})


def tenant_filters(tables: Iterable[str], tenant: str, others: Iterable[str] = ()) -> str:
    """The ``additional_table_filters`` map: ``tenant = T`` on each `db.table` of
    `tables`, and ``0`` (no rows) on each of `others`."""
    condition = _sql_string(f"tenant = {_sql_string(tenant)}")
    entries = [f"{_sql_string(t)}: {condition}" for t in sorted(tables)]
    entries += [f"{_sql_string(t)}: '0'" for t in sorted(others)]
    return "{" + ", ".join(entries) + "}"


def _denied(name: str) -> bool:
    lower = name.lower()
    return any(
        lower.startswith(d[:-1]) if d.endswith("*") else lower == d for d in DENIED_FUNCTIONS
    )


VETTED_MAX = 1024  # distinct SQL remembered as passed (least recently used goes first)
VETTED_MAX_CHARS = 4 << 20  # and what they hold at most: a caller's SQL may be 1M characters

VettedKey = tuple[str | bytes, tuple[tuple[str, str], ...], str | None]


class VettedSql:
    """SQL that passed the checks, by what ClickHouse is sent for it; bounded in entries
    and in characters held, and safe to share between the service's request threads."""

    def __init__(self, max_entries: int = VETTED_MAX, max_chars: int = VETTED_MAX_CHARS) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.chars = 0
        self._keys: OrderedDict[VettedKey, int] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(sql: str, parameters: dict[str, Any], filters: str | None) -> VettedKey:
        text, server_side = bind_query(sql, parameters)
        return text, tuple(sorted(server_side.items())), filters

    @staticmethod
    def size(key: VettedKey) -> int:
        text, server_side, filters = key
        return len(text) + sum(len(n) + len(v) for n, v in server_side) + len(filters or "")

    def __contains__(self, key: VettedKey) -> bool:
        with self._lock:
            if key not in self._keys:
                return False
            self._keys.move_to_end(key)
            return True

    def add(self, key: VettedKey) -> None:
        """Remember `key`, unless it alone is over `max_chars`."""
        size = self.size(key)
        if size > self.max_chars:
            return
        with self._lock:
            self.chars += size - self._keys.get(key, 0)
            self._keys[key] = size
            self._keys.move_to_end(key)
            while len(self._keys) > self.max_entries or self.chars > self.max_chars:
                self.chars -= self._keys.popitem(last=False)[1]

    def __len__(self) -> int:
        return len(self._keys)


class ReadOnlyGuard:
    """Runs a caller's SQL read-only, within limits, and filtered to the caller's tenant.

    Give it a store of its own (its own ClickHouse client): a query may run for
    ``service.query_timeout``, and the service's shared client (readiness, silences) must
    not wait behind it. :meth:`close` closes that store.
    """

    def __init__(self, store: Store, database: str, max_rows: int, timeout_ms: int) -> None:
        self.store = store
        self.database = database
        self.max_rows = max_rows
        self.timeout_s = max(1, math.ceil(timeout_ms / 1000))
        self._table_functions: frozenset[str] | None = None
        self.vetted = VettedSql()

    def close(self) -> None:
        self.store.close()

    def other_tables(self, tenant_tables: Iterable[str]) -> list[str]:
        """Every other table and view the engine has (every database), as `db.table`."""
        result = self.store.query(
            "SELECT database || '.' || name FROM system.tables", None, self.settings(None, False)
        )
        skip = {*tenant_tables, *HARMLESS_TABLES}
        return sorted(str(r[0]) for r in result.rows if str(r[0]) not in skip)

    def tenant_tables(self) -> list[str]:
        """Every table and view of the database with a ``tenant`` column, as `db.table`."""
        result = self.store.query(
            "SELECT DISTINCT database || '.' || table FROM system.columns "
            "WHERE database = {db:String} AND name = 'tenant'",
            {"db": self.database},
            self.settings(None, max_rows=False),
        )
        return sorted(str(row[0]) for row in result.rows)

    def settings(self, filters: str | None, max_rows: bool = True) -> dict[str, Any]:
        """The per-statement settings, ``readonly`` last (a setting after it is refused).
        The checks' own statements (an EXPLAIN dump is a row per line) go without
        `max_rows`."""
        settings: dict[str, Any] = {"max_execution_time": self.timeout_s}
        if max_rows:
            settings["max_result_rows"] = self.max_rows
            settings["result_overflow_mode"] = "throw"
        if filters is not None:
            settings["additional_table_filters"] = filters
        settings["readonly"] = 1
        return settings

    def run(self, sql: str, parameters: dict[str, Any], principal: Principal) -> QueryResult:
        tables = None if principal.all_tenants else self.tenant_tables()
        filters = None
        if tables is not None:
            filters = tenant_filters(tables, principal.tenant, self.other_tables(tables))
        sql = sql.strip().rstrip(";").rstrip()
        vetted = self.vetted.key(sql, parameters, filters)
        if vetted not in self.vetted:
            checks = self.settings(filters, max_rows=False)
            self._one_select(sql, parameters, checks)
            self._functions(sql, parameters, checks)
            if tables is not None:
                allowed = {*tables, *HARMLESS_TABLES}
                self._tenant_tables(sql, parameters, checks, allowed, principal.tenant)
            self.vetted.add(vetted)
        return self.store.query(sql, parameters, self.settings(filters))

    def _format(self, text: str, settings: dict[str, Any]) -> str:
        result = self.store.query(
            "SELECT formatQuerySingleLine({sql:String})", {"sql": text}, settings
        )
        return str(result.rows[0][0])

    def _one_select(self, sql: str, parameters: dict[str, Any], settings: dict[str, Any]) -> None:
        bound = bind_query(sql, parameters)[0]
        text = bound.decode(errors="replace") if isinstance(bound, bytes) else bound
        alone = self._format(text, settings)  # one statement, else ClickHouse's error
        try:
            wrapped = self._format(f"SELECT * FROM (\n{text}\n)", settings)
        except QueryError:
            wrapped = None
        # clickhouse-connect sends what it takes for an INSERT with SET ... and restores the
        # settings after, which fails once readonly=1 is set: the client would keep the
        # filters of this call for the next. None passes the check above; refuse anyway.
        if wrapped != f"SELECT * FROM ({alone})" or _query_is_insert(text):
            raise SqlRefused(
                "only one SELECT query is accepted (WITH and UNION included; no other "
                "statement, no INTO OUTFILE, FORMAT or EXPLAIN)"
            )

    def table_functions(self) -> frozenset[str]:
        if self._table_functions is None:
            rows = self.store.query(
                "SELECT name FROM system.table_functions", None, self.settings(None, False)
            ).rows
            self._table_functions = frozenset(str(r[0]).lower() for r in rows)
        return self._table_functions

    def _functions(self, sql: str, parameters: dict[str, Any], settings: dict[str, Any]) -> None:
        dump = self.store.query(f"EXPLAIN AST {sql}", parameters, settings).rows
        table_functions = self.table_functions() - TABLE_FUNCTIONS
        for (line,) in dump:
            match = _AST_FUNCTION.match(str(line))
            if match is None:
                continue
            name = match.group(1)
            if name.lower() in table_functions:
                raise SqlRefused(
                    f"table function {name}() is not allowed: read the database's tables "
                    f"(allowed table functions: {', '.join(sorted(TABLE_FUNCTIONS))})"
                )
            if _denied(name):
                raise SqlRefused(
                    f"function {name}() is not allowed: it reads outside the database's tables"
                )

    def _tenant_tables(
        self,
        sql: str,
        parameters: dict[str, Any],
        settings: dict[str, Any],
        allowed: set[str],
        tenant: str,
    ) -> None:
        dump = self.store.query(f"EXPLAIN QUERY TREE {sql}", parameters, settings).rows
        for (line,) in dump:
            match = _TREE_TABLE.match(str(line))
            if match is not None and match.group(1) not in allowed:
                raise SqlRefused(
                    f"table {match.group(1)} has no tenant column: a key bound to tenant "
                    f"{tenant!r} reads only tables with one ({', '.join(sorted(allowed))})"
                )
