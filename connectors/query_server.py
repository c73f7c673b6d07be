"""Queries against an embedded (chDB) store, from any process.

chDB lets one process open a data directory. The process that owns it (the running
flow) starts a :class:`QueryServer` on 127.0.0.1 and records its port next to the
directory (``<olap dir>.endpoint.json``); :func:`run_query` asks that process when it is
alive, and opens the directory itself when it is not. A server DSN needs neither. A run
holds the directory exclusively (:func:`owned`, ``<olap dir>.lock``) from before it opens it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from clickhouse_connect.driver.exceptions import Error as DriverError

from connectors.clickhouse import ClickHouseError, Target, connect
from connectors.locks import held_exclusively
from operators.errors import PulseError

log = logging.getLogger("pulse.query")


class QueryError(PulseError):
    """The query failed; the message is ClickHouse's, first line."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]


def endpoint_file(target: Target) -> Path | None:
    path = target.chdb_path
    return None if path is None else path.with_name(path.name + ".endpoint.json")


def _json_default(value: Any) -> Any:
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
    holds it. `pulse query` asks the holder; it takes the lock only to open the directory
    itself, when no process serves it."""
    path = target.chdb_path
    if path is None:
        return nullcontext()

    def busy(holder: str) -> ClickHouseError:
        if querying:
            return ClickHouseError(
                f"the ClickHouse store {path} is held by pid {holder}, which does not serve "
                "queries (yet: a run serves them once it has started); try again in a moment"
            )
        return ClickHouseError(
            f"the ClickHouse store {path} is in use by another process (pid {holder}, a run "
            "or a command opening it); stop that run first, or give this one its own "
            "PULSE_HOME (`pulse query` works meanwhile: it asks the running process)"
        )

    return held_exclusively(path.with_name(path.name + ".lock"), busy)


class QueryServer:
    """Answers POST /query {"sql", "parameters"} with {"columns", "rows"}."""

    _instance: QueryServer | None = None
    _lock = threading.Lock()

    def __init__(self, target: Target) -> None:
        self.target = target
        self.client = connect(target)
        self._client_lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug(fmt, *args)

            def do_GET(self) -> None:
                self._reply(200, {"status": "ok", "pid": os.getpid()})

            def do_POST(self) -> None:
                if self.path != "/query":
                    self._reply(404, {"error": "not found"})
                    return
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                    body = json.loads(self.rfile.read(length) or b"{}")
                    with server._client_lock:
                        result = _execute(server.client, body["sql"], body.get("parameters"))
                    self._reply(200, {"columns": result.columns, "rows": result.rows})
                except Exception as exc:  # the caller gets the error text
                    self._reply(400, {"error": str(exc)})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload, default=_json_default).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="query-server", daemon=True
        )

    @classmethod
    def ensure_running(cls, target: Target) -> QueryServer | None:
        """Start this process's server for an embedded target (once per process)."""
        path = endpoint_file(target)
        if path is None:
            return None
        with cls._lock:
            if cls._instance is None:
                server = cls(target)
                server.thread.start()
                path.write_text(
                    json.dumps({"pid": os.getpid(), "port": server.httpd.server_address[1]})
                )
                atexit.register(server.stop)
                cls._instance = server
            return cls._instance

    def stop(self) -> None:
        path = endpoint_file(self.target)
        try:
            if path is not None and path.exists():
                info = json.loads(path.read_text())
                if info.get("pid") == os.getpid():
                    path.unlink()
        except (OSError, ValueError):
            pass
        self.httpd.shutdown()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_query(target: Target, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
    """Run SQL: through the owning process if one serves the embedded store, else directly."""
    path = endpoint_file(target)
    if path is not None and path.exists():
        try:
            info = json.loads(path.read_text())
        except ValueError:
            info = {}
        server = QueryServer._instance
        if info.get("pid") == os.getpid() and server is not None:
            # The owner itself (e.g. the rules stage polling silences): the server's client,
            # under its lock, as the request threads use it.
            with server._client_lock:
                return _execute(server.client, sql, parameters)
        if info.get("pid") and _alive(int(info["pid"])):
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{info['port']}/query",
                    json={"sql": sql, "parameters": parameters or {}},
                    timeout=120,
                )
            except httpx.TransportError:
                response = None
            if response is not None:
                body = response.json()
                if response.status_code != 200:
                    raise QueryError(body.get("error", response.text))
                return QueryResult(body["columns"], body["rows"])
    with owned(target, querying=True):
        client = connect(target)
        try:
            return _execute(client, sql, parameters)
        finally:
            client.close()
