"""Stored inferences by request_id, for feedback whose inference is not in memory.

The partition stage asks for a whole batch of request ids at once (one query per
10 000 ids). `inferences` keeps the first inference of a request with the highest
`version`, so ``argMax(..., version)`` reads it even before parts are merged. While the
store is unreachable the lookup retries with backoff and the flow waits (as the sink does):
answering "not found" would turn joinable feedback into unjoined feedback.
"""

from __future__ import annotations

import logging
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_never,
    wait_exponential,
)

from connectors.clickhouse import Target, connect, is_transient
from operators.join import StoredInference
from operators.metrics import as_label

log = logging.getLogger("pulse.lookup")
CHUNK = 10_000
_COLUMNS = (
    "toUnixTimestamp64Milli(ts)", "tenant", "model_id", "deployment", "model_version", "segment",
    "endpoint", "prediction", "confidence", "latency_ms", "attributes",
)  # fmt: skip


class ClickHouseInferenceLookup:
    def __init__(self, target: Target, retry_backoff_max_ms: int = 30_000) -> None:
        self.target = target
        self.retry_backoff_max = retry_backoff_max_ms / 1000.0
        self._client: Any = None

    def __call__(self, request_ids: list[str]) -> dict[str, StoredInference]:
        found: dict[str, StoredInference] = {}
        for start in range(0, len(request_ids), CHUNK):
            found.update(self._query(request_ids[start : start + CHUNK]))
        return found

    def _query(self, request_ids: list[str]) -> dict[str, StoredInference]:
        picked = ", ".join(f"argMax({c}, version)" for c in _COLUMNS)
        sql = (
            f"SELECT request_id, {picked} FROM {self.target.database}.inferences "
            "WHERE request_id IN %(ids)s GROUP BY request_id"
        )
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=0.1, max=self.retry_backoff_max),
            stop=stop_never,
            before_sleep=self._log_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if self._client is None:
                    self._client = connect(self.target)
                try:
                    rows = self._client.query(sql, parameters={"ids": request_ids}).result_rows
                except BaseException:
                    if not self.target.embedded:
                        self._client = None
                    raise
        out: dict[str, StoredInference] = {}
        for request_id, ts, *rest in rows:
            tenant, model_id, deployment, version, segment, endpoint, prediction = rest[:7]
            confidence, latency, attributes = rest[7:]
            dims = (tenant, model_id, deployment, version, segment, endpoint)
            out[request_id] = (int(ts), *dims, as_label(prediction), confidence, latency,
                               dict(attributes))  # fmt: skip
        return out

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("inference lookup failed (attempt %d, %s); retrying", state.attempt_number, exc)
