"""Notification delivery: alert transitions to webhook targets, off the hot path.

* :mod:`~connectors.delivery.targets` — a target's settings (`DeliveryTarget`).
* :mod:`~connectors.delivery.formats` — standard (signed JSON), Slack and PagerDuty bodies.
* :mod:`~connectors.delivery.signing` — Standard Webhooks signature headers.
* :mod:`~connectors.delivery.sender` — httpx with timeouts and bounded tenacity retries.
* :mod:`~connectors.delivery.outbox` — the Bytewax sink whose snapshot is the outbox.

Docs: ``docs/delivery.md``.
"""

from connectors.delivery.outbox import Outbox, OutboxSink, OutboxState
from connectors.delivery.records import Delivery, DeliveryOutcome, DeliveryStatus
from connectors.delivery.sender import Sender
from connectors.delivery.targets import DeliveryFormat, DeliveryTarget, InvalidTargetError

__all__ = [
    "Delivery",
    "DeliveryFormat",
    "DeliveryOutcome",
    "DeliveryStatus",
    "DeliveryTarget",
    "InvalidTargetError",
    "Outbox",
    "OutboxSink",
    "OutboxState",
    "Sender",
]
