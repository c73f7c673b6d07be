"""The wire formats and target checks, without the network: the standard body is stable
and complete, Slack and PagerDuty bodies have the shapes their APIs take."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from connectors.delivery.formats import MAX_KEY_CHARS, plan, render
from connectors.delivery.sender import retry_after_seconds
from connectors.delivery.signing import signature_headers
from connectors.delivery.targets import DeliveryFormat, DeliveryTarget, InvalidTargetError
from operators.rules.alerts import AlertState
from tests.connectors.delivery.factories import notification, target, transition
from tests.connectors.delivery.receiver import SECRET

URL = "http://127.0.0.1:9/hooks/pulse"


def test_standard_body_lists_every_field_of_every_transition_and_is_the_same_bytes_each_time() -> (
    None
):
    t1 = transition(segment="checkout")
    t2 = transition(AlertState.RESOLVED, segment="search")
    ops = target(URL)
    (delivery,), skipped = plan(notification(t1, t2), ops)
    assert skipped == ()
    assert delivery.key == f"{t1.idempotency_key}+{t2.idempotency_key}"
    first, again = render(delivery, ops), render(delivery, ops)
    assert first.body == again.body
    assert first.headers["idempotency-key"] == delivery.key
    body = json.loads(first.body)
    assert body["version"] == 1 and body["target"] == "ops"
    assert body["idempotency_key"] == delivery.key
    sent = body["transitions"][0]
    assert sent == {
        "idempotency_key": "accuracy-floor/m1/checkout:1:firing",
        "rule": "accuracy-floor",
        "fingerprint": "accuracy-floor/m1/checkout",
        "episode": 1,
        "state": "firing",
        "previous": "pending",
        "severity": "critical",
        "window": "1m",
        "window_start": 1_700_000_040_000,
        "window_end": 1_700_000_100_000,
        "event_time": 1_700_000_160_000,
        "dims": {"model_id": "m1", "segment": "checkout"},
        "value": 0.71,
        "threshold": 0.8,
        "samples": 412,
        "baseline_samples": None,
        "reason": "accuracy 0.71 < 0.8 over 412 labels for 2m",
        "targets": ["ops"],
        "action": None,
    }
    assert body["transitions"][1]["state"] == "resolved"


def test_a_non_finite_value_is_sent_as_null_not_invalid_json() -> None:
    ops = target(URL)
    t = replace(transition(), value=float("nan"))
    (delivery,), _ = plan(notification(t), ops)
    assert json.loads(render(delivery, ops).body)["transitions"][0]["value"] is None


def test_a_long_grouped_key_is_hashed_to_a_bounded_stable_key() -> None:
    many = notification(*(transition(segment=f"s{i}") for i in range(40)))
    ops = target(URL)
    (delivery,), _ = plan(many, ops)
    (again,), _ = plan(many, ops)
    assert delivery.key.startswith("sha256:") and len(delivery.key) <= MAX_KEY_CHARS
    assert delivery.key == again.key
    assert len(json.loads(render(delivery, ops).body)["transitions"]) == 40


def test_slack_body_has_text_and_a_section_per_transition() -> None:
    slack = target("https://hooks.slack.example/T0/B0/x", DeliveryFormat.SLACK)
    (delivery,), _ = plan(notification(transition(), transition(segment="search")), slack)
    body = json.loads(render(delivery, slack).body)
    assert set(body) == {"text", "blocks"}
    assert "2 alert transitions" in body["text"] and "2 firing" in body["text"]
    assert body["blocks"][0]["type"] == "header"
    sections = [b for b in body["blocks"] if b["type"] == "section"]
    assert len(sections) == 2
    assert "*FIRING* `accuracy-floor`" in sections[0]["text"]["text"]
    assert "segment=search" in sections[1]["text"]["text"]


def test_slack_caps_the_blocks_and_says_how_many_are_hidden() -> None:
    slack = target("https://hooks.slack.example/T0/B0/x", DeliveryFormat.SLACK)
    (delivery,), _ = plan(notification(*(transition(segment=f"s{i}") for i in range(60))), slack)
    blocks = json.loads(render(delivery, slack).body)["blocks"]
    assert len(blocks) <= 50
    assert blocks[-1]["elements"][0]["text"] == "… and 15 more"


def test_pagerduty_sends_one_event_per_firing_or_resolved_transition_and_skips_the_rest() -> None:
    pd = target(URL, DeliveryFormat.PAGERDUTY)
    firing, resolved = transition(), transition(AlertState.RESOLVED)
    pending = transition(AlertState.PENDING, segment="search")
    unsure = transition(AlertState.INCONCLUSIVE, segment="ads")
    deliveries, skipped = plan(notification(firing, pending, resolved, unsure), pd)
    assert skipped == (pending, unsure)
    assert [d.key for d in deliveries] == [firing.idempotency_key, resolved.idempotency_key]
    trigger = json.loads(render(deliveries[0], pd).body)
    assert trigger["routing_key"] == "R0UT1NGKEY"
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == firing.fingerprint
    payload = trigger["payload"]
    assert payload["severity"] == "critical"
    assert payload["source"] == "feedback-pulse/m1"
    assert payload["summary"].startswith("FIRING accuracy-floor {model_id=m1, segment=checkout}")
    assert payload["custom_details"]["idempotency_key"] == firing.idempotency_key
    assert payload["timestamp"] == "2023-11-14T22:16:00.000+00:00"
    resolve = json.loads(render(deliveries[1], pd).body)
    assert resolve == {
        "routing_key": "R0UT1NGKEY",
        "event_action": "resolve",
        "dedup_key": firing.fingerprint,
    }


def test_signature_headers_verify_with_the_reference_implementation() -> None:
    from standardwebhooks.webhooks import Webhook

    body = b'{"a":1}'
    headers = signature_headers(SECRET, "fp:1:firing", body, datetime.now(UTC))
    assert headers["webhook-id"] == "fp:1:firing"
    assert Webhook(SECRET).verify(body, headers) == {"a": 1}


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"url": "ftp://x"}, "ops.url"),
        ({"format": "teams"}, "ops.format"),
        ({"secret": None}, "ops.secret"),
        ({"format": DeliveryFormat.PAGERDUTY, "routing_key": None}, "ops.routing_key"),
        ({"max_attempts": 0}, "ops.max_attempts"),
        ({"backoff_max_s": -1.0}, "ops.backoff_max_s"),
        ({"timeout_s": 0.0}, "ops.timeout_s"),
    ],
)
def test_a_bad_target_fails_naming_the_field(settings: dict[str, object], field: str) -> None:
    values: dict[str, object] = {"url": URL, "format": DeliveryFormat.STANDARD, "secret": SECRET}
    values.update(settings)
    with pytest.raises(InvalidTargetError, match=f"invalid notify target {field}:"):
        DeliveryTarget("ops", **values)  # type: ignore[arg-type]


def test_a_format_given_as_text_becomes_the_enum() -> None:
    assert DeliveryTarget("ops", URL, "slack").format is DeliveryFormat.SLACK  # type: ignore[arg-type]


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2026, 12, 1, 22, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 0.5 ") == 0.5
    assert retry_after_seconds("Tue, 01 Dec 2026 22:00:07 GMT", now) == 7.0
    assert retry_after_seconds("Tue, 01 Dec 2026 21:59:00 GMT", now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
