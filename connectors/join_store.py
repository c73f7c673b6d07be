"""The join's view of ClickHouse: stored inferences and feedback ids.

* ``lookup``: inferences by request_id, for feedback whose inference is not in memory, with
  where the log had them (the stage joins only those it had read:
  :func:`operators.join.read_before_release`); a whole batch at once (one query per
  10 000 ids). `inferences` keeps the first inference
  of a request with the highest `version`, so ``argMax(..., version)`` reads it even before
  parts are merged. Such a query costs its planning, not its reading (~4.5 ms of CPU in
  chDB for 1 or 200 ids, found or not; one that selects only `request_id`, ~2 ms): while
  most lookups find nothing (feedback for requests that never had an inference), a chunk
  is first probed for the ids the store holds and only those are read (:class:`_Probing`).
* ``recent_inferences`` / ``recent_feedback``: after a restart, the partition stage rebuilds
  its recent-inference cache and its dedup ids from the rows it had written up to its
  snapshot, instead of carrying them in every snapshot.

While the store is unreachable, queries retry with backoff and the flow waits (as the sink
does): answering "not found" would turn joinable feedback into unjoined feedback.
"""

from __future__ import annotations

import logging
from typing import Any

from tenacity import RetryCallState

from connectors.clickhouse import Target, connect, retrying_while_transient
from operators.join import FoundInference, StoredInference
from operators.metrics import as_label

log = logging.getLogger("pulse.lookup")
CHUNK = 10_000
_POSITION = ("source_partition", "source_offset")  # the first inference's, as it was read
_COLUMNS = (
    "toUnixTimestamp64Milli(ts)", "tenant", "model_id", "deployment", "model_version", "segment",
    "endpoint", "prediction", "confidence", "latency_ms", "attributes",
)  # fmt: skip


class ClickHouseJoinStore:
    def __init__(self, target: Target, retry_backoff_max_ms: int = 30_000) -> None:
        self.target = target
        self.retry_backoff_max = retry_backoff_max_ms / 1000.0
        self._client: Any = None
        self._probing = _Probing()

    def lookup(self, request_ids: list[str]) -> dict[str, FoundInference]:
        found: dict[str, FoundInference] = {}
        table = f"{self.target.database}.inferences"
        picked = ", ".join(f"argMax({c}, version)" for c in (*_POSITION, *_COLUMNS))
        where = "WHERE request_id IN %(ids)s"
        read = f"SELECT request_id, {picked} FROM {table} {where} GROUP BY request_id"
        probe = f"SELECT request_id FROM {table} {where}"
        for start in range(0, len(request_ids), CHUNK):
            wanted = request_ids[start : start + CHUNK]
            if self._probing.first():
                held = {row[0] for row in self._rows(probe, {"ids": wanted})}
                wanted = [request_id for request_id in wanted if request_id in held]
            rows = self._rows(read, {"ids": wanted}) if wanted else []
            self._probing.saw(bool(rows))
            found.update(
                (row[0], FoundInference(int(row[1]), int(row[2]), _stored(row[3:]))) for row in rows
            )
        return found

    def recent_inferences(
        self, partition: int, up_to_offset: int, since_ts: float, limit: int
    ) -> list[tuple[str, StoredInference]]:
        columns = ", ".join(_COLUMNS)
        sql = (
            f"SELECT request_id, {columns}, source_offset FROM {self.target.database}.inferences "
            "WHERE source_partition = %(p)s AND source_offset <= %(upto)s "
            "AND toUnixTimestamp64Milli(ts) > %(since)s "
            "ORDER BY source_offset DESC LIMIT 1 BY request_id LIMIT %(limit)s"
        )
        rows = self._rows(sql, self._window(partition, up_to_offset, since_ts, limit))
        return [(row[0], _stored(row[1:-1])) for row in reversed(rows)]

    def recent_feedback(
        self, partition: int, up_to_offset: int, since_ts: float, limit: int
    ) -> list[tuple[str, int]]:
        sql = (
            f"SELECT event_id, toUnixTimestamp64Milli(ts), min(source_offset) AS offset "
            f"FROM {self.target.database}.events "
            "WHERE source_partition = %(p)s AND source_offset <= %(upto)s "
            "AND toUnixTimestamp64Milli(ts) > %(since)s "
            "GROUP BY event_id, ts ORDER BY offset DESC LIMIT %(limit)s"
        )
        rows = self._rows(sql, self._window(partition, up_to_offset, since_ts, limit))
        return [(row[0], int(row[1])) for row in reversed(rows)]

    @staticmethod
    def _window(partition: int, up_to_offset: int, since_ts: float, limit: int) -> dict[str, Any]:
        since = int(since_ts) if since_ts > -(2**62) else -(2**62)
        return {"p": partition, "upto": up_to_offset, "since": since, "limit": limit}

    def _rows(self, sql: str, parameters: dict[str, Any]) -> list[Any]:
        retrying = retrying_while_transient(self.retry_backoff_max, self._log_retry)
        for attempt in retrying:
            with attempt:
                if self._client is None:
                    self._client = connect(self.target)
                try:
                    return list(self._client.query(sql, parameters=parameters).result_rows)
                except BaseException:
                    if not self.target.embedded:
                        self._client = None
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Let go of the client: an embedded (chDB) store is released only when its last
        client closes (a process opens one data directory at a time)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("inference lookup failed (attempt %d, %s); retrying", state.attempt_number, exc)


class _Probing:
    """Whether a lookup asks first which ids the store holds: the probe costs 40-55 % of
    the full read (alone / during a bounded run), and saves the read whenever nothing is
    found. Decided from how often recent chunks found anything (a moving average); either
    way the answer is the same, only its cost differs (a chunk with something found costs
    probe + read). Probing first pays while that rate is below 1 - probe/read: ~0.5."""

    __slots__ = ("_found_rate",)
    ALPHA = 0.1  # weight of the latest chunk
    ABOVE = 0.5  # found this often: read at once

    def __init__(self) -> None:
        self._found_rate = 0.0

    def first(self) -> bool:
        return self._found_rate < self.ABOVE

    def saw(self, found: bool) -> None:
        self._found_rate += self.ALPHA * (float(found) - self._found_rate)


def _stored(row: Any) -> StoredInference:
    ts, tenant, model_id, deployment, version, segment, endpoint, prediction = row[:8]
    confidence, latency, attributes = row[8:11]
    dims = (tenant, model_id, deployment, version, segment, endpoint)
    return (int(ts), *dims, as_label(prediction), confidence, latency, dict(attributes))
