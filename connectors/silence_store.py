"""Silences added at run time (`pulse silence`), kept in the ClickHouse table `silences`.

Why ClickHouse: it is the one store every process of a deployment already shares (a
`pulse silence` run next to a flow on Kubernetes reaches the same server). With the
embedded engine, while a process (a flow, `pulse serve`) holds the chDB directory, another
process changes silences through that process's service (``/v1/silences``, the `admin`
scope to write: :class:`ServiceSilences`); otherwise the command opens the directory itself
(:func:`silences_for` picks). The table is a ``ReplacingMergeTree`` keyed by id: every
change (add, expire) is a new row with a higher `version`, read back with ``FINAL``.

The expiry is absolute (epoch ms, shown as RFC 3339): the rules stage compares it with
event time (:class:`operators.rules.silences.Silence`). :meth:`SilenceStore.active` is what
the rules stage polls; it re-reads the table at most every `refresh_ms` of wall time and
keeps the last list when the store cannot be read, so a poll never stops the flow.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from connectors.clickhouse import ClickHouseError, Target, connect, migrate
from connectors.query_server import (
    QueryError,
    QueryResult,
    ServiceClient,
    owned,
    run_query,
    service_client,
)
from operators.errors import PulseError
from operators.rules.selectors import Pattern
from operators.rules.silences import Silence

log = logging.getLogger("pulse.silences")

DEFAULT_REFRESH_MS = 5_000


class SilenceStoreError(PulseError):
    """A silence cannot be stored or found; the message says what to do."""


def rfc3339(ms: int) -> str:
    """Epoch ms as RFC 3339 in UTC with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class StoredSilence:
    """One silence as stored: its id and when it was made, next to what the rules use."""

    id: str
    matchers: dict[str, Pattern]
    created_at: int  # epoch ms
    until: int  # epoch ms, exclusive
    comment: str

    def silence(self) -> Silence:
        return Silence.of(self.matchers, self.until, self.comment)

    def record(self, now_ms: int) -> dict[str, Any]:
        """What `pulse silence list --format json` prints (and ``/v1/silences`` answers)."""
        return {
            "id": self.id,
            "matchers": self.matchers,
            "created_at": rfc3339(self.created_at),
            "created_at_ms": self.created_at,
            "until": rfc3339(self.until),
            "until_ms": self.until,
            "active": now_ms < self.until,
            "comment": self.comment,
        }

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> StoredSilence:
        return cls(
            str(record["id"]),
            dict(record["matchers"]),
            int(record["created_at_ms"]),
            int(record["until_ms"]),
            str(record.get("comment", "")),
        )


Query = Callable[[str, dict[str, Any]], QueryResult]


class Silences(Protocol):
    """What `pulse silence` needs, wherever the silences are kept."""

    def add(
        self, matchers: Mapping[str, Pattern], until_ms: int, comment: str = "", now_ms: int = 0
    ) -> StoredSilence: ...

    def expire(self, silence_id: str, now_ms: int = 0) -> StoredSilence: ...

    def listed(self, now_ms: int, include_expired: bool = False) -> list[StoredSilence]: ...


def silences_for(target: Target, home: Path | None = None) -> Silences:
    """Through the service that holds an embedded store, if one runs (with its operator
    key: changing silences needs `admin`); else the table."""
    client = service_client(target, home, operator=True)
    return ServiceSilences(client) if client is not None else SilenceStore(target, home=home)


