"""The SQL behind ``pulse query``: a metric by any dims over a time range.

Rollup rows carry ``"*"`` for the dims they aggregate over, so "by model_version,segment"
selects the rows where those two are set and endpoint is ``"*"``. tenant, model_id and
deployment are never rolled up: they are in every row (narrow them with ``--where``).
Reads use FINAL, so each window × dims cell appears once (its latest version).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
        return sql, {"window": self.window}

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
