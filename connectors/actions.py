"""The actions stream: machine-readable requests (`rollback`, `retrain`, `scale`) for
controllers, one JSON object per :class:`operators.rules.alerts.Action` (schema
``pulse.action/v1``, documented in ``docs/actions.md``).

* **Local backend**: the stream `actions` of the local log, partition 0
  (``$PULSE_HOME/log/actions/p0000/*.jsonl``). The log's layout, locking and fsync per
  append are reused, so a controller tails it like a data stream, with byte positions as
  offsets (:class:`connectors.local_log.LogReader`); one partition keeps every action in
  one order and actions are few (at most one per alert episode). The data streams are
  untouched: the flow reads only `inferences` and `feedback`. Each batch is appended (and
  fsynced) as it arrives, so it is on disk before the sink's snapshot returns. An action
  whose idempotency key the stream already holds is not appended again (the keys are read
  at start): a replay after a crash, or a second bounded run over the same log, adds
  nothing.
* **Kafka backend**: topic ``<prefix>.actions`` (made by ``ensure_topics``), keyed by the
  action's idempotency key, through :class:`connectors.kafka.AcknowledgedProducer`
  (idempotent, ``acks=all``); every snapshot waits for the broker's acknowledgement. At
  least once: a replay after a crash may send an action again with the same key, which
  consumers dedup on. A permanent failure ends the process with exit 3, like the
  dead-letter sink.

The sink takes ``(key, Action)`` items; it has one partition, which gets them all (the
key only routes, as in any Bytewax sink).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from config.settings import Settings
from connectors.kafka import ACTIONS, AcknowledgedProducer, KafkaTarget, exit_if_failed
from connectors.local_log import LocalLog
from operators.rules.alerts import Action

SCHEMA = "pulse.action/v1"
PARTITION = 0  # the local stream's one partition
READ_BYTES = 1 << 20


def _plain(value: Any) -> Any:
    """JSON-ready evidence: numpy scalars as numbers, tuples as lists, a non-finite float as
    null (JSON has no NaN or Infinity)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def action_record(action: Action) -> dict[str, Any]:
    """The ``pulse.action/v1`` object of an action (docs/actions.md)."""
    dims = dict(action.dims)
    return {
        "schema": SCHEMA,
        "kind": action.kind,
        "rule": action.rule,
        "fingerprint": action.fingerprint,
        "episode": action.episode,
        "event_time": datetime.fromtimestamp(action.event_time / 1000, UTC).isoformat(
            timespec="milliseconds"
        ),
        "event_time_ms": action.event_time,
        "dims": dims,
        "model_id": dims.get("model_id"),
        "from_version": action.from_version,
        "to_version": action.to_version,
        "evidence": _plain(action.evidence),
        "idempotency_key": action.idempotency_key,
    }


def encode(action: Action) -> bytes:
    return json.dumps(action_record(action), separators=(",", ":"), allow_nan=False).encode()


LocalLogConfig = tuple[Path, int, int]  # LocalLog's root, partitions, segment bytes


def _log_config(settings: Settings) -> LocalLogConfig:
    return settings.home_dir / "log", settings.log.partitions, settings.log.segment_bytes


def _local_lines(log: LocalLog) -> Iterator[bytes]:
    reader = log.reader(ACTIONS, PARTITION)
    try:
        while True:
            result = reader.read(READ_BYTES)
            yield from result.lines
            if result.caught_up:
                return
    finally:
        reader.close()


def read_actions(settings: Settings, dedup: bool = True) -> list[dict[str, Any]]:
    """The actions in the local log, oldest first (for tests and local controllers); with
    `dedup`, the first record of each idempotency key."""
    log = LocalLog(*_log_config(settings))
    records = [json.loads(line) for line in _local_lines(log)]
    if not dedup:
        return records
    seen: set[str] = set()
    unique = []
    for record in records:
        if record["idempotency_key"] not in seen:
            seen.add(record["idempotency_key"])
            unique.append(record)
    return unique


class _LocalActionsPartition(StatefulSinkPartition[Action, None]):
    """Appends to the log's `actions` stream; skips keys it already holds."""

    def __init__(self, log: LocalLog) -> None:
        self.log = log
        self.written = {json.loads(line)["idempotency_key"] for line in _local_lines(log)}

    def write_batch(self, items: list[Action]) -> None:
        lines = []
        for action in items:
            key = action.idempotency_key
            if key not in self.written:
                self.written.add(key)
                lines.append(encode(action))
        self.log.append(ACTIONS, PARTITION, lines)  # fsynced before it returns

    def snapshot(self) -> None:
        return None  # every batch is on disk already

    def close(self) -> None:
        pass


class _KafkaActionsPartition(StatefulSinkPartition[Action, None]):
    """Produces to ``<prefix>.actions`` keyed by idempotency key; a snapshot waits for the
    broker's acknowledgement of all of them."""

    def __init__(self, target: KafkaTarget) -> None:
        self.producer = AcknowledgedProducer(target, ACTIONS)

    def write_batch(self, items: list[Action]) -> None:
        for action in items:
            self.producer.produce(action.idempotency_key, encode(action))
        exit_if_failed(self.producer.poll)

    def snapshot(self) -> None:
        exit_if_failed(self.producer.confirm)
        return None

    def close(self) -> None:
        self.snapshot()


class ActionSink(FixedPartitionedSink[Action, None]):
    """The actions stream of the configured backend (one partition)."""

    def __init__(self, kafka: KafkaTarget | None, log: LocalLogConfig | None) -> None:
        self.kafka = kafka
        self.log = log

    @classmethod
    def for_settings(cls, settings: Settings) -> ActionSink:
        if settings.log.backend == "kafka":
            k = settings.kafka
            return cls(
                KafkaTarget(k.bootstrap_servers, k.topic_prefix, dict(k.client_config)), None
            )
        return cls(None, _log_config(settings))

    def list_parts(self) -> list[str]:
        return [ACTIONS]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSinkPartition[Action, None]:
        if self.kafka is not None:
            return _KafkaActionsPartition(self.kafka)
        assert self.log is not None
        return _LocalActionsPartition(LocalLog(*self.log))
