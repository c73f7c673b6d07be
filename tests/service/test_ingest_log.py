"""The local durable log: group commit under concurrency, and a disk error is a 503."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from connectors.ingest_log import LocalDurableLog, _Done, _Pending
from connectors.local_log import LocalLog
from connectors.service.context import EventLogUnavailable, Routed
from tests.service.conftest import ServiceFactory
from tests.service.test_ingest import feedback, inference, logged, settings_for, start


def _lines(log: LocalLog, partition: int) -> list[bytes]:
    reader = log.reader("feedback", partition)
    try:
        return reader.read(1 << 24).lines
    finally:
        reader.close()


def _line(i: int, j: int) -> Routed:
    return "feedback", f"r{i}", f'{{"event_id": "e{i}-{j}"}}'.encode()


def test_concurrent_appends_are_each_durable_when_they_return(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "log", 4)
    durable = LocalDurableLog(log)
    missing: list[str] = []

    def request(i: int) -> None:
        events = [_line(i, j) for j in range(25)]
        durable.append(events, timeout_s=60)
        # On return every event of the request is in the log, readable by another reader.
        text = b"\n".join(line for p in range(4) for line in _lines(log, p))
        missing.extend(line.decode() for _, _, line in events if line not in text)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    durable.close()
    assert missing == []
    total = sum(len(_lines(log, p)) for p in range(4))
    assert total == 16 * 25
    with pytest.raises(EventLogUnavailable):
        durable.append([_line(99, 0)], timeout_s=1)  # closed


def test_a_disk_error_is_503_and_nothing_is_reported_accepted(
    service: ServiceFactory, home: Path
) -> None:
    running = start(service, settings_for(home))
    blocked = home / "log" / "feedback"
    blocked.write_text("not a directory")  # every feedback append fails
    with running.client() as client:
        refused = client.post("/v1/feedback", json=feedback("e1", "r1"))
        other_stream = client.post("/v1/inferences", json=inference("r1"))
        blocked.unlink()
        retried = client.post("/v1/feedback", json=feedback("e1", "r1"))
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert "local log" in refused.json()["detail"]
    assert other_stream.status_code == 202
    assert retried.status_code == 202
    assert [e["event_id"] for e in logged(home)["feedback"]] == ["e1"]


def test_awaited_appends_are_durable_and_a_closed_loop_does_not_stop_the_committer(
    tmp_path: Path,
) -> None:
    """`append_async` returns once its lines are on disk; a request whose event loop
    closed before its round ended (the service stopped) leaves the committer running."""
    log = LocalLog(tmp_path / "log", 4)
    durable = LocalDurableLog(log)
    try:

        async def two() -> None:
            await asyncio.gather(
                durable.append_async([_line(0, 0)], timeout_s=60),
                durable.append_async([_line(1, 0)], timeout_s=60),
            )

        asyncio.run(two())
        assert sum(len(_lines(log, p)) for p in range(4)) == 2
        orphan = asyncio.new_event_loop()
        with durable._wake:  # held: the request is queued, its round not yet written
            durable._queue.append(_Pending([_line(2, 0)], _Done(orphan)))
            orphan.close()
            durable._wake.notify()
        durable.append([_line(3, 0)], timeout_s=60)  # served: the committer lives on
        assert sum(len(_lines(log, p)) for p in range(4)) == 4
    finally:
        durable.close()
