"""The local durable log reports when each request's events were durable (the bench
splits a request's log time into the committer's share and the event loop's)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from connectors.ingest_log import LocalDurableLog
from connectors.local_log import LocalLog


def test_each_request_records_its_time_to_durable_within_its_append(tmp_path: Path) -> None:
    durable = LocalDurableLog(LocalLog(tmp_path / "log", 2))
    recorded: list[float] = []
    durable.durable_ms = recorded
    appends_ms: list[float] = []

    async def request(i: int) -> None:
        started = time.perf_counter()
        await durable.append_async([("feedback", f"r{i}", b'{"i": %d}' % i)], timeout_s=60)
        appends_ms.append((time.perf_counter() - started) * 1000)

    async def requests() -> None:
        await asyncio.gather(*(request(i) for i in range(20)))

    asyncio.run(requests())
    durable.append([("inferences", "r", b"{}")], timeout_s=60)
    durable.close()
    assert len(recorded) == 21
    assert all(ms > 0 for ms in recorded)
    assert max(recorded[:20]) <= max(appends_ms)
