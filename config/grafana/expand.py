"""A dashboard query as ClickHouse receives it: Grafana's template variables, then the
ClickHouse plugin's macros, expanded to concrete SQL.

Only what the dashboard uses is modelled, and anything else is refused (so a panel
using more fails its test instead of passing unexpanded):

* Grafana interpolates variables first, in the browser. ``${name:sqlstring}``: each
  value in single quotes with ``'`` doubled, joined by commas; with "All" selected, the
  variable's custom all value as written, else every option. ``${name}``: a single
  value as is.
* The plugin's backend then expands its macros (grafana/clickhouse-datasource,
  pkg/macros): ``$__timeFilter(col)`` is ``col >= toDateTime(FROM) AND col <=
  toDateTime(TO)`` in Unix seconds (truncated); ``$__timeInterval(col)`` is
  ``toStartOfInterval(toDateTime(col), INTERVAL N second)``, N the panel's interval in
  whole seconds, at least 1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from operators.errors import PulseError

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}")
_MACRO = re.compile(r"\$__(\w+)\(([^()]*)\)")


class ExpansionError(PulseError):
    """A query uses a variable, format or macro this expander does not model."""


@dataclass(frozen=True)
class Selection:
    """A variable's state: the values chosen, or "All" (then `values` are its options)."""

    values: tuple[str, ...]
    all: bool = False
    all_value: str | None = None

    @classmethod
    def one(cls, value: str) -> Selection:
        return cls((value,))


@dataclass(frozen=True)
class TimeRange:
    start: datetime  # timezone-aware
    end: datetime
    interval_s: float  # the panel's interval (Grafana: range / max data points, rounded)


def sqlstring(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format(name: str, fmt: str | None, selection: Selection) -> str:
    if selection.all and selection.all_value is not None:
        return selection.all_value
    if fmt == "sqlstring":
        if not selection.values:
            raise ExpansionError(f"variable {name!r} has no value to interpolate")
        return ",".join(sqlstring(v) for v in selection.values)
    if fmt is None:
        if len(selection.values) != 1:
            raise ExpansionError(f"${{{name}}} needs one value, has {selection.values!r}")
        return selection.values[0]
    raise ExpansionError(f"format {fmt!r} of variable {name!r} is not modelled")


def interpolate(sql: str, variables: Mapping[str, Selection]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, fmt = match.group(1), match.group(2)
        if name not in variables:
            raise ExpansionError(f"unknown variable {name!r}")
        return _format(name, fmt, variables[name])

    return _VARIABLE.sub(replace, sql)


def expand_macros(sql: str, time: TimeRange) -> str:
    start, end = int(time.start.timestamp()), int(time.end.timestamp())
    seconds = int(max(time.interval_s, 1.0))

    def replace(match: re.Match[str]) -> str:
        name, column = match.group(1), match.group(2).strip()
        if name == "timeFilter":
            return f"{column} >= toDateTime({start}) AND {column} <= toDateTime({end})"
        if name == "timeInterval":
            return f"toStartOfInterval(toDateTime({column}), INTERVAL {seconds} second)"
        raise ExpansionError(f"macro $__{name} is not modelled")

    return _MACRO.sub(replace, sql)


def expand(sql: str, variables: Mapping[str, Selection], time: TimeRange) -> str:
    """The SQL ClickHouse runs for `sql` under these variables and time range."""
    expanded = expand_macros(interpolate(sql, variables), time)
    if "$" in expanded:
        raise ExpansionError(f"unexpanded syntax left in: {expanded}")
    return expanded
