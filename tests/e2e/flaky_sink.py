"""Runs `pulse` with ClickHouse writes failing for a while, for the sink-outage test.

``python -m tests.e2e.flaky_sink REPORT OUTAGE_SECONDS -- <pulse arguments>``

The real flow, the real ClickHouse engine: only the sink's client is wrapped so that
``insert_arrow`` raises ``ConnectionRefusedError`` (what an unreachable server gives) from
the first insert until OUTAGE_SECONDS later. A sampler thread records what the test
asserts on: the most rows the sink ever held (and the largest
single hand-over, which may overshoot the bound once), and how far the sources had read when the
outage began and ended (backpressure stops them). REPORT gets that as JSON at exit.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from connectors import clickhouse_sink
from dataflows import cli
from operators.stats import STATS

report: dict[str, Any] = {"failed_inserts": 0, "max_buffered_rows": 0, "largest_handover": 0}
writers: list[Any] = []


class FlakyClient:
    def __init__(self, client: Any, outage: float) -> None:
        self._client = client
        self._outage = outage

    def insert_arrow(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if "outage_began" not in report:
            report["outage_began"] = now
            report["events_in_at_outage_start"] = STATS.events_in
        if now - report["outage_began"] < self._outage:
            report["failed_inserts"] += 1
            report["events_in_at_outage_end"] = STATS.events_in
            raise ConnectionRefusedError(111, "Connection refused (injected)")
        return self._client.insert_arrow(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def sample() -> None:
    while True:
        for writer in list(writers):
            buffered = writer._pending + writer._in_flight
            report["max_buffered_rows"] = max(report["max_buffered_rows"], buffered)
        time.sleep(0.01)


def main() -> int:
    out, outage = Path(sys.argv[1]), float(sys.argv[2])
    pulse_args = sys.argv[sys.argv.index("--") + 1 :]
    real_connect = clickhouse_sink.connect_for_inserts
    clickhouse_sink.connect_for_inserts = lambda target: FlakyClient(real_connect(target), outage)  # type: ignore[assignment]
    real_init = clickhouse_sink._Writer.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        writers.append(self)

    real_add = clickhouse_sink._Writer.add

    def add(self: Any, batch: list[Any]) -> None:
        rows = sum(len(r) for r in batch)
        report["largest_handover"] = max(report["largest_handover"], rows)
        real_add(self, batch)

    clickhouse_sink._Writer.__init__ = init  # type: ignore[method-assign]
    clickhouse_sink._Writer.add = add  # type: ignore[method-assign]
    threading.Thread(target=sample, daemon=True).start()

    def dump() -> None:
        report["events_in_total"] = STATS.events_in
        report.pop("outage_began", None)
        out.write_text(json.dumps(report))

    atexit.register(dump)
    return cli.main(pulse_args)


if __name__ == "__main__":
    sys.exit(main())
