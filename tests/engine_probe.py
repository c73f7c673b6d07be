"""Whether an embedded store's engine stays up past one client: chDB restarts an engine
whose last connection closed, and a `Memory` table's rows live only as long as it."""

from __future__ import annotations

from connectors.clickhouse import Target, connect


def engine_survives_a_closed_client(target: Target) -> bool:
    client = connect(target)
    client.command("CREATE DATABASE IF NOT EXISTS probe")
    client.command("CREATE TABLE IF NOT EXISTS probe.alive (a UInt8) ENGINE = Memory")
    client.command("TRUNCATE TABLE probe.alive")
    client.command("INSERT INTO probe.alive VALUES (1)")
    client.close()
    client = connect(target)
    try:
        return bool(client.command("SELECT count() FROM probe.alive"))
    finally:
        client.close()
