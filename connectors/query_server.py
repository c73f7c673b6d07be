"""Queries against the store from any process: through this home's service, or directly.

chDB lets one process open a data directory. The process that holds it (a flow, or
`pulse serve`) hosts the HTTP service (:mod:`connectors.service`) and records where in
``$PULSE_HOME/service.json`` (:mod:`connectors.service.discovery`). :func:`run_query`
asks that service (``POST /v1/query``, read-only) with the key from ``PULSE_API_KEY`` or
the file (its local key, tenant ``default``; its operator key when the caller asks for
other tenants or needs ``admin``); when no service runs it opens the store itself,
holding it as a run does (:func:`owned`, ``<olap dir>.lock``). A server DSN needs no
service: it is queried directly.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
from clickhouse_connect.driver.exceptions import Error as DriverError

from connectors.clickhouse import ClickHouseError, Target, connect
from connectors.locks import held_exclusively
from connectors.service import discovery
from operators.errors import PulseError

API_KEY_ENV = "PULSE_API_KEY"


class QueryError(PulseError):
    """The query failed; the message is ClickHouse's, first line."""


class ServiceRefused(PulseError):
    """The service refused the request (no key, unknown key, missing scope)."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]


def _json_default(value: Any) -> Any:
    """How values that JSON lacks are sent: times as ISO 8601, bytes as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _execute(client: Any, sql: str, parameters: dict[str, Any] | None) -> QueryResult:
    try:
        result = client.query(sql, parameters=parameters or {})
    except DriverError as exc:
        raise QueryError(str(exc).splitlines()[0]) from exc
    return QueryResult(list(result.column_names), [list(row) for row in result.result_rows])


def owned(target: Target, querying: bool = False) -> AbstractContextManager[None]:
    """Hold an embedded store for this process, before chDB opens it (chDB lets one process
    open a directory, and its own refusal names no one): a second run is told which pid
    holds it. `pulse query` asks the holder's service; it takes the lock only to open the
    directory itself, when no service runs."""
    path = target.chdb_path
    if path is None:
        return nullcontext()

    def busy(holder: str) -> ClickHouseError:
        if querying:
            return ClickHouseError(
                f"the ClickHouse store {path} is held by pid {holder}, which does not serve "
                "queries (yet: a run serves them once it has started, unless "
                "service.enabled is false); try again in a moment"
            )
        return ClickHouseError(
            f"the ClickHouse store {path} is in use by another process (pid {holder}, a run "
            "or a command opening it); stop that run first, or give this one its own "
            "PULSE_HOME (`pulse query` works meanwhile: it asks the running process)"
        )

    return held_exclusively(path.with_name(path.name + ".lock"), busy)


class ServiceClient:
    """The home's running service over HTTP, with an API key."""

    def __init__(self, url: str, key: str | None, timeout_s: float = 120.0) -> None:
        self.url = url
        self.key = key
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """The JSON answer of a 2xx; a refusal or an error as a PulseError with the detail.
        A service that does not answer raises `httpx.TransportError`."""
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        response = httpx.request(
            method,
            self.url + path,
            json=body,
            params={k: v for k, v in params.items() if v is not None},
            headers=headers,
            timeout=self.timeout_s,
        )
        if response.is_success:
            return response.json()
        detail = _detail(response)
        if response.status_code in (401, 403):
            raise ServiceRefused(
                f"the service at {self.url} refused the request: {detail} (set {API_KEY_ENV} "
                "to a key of service.api_keys with the scope it needs)"
            )
        raise QueryError(detail)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        body = self.request("POST", "/v1/query", {"sql": sql, "parameters": parameters or {}})
        return QueryResult(list(body["columns"]), [list(row) for row in body["rows"]])


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text or f"HTTP {response.status_code}"
    if isinstance(detail, list):  # FastAPI's validation errors
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail
        )
    return str(detail)


def home_of(target: Target, home: Path | None = None) -> Path | None:
    """Where an embedded store's service.json is: the given home, else the store's
    directory's parent (``<home>/olap``)."""
    if home is not None:
        return home
    path = target.chdb_path
    return None if path is None else path.parent


def service_client(
    target: Target, home: Path | None = None, operator: bool = False
) -> ServiceClient | None:
    """The service that holds this embedded store, if one runs (never for a server DSN,
    nor in the process that hosts it). Its key: ``PULSE_API_KEY`` if set, else the file's
    local key, or its operator key when `operator` (every tenant, every scope)."""
    where = home_of(target, home)
    if target.chdb_path is None or where is None:
        return None
    found = discovery.read(where)
    if found is None or found.pid == os.getpid():
        return None
    key = found.operator_key if operator else found.key
    return ServiceClient(found.url, os.environ.get(API_KEY_ENV) or key)


def run_query(
    target: Target,
    sql: str,
    parameters: dict[str, Any] | None = None,
    home: Path | None = None,
    operator: bool = False,
) -> QueryResult:
    """Run SQL: through the service that holds the embedded store (with its operator key
    when `operator`), else directly."""
    client = service_client(target, home, operator)
    if client is not None:
        try:
            return client.query(sql, parameters)
        except httpx.TransportError:
            pass  # it is stopping: open the store below once it is free
    with owned(target, querying=True):
        connection = connect(target)
        try:
            return _execute(connection, sql, parameters)
        finally:
            connection.close()
