"""A local log of synthetic traffic, each event in its key's partition (the replays' input)."""

from __future__ import annotations

from pathlib import Path

from connectors.event_writer import LogWriter
from connectors.local_log import LocalLog
from operators.synthetic import TrafficGenerator, TrafficProfile


def write_log(root: Path, partitions: int, profile: TrafficProfile) -> None:
    writer = LogWriter(LocalLog(root, partitions))  # routes each event by its key
    writer.write((e.stream, e.key, e.line) for e in TrafficGenerator(profile).events())
    writer.close()
