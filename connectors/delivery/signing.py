"""Standard Webhooks signatures (https://www.standardwebhooks.com): the `webhook-id`,
`webhook-timestamp` and `webhook-signature` headers of a request, computed by the
`standardwebhooks` package (the spec's reference implementation) rather than by hand.

The id is the delivery's idempotency key, so a retried or re-sent request carries the
same id; the timestamp is the wall-clock time of each attempt (receivers reject
signatures older than their tolerance, five minutes by default), so every attempt is
signed afresh over the same body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from math import floor

from standardwebhooks.webhooks import Webhook


def signature_headers(secret: str, msg_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for `body` sent at `at` (aware, UTC)."""
    at = at.astimezone(UTC)  # sign() reads the clock fields as UTC whatever the zone
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(floor(at.timestamp())),
        "webhook-signature": signature,
    }
