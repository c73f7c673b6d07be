"""Queries of the official ClickHouse data source plugin (`grafana-clickhouse-datasource`,
4.x) as objects of grafana-foundation-sdk.

The SDK ships builders for Grafana's own data sources but none for this plugin, so its
query shape is written here once, against the SDK's extension points: a
:class:`~grafana_foundation_sdk.cog.variants.Dataquery` for panel targets and variables,
and an annotation target. The plugin reads ``rawSql`` (SQL with its macros and Grafana's
template variables), ``editorType: sql`` (the raw SQL editor, not its query builder), and
``format``: 0 makes a time-series frame (a long frame, whose string columns become series
labels, is widened to one series per label set), 1 a table frame (also what annotations
and variables read).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Self

from grafana_foundation_sdk.cog import builder, variants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import AnnotationTarget

PLUGIN = "grafana-clickhouse-datasource"
# Every query goes to the data source picked in the `datasource` variable.
DATASOURCE = common.DataSourceRef(type_val=PLUGIN, uid="${datasource}")


class Format(IntEnum):
    """The plugin's `format` (grafana-plugin-sdk-go sqlutil.FormatQueryOption)."""

    TIME_SERIES = 0
    TABLE = 1


_QUERY_TYPES = {Format.TIME_SERIES: "timeseries", Format.TABLE: "table"}


def _target(sql: str, fmt: Format, ref_id: str) -> dict[str, object]:
    return {
        "refId": ref_id,
        "datasource": DATASOURCE.to_json(),
        "editorType": "sql",
        "queryType": _QUERY_TYPES[fmt],
        "format": int(fmt),
        "rawSql": sql,
    }


class ClickHouseQuery(variants.Dataquery):
    """One panel target of the plugin: raw SQL and the frame shape it makes."""

    def __init__(self, sql: str, fmt: Format, ref_id: str = "A") -> None:
        self.sql = sql
        self.fmt = fmt
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return _target(self.sql, self.fmt, self.ref_id)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(data["rawSql"], Format(data.get("format", Format.TABLE)), data["refId"])


class SqlTarget(builder.Builder[variants.Dataquery]):
    """Builds a :class:`ClickHouseQuery` (what the SDK's panel builders take)."""

    def __init__(self, sql: str, fmt: Format, ref_id: str = "A") -> None:
        self._query = ClickHouseQuery(sql, fmt, ref_id)

    def build(self) -> variants.Dataquery:
        return self._query


class SqlAnnotationTarget(AnnotationTarget):
    """An annotation query of the plugin. The SDK types an annotation's target as the
    built-in Grafana one (tags, limit); this plugin reads a SQL target instead, whose
    columns `time`, `timeEnd`, `title`, `text` and `tags` make the annotations."""

    def __init__(self, sql: str) -> None:
        super().__init__()
        self.sql = sql

    def to_json(self) -> dict[str, object]:
        return _target(self.sql, Format.TABLE, "Anno")


class SqlAnnotationTargetBuilder(builder.Builder[AnnotationTarget]):
    def __init__(self, sql: str) -> None:
        self._target = SqlAnnotationTarget(sql)

    def build(self) -> AnnotationTarget:
        return self._target


def variable_query(sql: str) -> dict[str, object]:
    """A query variable's `query` as the plugin stores it (the values: its first column)."""
    return {"editorType": "sql", "rawSql": sql}
