"""The service's ClickHouse client: one connection, used under a lock (chDB's client is
not safe across threads; a server client is, and the lock costs little at API rates).

A store that cannot be reached raises :class:`~connectors.clickhouse.ClickHouseError`
(the app answers 503 with Retry-After); a statement ClickHouse refuses raises
:class:`QueryError` (400)."""

from __future__ import annotations

import threading
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as DriverError
from clickhouse_connect.driver.exceptions import OperationalError

from connectors.clickhouse import ClickHouseError, Target, connect
from connectors.query_server import QueryError, QueryResult


class Store:
    def __init__(self, target: Target) -> None:
        self.target = target
        self._client: Client | None = None
        self._lock = threading.Lock()

    def query(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> QueryResult:
        """Rows of one statement; ClickHouse's error (first line) as :class:`QueryError`."""
        with self._lock:
            if self._client is None:
                self._client = connect(self.target)
            try:
                result = self._client.query(
                    sql, parameters=parameters or {}, settings=settings or {}
                )
            except DriverError as exc:
                first_line = str(exc).splitlines()[0]
                if isinstance(exc, OperationalError):  # not reached (a timeout is a 400)
                    raise ClickHouseError(f"ClickHouse is unavailable: {first_line}") from exc
                raise QueryError(first_line) from exc
        return QueryResult(list(result.column_names), [list(row) for row in result.result_rows])

    def reachable(self) -> bool:
        try:
            self.query("SELECT 1")
        except Exception:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
