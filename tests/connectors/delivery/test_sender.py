"""One delivery over real HTTP to a receiver on 127.0.0.1: signed requests, retries on
5xx and connection errors, Retry-After honoured (and capped), permanent 4xx failures."""

from __future__ import annotations

from connectors.delivery.formats import plan
from connectors.delivery.records import DeliveryOutcome, DeliveryStatus
from connectors.delivery.sender import Sender
from connectors.delivery.targets import DeliveryFormat
from tests.connectors.delivery.factories import notification, target
from tests.connectors.delivery.receiver import Answer, Receiver


def _send(
    receiver: Receiver, fmt: DeliveryFormat = DeliveryFormat.STANDARD, **settings: object
) -> DeliveryOutcome:
    ops = target(receiver.url, fmt, **settings)
    (delivery,), _ = plan(notification(), ops)
    sender = Sender(ops)
    try:
        return sender.send(delivery)
    finally:
        sender.close()


def test_a_signed_request_verifies_and_carries_the_idempotency_key(receiver: Receiver) -> None:
    outcome = _send(receiver)
    assert outcome.status is DeliveryStatus.DELIVERED
    assert (outcome.attempts, outcome.http_status, outcome.error) == (1, 200, None)
    (request,) = receiver.requests
    assert receiver.bad_signatures == 0
    assert request.headers["webhook-id"] == request.key == "accuracy-floor/m1/checkout:1:firing"
    assert request.headers["content-type"] == "application/json"
    assert request.json()["transitions"][0]["rule"] == "accuracy-floor"


def test_a_request_signed_with_another_secret_is_refused_by_the_receiver(
    receiver: Receiver,
) -> None:
    outcome = _send(receiver, secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB")
    assert outcome.status is DeliveryStatus.FAILED
    assert outcome.http_status == 401 and receiver.bad_signatures == 1
    assert not receiver.accepted


def test_500_then_200_is_retried_and_accepted_once(receiver: Receiver) -> None:
    receiver.answer(Answer(500), Answer(502))
    outcome = _send(receiver)
    assert outcome.status is DeliveryStatus.DELIVERED and outcome.attempts == 3
    assert [r.answered for r in receiver.requests] == [500, 502, 200]
    assert len({r.key for r in receiver.requests}) == 1  # every attempt under the same key
    assert list(receiver.accepted.values()) == [1]


def test_429_with_retry_after_waits_as_asked_then_succeeds(receiver: Receiver) -> None:
    # The backoff alone would wait at most 0.05 s: the gap shows Retry-After was honoured.
    receiver.answer(Answer(429, {"Retry-After": "1"}))
    outcome = _send(receiver)
    assert outcome.status is DeliveryStatus.DELIVERED and outcome.attempts == 2
    first, second = receiver.requests
    assert second.at - first.at >= 0.95


def test_retry_after_beyond_the_cap_waits_only_the_cap(receiver: Receiver) -> None:
    receiver.answer(Answer(503, {"Retry-After": "3600"}))
    outcome = _send(receiver, retry_after_max_s=0.1)
    assert outcome.status is DeliveryStatus.DELIVERED and outcome.attempts == 2


def test_a_permanent_400_fails_at_once_with_the_error(receiver: Receiver) -> None:
    receiver.answer(Answer(400, body=b"unknown field 'transitions'"))
    outcome = _send(receiver)
    assert outcome.status is DeliveryStatus.FAILED
    assert (outcome.attempts, outcome.http_status) == (1, 400)
    assert outcome.error == "HTTP 400: unknown field 'transitions'"
    assert len(receiver.requests) == 1


def test_attempts_are_bounded_and_the_last_answer_is_reported(receiver: Receiver) -> None:
    receiver.answer(*(Answer(503) for _ in range(10)))
    outcome = _send(receiver, max_attempts=3)
    assert outcome.status is DeliveryStatus.FAILED
    assert (outcome.attempts, outcome.http_status) == (3, 503)
    assert outcome.error is not None and "gave up after 3 attempts" in outcome.error
    assert len(receiver.requests) == 3


def test_a_receiver_that_is_down_is_retried_then_failed_without_naming_the_url(
    receiver: Receiver,
) -> None:
    receiver.stop()
    outcome = _send(receiver, max_attempts=2)
    assert outcome.status is DeliveryStatus.FAILED
    assert (outcome.attempts, outcome.http_status) == (2, None)
    assert outcome.error is not None and outcome.error.startswith("ConnectError")
    assert str(receiver.port) not in outcome.error


def test_slack_is_sent_unsigned_with_its_body(receiver: Receiver) -> None:
    receiver.secret = None
    outcome = _send(receiver, fmt=DeliveryFormat.SLACK)
    assert outcome.status is DeliveryStatus.DELIVERED
    (request,) = receiver.requests
    assert "webhook-signature" not in request.headers
    assert request.key == "accuracy-floor/m1/checkout:1:firing"
    assert set(request.json()) == {"text", "blocks"}
