"""The `deliveries` table: each delivery's final outcome, written by the sender thread
that reports it (the outbox's `on_outcome`), and counted in :class:`FlowStats`.

Written synchronously, before the delivery leaves the outbox: a crash before the row is
written leaves the delivery in the outbox's snapshot, so it is sent (and recorded) again
under the same key, and the table (ReplacingMergeTree by target and key, latest
`finished_at` wins) keeps one row. Writing here rather than routing outcomes back into
the flow keeps the dataflow acyclic and the worker off the network. A row that cannot be
written after transient retries (about a minute) is logged with the outcome and counted
as `deliveries_unrecorded`, never raised: the sender thread must go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from connectors.clickhouse import Target, connect, is_transient
from connectors.delivery.records import DeliveryOutcome, DeliveryStatus
from operators.stats import FlowStats

log = logging.getLogger("pulse.delivery")

TABLE = "deliveries"
COLUMNS = ("target", "idempotency_key", "transition_keys", "status", "attempts", "http_status",
           "error", "finished_at")  # fmt: skip
RETRY_FOR_S = 60.0
_COUNTERS = {
    DeliveryStatus.DELIVERED: "deliveries_delivered",
    DeliveryStatus.FAILED: "deliveries_failed",
    DeliveryStatus.SKIPPED: "deliveries_skipped",
}


def outcome_row(outcome: DeliveryOutcome) -> list[Any]:
    return [
        outcome.target,
        outcome.key,
        list(outcome.delivery.transition_keys),
        outcome.status.value,
        outcome.attempts,
        outcome.http_status,
        outcome.error,
        datetime.fromtimestamp(outcome.finished_at, UTC),
    ]


class OutcomeLog:
    """`on_outcome` for the outbox sink: thread-safe, never raises."""

    def __init__(
        self,
        target: Target,
        stats: FlowStats,
        client_factory: Callable[[Target], Any] = connect,
        retry_for_s: float = RETRY_FOR_S,
    ) -> None:
        self.target = target
        self.stats = stats
        self.client_factory = client_factory
        self.retry_for_s = retry_for_s
        self._lock = threading.Lock()  # one client, one insert at a time
        self._client: Any = None

    def __call__(self, outcome: DeliveryOutcome) -> None:
        with self._lock:
            counter = _COUNTERS[outcome.status]
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            try:
                for attempt in Retrying(
                    retry=retry_if_exception(is_transient),
                    wait=wait_exponential(multiplier=0.1, max=5.0),
                    stop=stop_after_delay(self.retry_for_s),
                    reraise=True,
                ):
                    with attempt:
                        self._insert(outcome)
            except Exception:
                self.stats.deliveries_unrecorded += 1
                log.exception(
                    "the outcome of delivery %s to %s (%s, %s) could not be recorded in %s",
                    outcome.key, outcome.target, outcome.status.value, outcome.error, TABLE,
                )  # fmt: skip

    def _insert(self, outcome: DeliveryOutcome) -> None:
        if self._client is None:
            self._client = self.client_factory(self.target)
        try:
            self._client.insert(
                f"{self.target.database}.{TABLE}", [outcome_row(outcome)], column_names=COLUMNS
            )
        except BaseException:
            if not self.target.embedded:
                self._client = None  # reconnect on the next attempt
            raise
