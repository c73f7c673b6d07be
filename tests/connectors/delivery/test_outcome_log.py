"""Delivery outcomes recorded in the `deliveries` table (chDB) and counted; a table that
refuses the row never raises into the sender thread."""

from __future__ import annotations

from typing import Any

from connectors.clickhouse import Target, migrate
from connectors.delivery.outcome_log import OutcomeLog
from connectors.delivery.records import Delivery, DeliveryOutcome, DeliveryStatus
from operators.rules.alerts import AlertState
from operators.stats import FlowStats
from tests.conftest import Store
from tests.connectors.delivery.factories import notification, transition


def _outcome(status: DeliveryStatus, key: str, error: str | None = None) -> DeliveryOutcome:
    note = notification(transition(AlertState.FIRING), transition(AlertState.FIRING, segment="eu"))
    return DeliveryOutcome(Delivery("ops", key, note), status, 3, 500 if error else 200, error,
                           1_767_225_600.5)  # fmt: skip


def test_each_outcome_is_a_row_and_a_count(store: Store) -> None:
    migrate(store.open(), "pulse")
    stats = FlowStats()
    record = OutcomeLog(store.target, stats, client_factory=lambda _: store.open())
    record(_outcome(DeliveryStatus.DELIVERED, "k1"))
    record(_outcome(DeliveryStatus.FAILED, "k2", "HTTP 500 after 3 attempts"))
    record(_outcome(DeliveryStatus.FAILED, "k2", "HTTP 500 after 3 attempts"))  # re-sent: one row
    rows = store.dicts(
        "SELECT idempotency_key, status, attempts, http_status, error, transition_keys, "
        "toUnixTimestamp64Milli(finished_at) AS at FROM {db}.deliveries FINAL ORDER BY 1"
    )
    keys = [
        t.idempotency_key
        for t in _outcome(DeliveryStatus.DELIVERED, "x").delivery.notification.transitions
    ]
    assert rows == [
        {"idempotency_key": "k1", "status": "delivered", "attempts": 3, "http_status": 200,
         "error": None, "transition_keys": keys, "at": 1_767_225_600_500},
        {"idempotency_key": "k2", "status": "failed", "attempts": 3, "http_status": 500,
         "error": "HTTP 500 after 3 attempts", "transition_keys": keys, "at": 1_767_225_600_500},
    ]  # fmt: skip
    assert (stats.deliveries_delivered, stats.deliveries_failed, stats.deliveries_unrecorded) == (
        1, 2, 0,
    )  # fmt: skip


class _Refusing:
    def insert(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError("Table pulse.deliveries does not exist")  # not transient


def test_an_outcome_the_table_refuses_is_counted_and_never_raised() -> None:
    stats = FlowStats()
    record = OutcomeLog(
        Target("chdb:///nowhere", "pulse"), stats, client_factory=lambda _: _Refusing()
    )
    record(_outcome(DeliveryStatus.FAILED, "k3", "timeout"))
    assert (stats.deliveries_failed, stats.deliveries_unrecorded) == (1, 1)