class ServiceSilences:
    """Silences through a running service (``/v1/silences``)."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def add(
        self, matchers: Mapping[str, Pattern], until_ms: int, comment: str = "", now_ms: int = 0
    ) -> StoredSilence:
        body = {"matchers": dict(matchers), "until_ms": until_ms, "comment": comment}
        return StoredSilence.of_record(self.client.request("POST", "/v1/silences", body))

    def expire(self, silence_id: str, now_ms: int = 0) -> StoredSilence:
        return StoredSilence.of_record(self.client.request("DELETE", f"/v1/silences/{silence_id}"))

    def listed(self, now_ms: int, include_expired: bool = False) -> list[StoredSilence]:
        records = self.client.request("GET", "/v1/silences", all=str(include_expired).lower())
        return [StoredSilence.of_record(record) for record in records]


class SilenceStore:
    """Add, list and expire silences in `<database>.silences`.

    `query` runs the statements: a process that holds the store passes its own client
    (the flow's rules stage, the service's routes); without one, :func:`run_query`."""

    def __init__(
        self,
        target: Target,
        refresh_ms: int = DEFAULT_REFRESH_MS,
        query: Query | None = None,
        home: Path | None = None,
    ) -> None:
        self.target = target
        self.table = f"{target.database}.silences"
        self.refresh_ms = refresh_ms
        self._query = query
        self._home = home
        self._cached: list[StoredSilence] = []
        self._read_at: float | None = None  # monotonic seconds of the last read

    # ---- writing -------------------------------------------------------------------------

    def add(
        self, matchers: Mapping[str, Pattern], until_ms: int, comment: str = "", now_ms: int = 0
    ) -> StoredSilence:
        """Store a new silence; `now_ms` (default: the clock) is its creation time."""
        now_ms = now_ms or _now_ms()
        stored = StoredSilence(uuid.uuid4().hex[:12], dict(matchers), now_ms, until_ms, comment)
        self._write(stored, version=now_ms)
        return stored

    def expire(self, silence_id: str, now_ms: int = 0) -> StoredSilence:
        """End a silence now (its expiry moves to `now_ms`); an ended one stays as it was."""
        now_ms = now_ms or _now_ms()
        rows = self._read(f"SELECT {_COLUMNS} FROM {self.table} FINAL WHERE id = %(id)s",
                          {"id": silence_id})  # fmt: skip
        if not rows:
            raise SilenceStoreError(
                f"no silence with id {silence_id!r} (`pulse silence list --all` shows them)"
            )
        current, version = rows[0]
        if current.until <= now_ms:
            return current
        ended = StoredSilence(
            current.id, current.matchers, current.created_at, now_ms, current.comment
        )
        self._write(ended, version=max(version + 1, now_ms))
        return ended

    def _write(self, silence: StoredSilence, version: int) -> None:
        self._run(
            f"INSERT INTO {self.table} (id, matchers, created_at, until, comment, version) "
            "VALUES (%(id)s, %(matchers)s, fromUnixTimestamp64Milli(%(created)s, 'UTC'), "
            "fromUnixTimestamp64Milli(%(until)s, 'UTC'), %(comment)s, %(version)s)",
            {
                "id": silence.id,
                "matchers": json.dumps(silence.matchers, sort_keys=True),
                "created": silence.created_at,
                "until": silence.until,
                "comment": silence.comment,
                "version": version,
            },
        )
        self._read_at = None  # the next poll reads again

    # ---- reading -------------------------------------------------------------------------

    def all(self) -> list[StoredSilence]:
        """Every silence ever stored (the latest version of each), newest first."""
        rows = self._read(f"SELECT {_COLUMNS} FROM {self.table} FINAL ORDER BY created_at DESC")
        return [silence for silence, _version in rows]

    def listed(self, now_ms: int, include_expired: bool = False) -> list[StoredSilence]:
        return [s for s in self.all() if include_expired or now_ms < s.until]

    def active(self, now_ms: int) -> list[Silence]:
        """The silences in force at `now_ms` (event time), for the rules stage to poll.

        Reads the table at most once per `refresh_ms` of wall time; when it cannot be read
        (a store not migrated yet, a server down) it logs that and keeps the last list."""
        now = time.monotonic()
        if self._read_at is None or (now - self._read_at) * 1000 >= self.refresh_ms:
            try:
                self._cached = self.all()
            except PulseError as exc:
                log.warning("silences: cannot read %s, keeping the last list: %s", self.table, exc)
            self._read_at = now
        return [s.silence() for s in self._cached if now_ms < s.until]

    def _read(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[StoredSilence, int]]:
        result = self._run(sql, parameters or {})
        return [_parse(row) for row in result.rows]

    # ---- routing -------------------------------------------------------------------------

    def _run(self, sql: str, parameters: dict[str, Any]) -> QueryResult:
        """Through this process's client, or directly (`run_query`); a store without the
        table is migrated first when no process holds it."""
        try:
            return self._execute(sql, parameters)
        except QueryError as exc:
            if not _missing_table(str(exc)):
                raise
            if self._query is not None:  # this process holds the store: it migrated at start
                raise SilenceStoreError(
                    f"the ClickHouse store has no table {self.table}: restart this process "
                    "(it migrates at start) or run `pulse migrate` while it is stopped"
                ) from None
        self._migrate()
        return self._execute(sql, parameters)

    def _execute(self, sql: str, parameters: dict[str, Any]) -> QueryResult:
        if self._query is not None:
            return self._query(sql, parameters)
        return run_query(self.target, sql, parameters, home=self._home)

    def _migrate(self) -> None:
        served = service_client(self.target, self._home)
        try:
            with owned(self.target):
                client = connect(self.target)
                try:
                    migrate(client, self.target.database)
                finally:
                    client.close()
        except ClickHouseError as exc:
            where = self.target.chdb_path or self.target.database
            holder = (
                "a running flow serves it but started before the silences table existed"
                if served is not None
                else str(exc)
            )
            raise SilenceStoreError(
                f"the ClickHouse store {where} has no table `silences` and cannot be migrated "
                f"now ({holder}): stop the flow and run `pulse migrate` (a flow migrates at "
                "start), then run this command again"
            ) from None


_COLUMNS = (
    "id, matchers, toUnixTimestamp64Milli(created_at), toUnixTimestamp64Milli(until), comment, "
    "version"
)


def _parse(row: list[Any]) -> tuple[StoredSilence, int]:
    silence_id, matchers, created_at, until, comment, version = row
    return StoredSilence(
        str(silence_id), json.loads(matchers), int(created_at), int(until), str(comment)
    ), int(version)


def _missing_table(message: str) -> bool:
    return "does not exist" in message and ("silences" in message or "Database" in message)


def _now_ms() -> int:
    return int(time.time() * 1000)
