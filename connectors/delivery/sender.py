"""Sending one delivery to its target over HTTP: httpx with timeouts, bounded retries.

The retry policy is tenacity's (already how the ClickHouse writer retries): bounded
attempts (`max_attempts`), exponential backoff with full jitter (`wait_random_exponential`:
a random wait in [0, min(backoff_max_s, backoff_initial_s·2^n)], so receivers that failed
together are not retried together), and one custom wait that honours a receiver's
`Retry-After` (delta-seconds or an HTTP date, capped at `retry_after_max_s`) in place of
the backoff. tenacity fits because a wait strategy sees the last attempt's outcome, so
the answer that asked for the wait also decides it.

Retried: connection errors and timeouts (any httpx transport error), 408, 429 and 5xx.
Any other answer is final: 2xx is delivered, other 4xx fail at once (resending the same
request would be refused again). Errors never name the URL (Slack's holds its secret).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_when_event_set,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from connectors.delivery.formats import render
from connectors.delivery.records import Delivery, DeliveryOutcome, DeliveryStatus
from connectors.delivery.signing import signature_headers
from connectors.delivery.targets import DeliveryFormat, DeliveryTarget

log = logging.getLogger("pulse.delivery")

RETRYABLE_STATUS = frozenset({408, 429})  # and every 5xx
ERROR_BODY_CHARS = 200


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A `Retry-After` header in seconds from now: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class WaitRetryAfter(wait_base):
    """The receiver's `Retry-After` (capped) when the last answer gave one, else `fallback`."""

    def __init__(self, fallback: wait_base, cap_s: float) -> None:
        self.fallback = fallback
        self.cap_s = cap_s

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            response: httpx.Response = outcome.result()
            asked = retry_after_seconds(response.headers.get("retry-after"))
            if asked is not None:
                return min(asked, self.cap_s)
        return float(self.fallback(retry_state))


class Sender:
    """Sends deliveries to one target, one at a time; `stop` cuts waits and retries short
    (the outbox's drain deadline)."""

    def __init__(self, target: DeliveryTarget, stop: threading.Event | None = None) -> None:
        self.target = target
        self.stop = stop or threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(target.timeout_s))

    def close(self) -> None:
        self._client.close()

    def retrying(self) -> Retrying:
        t = self.target
        return Retrying(
            retry=(
                retry_if_exception_type(httpx.TransportError)
                | retry_if_result(lambda r: is_retryable_status(r.status_code))
            ),
            wait=WaitRetryAfter(
                wait_random_exponential(multiplier=t.backoff_initial_s, max=t.backoff_max_s),
                t.retry_after_max_s,
            ),
            stop=stop_after_attempt(t.max_attempts) | stop_when_event_set(self.stop),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            reraise=True,
        )

    def send(self, delivery: Delivery) -> DeliveryOutcome:
        """Try until delivered, a permanent answer, attempts run out or `stop` is set."""
        rendered = render(delivery, self.target)
        attempts = 0

        def attempt() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            headers = dict(rendered.headers)
            if self.target.format is DeliveryFormat.STANDARD:
                headers |= signature_headers(
                    self.target.secret or "", delivery.key, rendered.body, datetime.now(UTC)
                )
            return self._client.post(self.target.url, content=rendered.body, headers=headers)

        try:
            response = self.retrying()(attempt)
        except httpx.HTTPError as exc:
            return self._outcome(delivery, DeliveryStatus.FAILED, attempts, None, describe(exc))
        if response is None:  # stopped before the first attempt
            return self._outcome(delivery, DeliveryStatus.FAILED, 0, None, "stopped before sending")
        if response.is_success:
            return self._outcome(delivery, DeliveryStatus.DELIVERED, attempts, response.status_code)
        error = f"HTTP {response.status_code}: {response.text[:ERROR_BODY_CHARS]}".strip()
        if is_retryable_status(response.status_code):
            error += f" (gave up after {attempts} attempts)"
        return self._outcome(delivery, DeliveryStatus.FAILED, attempts, response.status_code, error)

    def _outcome(
        self,
        delivery: Delivery,
        status: DeliveryStatus,
        attempts: int,
        http_status: int | None,
        error: str | None = None,
    ) -> DeliveryOutcome:
        return DeliveryOutcome(delivery, status, attempts, http_status, error, time.time())

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)  # returns at once when stopped

    def _log_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome
        if outcome is None:
            return
        why = (
            describe(outcome.exception())
            if outcome.failed
            else f"HTTP {outcome.result().status_code}"
        )
        log.warning(
            "delivery to %s failed (%s), attempt %d of %d; retrying in %.2fs",
            self.target.name,
            why,
            state.attempt_number,
            self.target.max_attempts,
            state.next_action.sleep if state.next_action else 0.0,
        )


def describe(exc: BaseException | None) -> str:
    """The error without its request (whose URL may hold a secret)."""
    if exc is None:
        return "unknown error"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
