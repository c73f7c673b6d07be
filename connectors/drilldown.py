"""The SQL behind ``pulse query``: a metric by any dims over a time range.

Rollup rows carry ``"*"`` for the dims they aggregate over, so "by model_version,segment"
selects the rows where those two are set and endpoint is ``"*"``. tenant, model_id and
deployment are never rolled up: they are in every row (narrow them with ``--where``).
Reads use FINAL, so each window × dims cell appears once (its latest version).

Shared by ``pulse query`` and the service's ``GET /v1/metrics``: the options arrive as
text (:func:`from_options`), so both refuse the same mistakes with the same message. A
``tenant`` restricts every read (and the coverage note) to one tenant: the service sets
it from a tenant-bound API key.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from config.settings import parse_duration_ms
from operators.cells import ALL, KEPT_DIMS, ROLLUP_DIMS
from operators.errors import PulseError
from operators.metrics import METRIC_COLUMNS

LATE_METRICS = ("late_count", "late_inference_count")
QUERYABLE = (*METRIC_COLUMNS, *LATE_METRICS)
DIMS = (*KEPT_DIMS, *ROLLUP_DIMS)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DrilldownError(PulseError):
    """A drill-down option is wrong; the message names it."""


@dataclass
class Drilldown:
    metrics: list[str]
    by: list[str] = field(default_factory=list)
    window: str = "1m"
    since_seconds: int | None = 3600
    start_ms: int | None = None
    end_ms: int | None = None
    where: dict[str, str] = field(default_factory=dict)
    final_only: bool = False
    limit: int = 10_000
    windows: tuple[str, ...] = ()  # the configured windows with metric rows (if known)
    tenant: str | None = None  # only this tenant's rows (None: every tenant)

    def _check(self) -> None:
        """Options that would silently select nothing, or the wrong rows, are refused."""
        if self.windows and self.window not in self.windows:
            raise DrilldownError(
                f"--window {self.window!r} is not a configured window; choose from "
                f"{', '.join(self.windows)} (config `windows`)"
            )
        if self.start_ms is not None and self.end_ms is not None and self.start_ms >= self.end_ms:
            raise DrilldownError(
                "--start is at or after --end, so nothing can match (the window starts "
                "selected are those in [start, end))"
            )
        if self.limit < 1:
            raise DrilldownError(f"--limit must be at least 1, got {self.limit}")

    def coverage_sql(self, database: str) -> tuple[str, dict[str, object]]:
        """The window starts the store holds for this window, to say so when none match."""
        table = f"{database}.late_counts" if self._late() else f"{database}.metrics"
        sql = (
            "SELECT count() AS n, formatDateTime(min(window_start), '%%F %%T') AS first, "
            f"formatDateTime(max(window_start), '%%F %%T') AS last FROM {table} "
            "WHERE window = %(window)s"
        )
        params: dict[str, object] = {"window": self.window}
        if self.tenant is not None:
            sql += " AND tenant = %(tenant)s"
            params["tenant"] = self.tenant
        return sql, params

    def coverage_note(self, count: int, first: str, last: str, asked: str) -> str:
        """Why nothing matched, from a :meth:`coverage_sql` row; `asked` names the range."""
        if not count:
            return f"the store holds no rows of window {self.window} yet"
        if self.since_seconds is None and self.start_ms is None and self.end_ms is None:
            return (
                f"window {self.window} has rows from {first} to {last} UTC (window starts), "
                "none with these dims, `by` and `where`: rollup rows carry '*' for the dims "
                "they aggregate over (see `by`)"
            )
        return (
            f"window {self.window} has rows from {first} to {last} UTC (window starts), none "
            f"within {asked}: try --since all, or --start {first.replace(' ', 'T')}Z"
        )

    def _late(self) -> bool:
        return any(m in LATE_METRICS for m in self.metrics)

    def sql(self, database: str) -> tuple[str, dict[str, object]]:
        self._check()
        for metric in self.metrics:
            if metric not in QUERYABLE:
                raise DrilldownError(
                    f"unknown metric {metric!r}; choose from {', '.join(QUERYABLE)}"
                )
        late = [m for m in self.metrics if m in LATE_METRICS]
        if late and len(late) != len(self.metrics):
            raise DrilldownError("late_count / late_inference_count are queried on their own")
        for dim in [*self.by, *self.where]:
            if dim not in DIMS:
                raise DrilldownError(f"unknown dim {dim!r}; choose from {', '.join(DIMS)}")
        params: dict[str, object] = {"window": self.window}
        conditions = ["window = %(window)s"]
        for dim in ROLLUP_DIMS:
            conditions.append(f"{dim} != '{ALL}'" if dim in self.by else f"{dim} = '{ALL}'")
        if self.tenant is not None:
            params["tenant"] = self.tenant
            conditions.append("tenant = %(tenant)s")
        for i, (dim, value) in enumerate(sorted(self.where.items())):
            params[f"w{i}"] = value
            conditions.append(f"{dim} = %(w{i})s")
        if self.start_ms is not None:
            params["start"] = self.start_ms / 1000.0
            conditions.append("window_start >= toDateTime64(%(start)s, 3, 'UTC')")
        if self.end_ms is not None:
            params["end"] = self.end_ms / 1000.0
            conditions.append("window_start < toDateTime64(%(end)s, 3, 'UTC')")
        if self.since_seconds is not None and self.start_ms is None:
            params["since"] = self.since_seconds
            conditions.append("window_start >= now64(3) - toIntervalSecond(%(since)s)")
        shown = [d for d in DIMS if d in self.by or d in KEPT_DIMS]
        if late:
            table = f"{database}.late_counts"
            columns = ["window_start", *shown, *self.metrics]
        else:
            if self.final_only:
                conditions.append("final = 1")
            table = f"{database}.metrics FINAL"
            columns = ["window_start", *shown, *self.metrics, "final"]
        sql = (
            f"SELECT {', '.join(columns)} FROM {table} WHERE {' AND '.join(conditions)} "
            f"ORDER BY window_start, {', '.join(shown)} LIMIT {int(self.limit)}"
        )
        return sql, params


def parse_where(items: list[str]) -> dict[str, str]:
    where = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _NAME.match(name):
            raise DrilldownError(f"--where takes dim=value, got {item!r}")
        where[name] = value
    return where


def parse_time(value: str, option: str) -> int:
    """RFC 3339 (UTC when no zone is given), epoch milliseconds or 'now', in epoch ms."""
    if value == "now":
        return int(time.time() * 1000)
    if value.isascii() and value.isdigit():  # str.isdigit takes '¹', which int() refuses
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DrilldownError(
            f"{option} takes an RFC 3339 time, epoch milliseconds or 'now', got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def since_seconds(value: str | None, option: str = "--since") -> int | None:
    """A look-back duration (10m, 1h, 2d) in seconds; None or 'all': no bound."""
    if value in (None, "all"):
        return None
    try:
        return parse_duration_ms(value) // 1000
    except ValueError:
        raise DrilldownError(
            f"{option} takes a duration (e.g. 10m, 1h, 2d) or 'all', got {value!r}"
        ) from None


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def from_options(
    *,
    metric: str | None,
    by: str | None = None,
    window: str = "1m",
    since: str | None = "1h",
    start: str | None = None,
    end: str | None = None,
    where: list[str] | None = None,
    final_only: bool = False,
    limit: int = 10_000,
    windows: tuple[str, ...] = (),
    tenant: str | None = None,
) -> Drilldown:
    """A drill-down from the options as given (``pulse query`` flags, ``/v1/metrics``
    query parameters); every mistake is a :class:`DrilldownError` naming the option."""
    metrics = _names(metric)
    if not metrics:
        raise DrilldownError("give --metric NAME[,NAME] (or --sql)")
    drill = Drilldown(
        metrics=metrics,
        by=_names(by),
        window=window,
        since_seconds=since_seconds(since),
        start_ms=parse_time(start, "--start") if start else None,
        end_ms=parse_time(end, "--end") if end else None,
        where=parse_where(where or []),
        final_only=final_only,
        limit=limit,
        windows=windows,
        tenant=tenant,
    )
    drill.sql("pulse")  # every check, before anything runs
    return drill
