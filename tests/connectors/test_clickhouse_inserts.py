"""The sink's inserts into the embedded engine (chDB): the Arrow stream is handed to chDB's
streaming insert in memory (:class:`connectors.clickhouse.EmbeddedArrowInserts`), not
written to a temp file and read back as clickhouse-connect's chDB insert does, and every
table stores the same rows either way."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from connectors.clickhouse import (
    EmbeddedArrowInserts,
    _unwrap,
    connect_for_inserts,
    describe,
    is_transient,
    migrate,
    to_arrow,
)
from operators.batches import Categorical
from tests.conftest import Store

# Every table the sink writes in volume, and one of each other kind.
TABLES = ("inferences", "events", "dead_letters", "metrics", "metrics_classes",
          "metrics_preferences", "metrics_reports", "metrics_late", "sessions")  # fmt: skip
TEXT = ["", "a", "é ü 中", "x" * 300, "quote ' and \\ back", "tab\tnew\nline"]


def _column(ch_type: str, n: int, rng: random.Random) -> Any:
    """`n` values of a ClickHouse type as the flow's row builders hand them over: numpy
    for numbers, lists for strings and maps, Categoricals for dims; nulls and edge values
    where the type allows."""
    base, nullable = _unwrap(ch_type)
    if ch_type.startswith("LowCardinality(String"):
        return Categorical(np.array([rng.randrange(3) for _ in range(n)], np.int32), TEXT[:3])
    if base.startswith("DateTime64"):
        return np.array([rng.randrange(0, 4_102_444_800_000) for _ in range(n)], np.int64)
    if base.startswith(("UInt", "Int")):
        top = {"UInt8": 255, "UInt32": 2**32 - 1}.get(base, 2**62)
        return np.array(
            [rng.choice((0, 1, top)) for _ in range(n)], np.uint64 if "U" in base else np.int64
        )
    if base.startswith("Float"):
        values = np.array([rng.choice((0.0, -1.5, 1e9, 5e-324)) for _ in range(n)])
        if nullable:
            values[::3] = np.nan
        return values
    if base == "String":
        return [None if nullable and i % 3 == 0 else rng.choice(TEXT) for i in range(n)]
    if base == "Map(String, String)":
        return [{} if i % 2 else {rng.choice(TEXT): rng.choice(TEXT), "k": ""} for i in range(n)]
    if base.startswith("Array("):
        return np.array([[rng.randrange(100) for _ in range(4)] for _ in range(n)])
    raise AssertionError(f"no sample values for {ch_type}")


def _rows(store: Store, database: str, table: str, columns: list[str]) -> list[Any]:
    """The inserted columns (not those with a DEFAULT, such as the time of the insert)."""
    return store.rows(f"SELECT {', '.join(columns)} FROM {database}.{table} ORDER BY ALL")


@pytest.mark.parametrize("table", TABLES)
def test_in_memory_inserts_store_what_the_driver_s_insert_stores(store: Store, table: str) -> None:
    """Nulls, NaN, empty maps, unicode, dictionaries, arrays and the type's extremes: the
    same Arrow table inserted both ways gives the same rows."""
    client = store.open()
    migrate(client, "pulse")
    migrate(client, "pulse_driver")
    schema = describe(client, "pulse", table)
    rng = random.Random(table)
    arrow = to_arrow({name: _column(ch_type, 60, rng) for name, ch_type in schema}, schema)
    inserts = connect_for_inserts(store.target)
    assert isinstance(inserts, EmbeddedArrowInserts)
    try:
        inserts.insert_arrow(f"pulse.{table}", arrow, settings={"optimize_on_insert": 0})
    finally:
        inserts.close()
    client.insert_arrow(f"pulse_driver.{table}", arrow, settings={"optimize_on_insert": 0})
    names = [name for name, _ in schema]
    stored = _rows(store, "pulse", table, names)
    assert len(stored) == 60
    assert stored == _rows(store, "pulse_driver", table, names)


def test_in_memory_inserts_write_no_temp_file(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """clickhouse-connect's chDB insert writes every block to a temp file and reads it back
    (~1 s of the writer per 1M events); the sink's embedded inserts need none."""
    client = store.open()
    migrate(client, "pulse")
    schema = describe(client, "pulse", "metrics_late")
    arrow = to_arrow({name: _column(t, 5, random.Random(1)) for name, t in schema}, schema)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    with pytest.raises(FileNotFoundError):  # the driver's path needs its temp file
        client.insert_arrow("pulse.metrics_late", arrow)
    inserts = connect_for_inserts(store.target)
    try:
        inserts.insert_arrow("pulse.metrics_late", arrow)
    finally:
        inserts.close()
    assert store.scalar("SELECT count() FROM pulse.metrics_late") == 5


def test_an_engine_error_is_a_database_error_that_is_not_retried(store: Store) -> None:
    """chDB's own errors reach the sink as the driver's DatabaseError with the engine's
    code, so the sink's retry policy reads them as it reads a server's."""
    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")
    arrow = to_arrow({name: _column(t, 1, random.Random(2)) for name, t in schema}, schema)
    inserts = connect_for_inserts(store.target)
    try:
        with pytest.raises(DatabaseError, match="Code: 60") as raised:  # UNKNOWN_TABLE
            inserts.insert_arrow("pulse.no_such_table", arrow)
    finally:
        inserts.close()
    assert not is_transient(raised.value)
