"""Writing event lines into the event log: the local log, Kafka, or a JSONL file.

Used by ``pulse load`` and ``pulse generate``. Events are placed exactly as producers
must place them: by stream (inference or feedback topic) and by Kafka's partitioner on
`request_id`. A line that cannot be parsed, or has no request_id, goes to the feedback
stream keyed by a digest of its bytes, so it still reaches dead letters with its position.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Protocol

import msgspec

from connectors.kafka import EventProducer, KafkaTarget
from connectors.local_log import LocalLog
from operators.partitioning import partition_for

Routed = tuple[str, str | bytes, bytes]  # (stream, key, line)


def _digest(line: bytes) -> str:
    return hashlib.blake2b(line, digest_size=16).hexdigest()


def route(line: bytes) -> Routed:
    """Stream and key of a raw line, as a producer would choose them."""
    try:
        obj = msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return "feedback", _digest(line), line
    if not isinstance(obj, dict):
        return "feedback", _digest(line), line
    stream = "inferences" if obj.get("type") == "inference" else "feedback"
    key = obj.get("request_id")
    return stream, key if isinstance(key, str) and key else _digest(line), line


class EventWriter(Protocol):
    def write(self, events: Iterable[Routed]) -> int: ...
    def close(self) -> None: ...


class LogWriter:
    def __init__(self, log: LocalLog) -> None:
        self.log = log

    def write(self, events: Iterable[Routed]) -> int:
        grouped: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        for stream, key, line in events:
            grouped[(stream, partition_for(key, self.log.partitions))].append(line)
        return self.log.append_many(grouped)  # fsynced together

    def close(self) -> None:
        self.log.close()  # the files kept open to append (appending again reopens them)


class KafkaWriter:
    def __init__(self, target: KafkaTarget) -> None:
        self.producer = EventProducer(target)

    def write(self, events: Iterable[Routed]) -> int:
        n = 0
        for stream, key, line in events:
            self.producer.send(stream, key, line)
            n += 1
        self.producer.producer.poll(0)
        return n

    def close(self) -> None:
        self.producer.flush()


class FileWriter:
    def __init__(self, path: Path) -> None:
        self.file: IO[bytes] = path.open("ab")

    def write(self, events: Iterable[Routed]) -> int:
        n = 0
        for _stream, _key, line in events:
            self.file.write(line + b"\n")
            n += 1
        return n

    def close(self) -> None:
        self.file.close()


def read_lines(path: Path, chunk: int = 10_000) -> Iterable[list[bytes]]:
    """Non-empty lines of a JSONL file, in chunks."""
    batch: list[bytes] = []
    with path.open("rb") as f:
        for raw in f:
            line = raw.rstrip(b"\r\n")
            if line:
                batch.append(line)
                if len(batch) >= chunk:
                    yield batch
                    batch = []
    if batch:
        yield batch
