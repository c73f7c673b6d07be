"""What the delivery connector keeps and reports: a `Delivery` (one request to make,
the unit of the outbox) and its final `DeliveryOutcome`.

Both are frozen and picklable: pending deliveries sit in the outbox sink's snapshot and
are re-sent after a restart under the same idempotency key.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from operators.rules.alerts import Notification


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request to one target: a notification, or for PagerDuty (one event per
    transition) a single transition of it. `key` is the request's idempotency key: the
    same however often the request is retried or re-sent after a crash."""

    target: str
    key: str
    notification: Notification

    @property
    def transition_keys(self) -> tuple[str, ...]:
        return tuple(t.idempotency_key for t in self.notification.transitions)


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # a permanent error, attempts used up, or the drain deadline passed
    SKIPPED = "skipped"  # nothing to send: the format does not carry these transitions


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """The final word on a delivery; the wiring records it (ClickHouse) and counts it."""

    delivery: Delivery
    status: DeliveryStatus
    attempts: int  # HTTP attempts made (0 when nothing was sent)
    http_status: int | None  # of the last answer, if any
    error: str | None  # why it failed (or was skipped), for a person
    finished_at: float  # wall-clock epoch seconds (network retries are wall-clock)

    @property
    def target(self) -> str:
        return self.delivery.target

    @property
    def key(self) -> str:
        return self.delivery.key
