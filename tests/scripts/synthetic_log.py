"""A local log of synthetic traffic, each event in its key's partition (the replays' input)."""

from __future__ import annotations

from pathlib import Path

from connectors.local_log import LocalLog
from operators.partitioning import partition_for
from operators.synthetic import TrafficGenerator, TrafficProfile


def write_log(root: Path, partitions: int, profile: TrafficProfile) -> None:
    log = LocalLog(root, partitions)
    groups: dict[tuple[str, int], list[bytes]] = {}
    for event in TrafficGenerator(profile).events():
        groups.setdefault((event.stream, partition_for(event.key, partitions)), []).append(
            event.line
        )
    log.append_many(groups)
    log.close()
