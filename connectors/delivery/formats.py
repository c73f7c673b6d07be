"""The three wire formats: what requests a notification becomes for a target, and each
request's body and headers (before signing, which happens per attempt).

* `standard`: one JSON request per notification, a stable body (the same bytes on every
  retry and after a restart) listing every transition with all its fields; signed per
  Standard Webhooks by the sender.
* `slack`: one incoming-webhook request per notification, `text` (the fallback and
  notification line) and `blocks` (one section per transition).
* `pagerduty`: Events API v2, one event per transition: `firing` triggers and `resolved`
  resolves the incident whose `dedup_key` is the alert's fingerprint. `pending` and
  `inconclusive` are not incidents and are not sent (reported as skipped).

Every request carries an `Idempotency-Key` header: the transition's key
(fingerprint:episode:state) or, for a grouped notification, the keys of its transitions
joined by `+` (a SHA-256 of that when it would be longer than `MAX_KEY_CHARS`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from connectors.delivery.records import Delivery
from connectors.delivery.targets import DeliveryFormat, DeliveryTarget
from operators.rules.alerts import AlertState, Notification, Transition

BODY_VERSION = 1
MAX_KEY_CHARS = 200  # longer grouped keys are hashed: some servers cap header sizes
USER_AGENT = "feedback-pulse-delivery/1"
SLACK_MAX_SECTIONS = 45  # Slack allows 50 blocks a message; header and overflow note besides
_PAGERDUTY_ACTIONS = {AlertState.FIRING: "trigger", AlertState.RESOLVED: "resolve"}


@dataclass(frozen=True, slots=True)
class Rendered:
    """A request ready to sign and send."""

    body: bytes
    headers: dict[str, str]


def request_key(notification: Notification) -> str:
    key = notification.idempotency_key
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def plan(
    notification: Notification, target: DeliveryTarget
) -> tuple[tuple[Delivery, ...], tuple[Transition, ...]]:
    """The requests `notification` becomes for `target`, and the transitions the target's
    format does not carry."""
    if target.format is DeliveryFormat.PAGERDUTY:
        sent = tuple(t for t in notification.transitions if t.state in _PAGERDUTY_ACTIONS)
        skipped = tuple(t for t in notification.transitions if t.state not in _PAGERDUTY_ACTIONS)
        deliveries = tuple(
            Delivery(target.name, t.idempotency_key, Notification(notification.target, (t,)))
            for t in sent
        )
        return deliveries, skipped
    if not notification.transitions:
        return (), ()
    return (Delivery(target.name, request_key(notification), notification),), ()


def render(delivery: Delivery, target: DeliveryTarget) -> Rendered:
    """The body and unsigned headers of `delivery` in `target`'s format."""
    if target.format is DeliveryFormat.STANDARD:
        body = standard_body(delivery)
    elif target.format is DeliveryFormat.SLACK:
        body = slack_body(delivery.notification)
    else:
        (transition,) = delivery.notification.transitions
        body = pagerduty_event(transition, target.routing_key or "")
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "idempotency-key": delivery.key,
    }
    return Rendered(encode(body), headers)


def encode(body: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8; the same bytes for the same body."""
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


# ---- standard ------------------------------------------------------------------------


def standard_body(delivery: Delivery) -> dict[str, Any]:
    transitions = delivery.notification.transitions
    return {
        "type": "pulse.alert.transitions",
        "version": BODY_VERSION,
        "idempotency_key": delivery.key,
        "target": delivery.target,
        "timestamp": iso_time(max(t.event_time for t in transitions)),
        "transitions": [transition_fields(t) for t in transitions],
    }


def transition_fields(t: Transition) -> dict[str, Any]:
    """Every field of a transition as JSON (times in epoch ms, dims as an object)."""
    return {
        "idempotency_key": t.idempotency_key,
        "rule": t.rule,
        "fingerprint": t.fingerprint,
        "episode": t.episode,
        "state": t.state.value,
        "previous": t.previous.value,
        "severity": t.severity.value,
        "window": t.window,
        "window_start": t.window_start,
        "window_end": t.window_end,
        "event_time": t.event_time,
        "dims": dict(t.dims),
        "value": finite_or_none(t.value),
        "threshold": finite_or_none(t.threshold),
        "samples": t.samples,
        "baseline_samples": t.baseline_samples,
        "reason": t.reason,
        "targets": list(t.targets),
        "action": t.action,
    }


# ---- slack ---------------------------------------------------------------------------


def slack_body(notification: Notification) -> dict[str, Any]:
    transitions = notification.transitions
    if len(transitions) == 1:
        text = headline(transitions[0])
    else:
        counts: dict[str, int] = {}
        for t in transitions:
            counts[t.state.value] = counts.get(t.state.value, 0) + 1
        text = (
            f"Feedback Pulse: {len(transitions)} alert transitions ("
            + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
            + ")"
        )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(text, 150)}}
    ]
    for t in transitions[:SLACK_MAX_SECTIONS]:
        detail = (
            f"*{t.state.value.upper()}* `{t.rule}` ({t.severity.value}) {dims_text(t)}\n"
            f"{t.reason}\nvalue {t.value} · threshold {t.threshold} · samples {t.samples}"
            f" · window {t.window} [{iso_time(t.window_start)}, {iso_time(t.window_end)})"
        )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": clip(detail, 3000)}})
    hidden = len(transitions) - SLACK_MAX_SECTIONS
    if hidden > 0:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"… and {hidden} more"}]}
        )
    return {"text": text, "blocks": blocks}


# ---- pagerduty -----------------------------------------------------------------------


def pagerduty_event(t: Transition, routing_key: str) -> dict[str, Any]:
    """An Events API v2 event: trigger for `firing`, resolve for `resolved`."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": _PAGERDUTY_ACTIONS[t.state],
        "dedup_key": t.fingerprint,
    }
    if t.state is AlertState.FIRING:
        dims = dict(t.dims)
        model = dims.get("model_id")
        event["payload"] = {
            "summary": clip(headline(t), 1024),
            "severity": t.severity.value,  # PagerDuty's four severities are ours
            "source": f"feedback-pulse/{model}" if model else "feedback-pulse",
            "timestamp": iso_time(t.event_time),
            "component": model,
            "group": t.rule,
            "class": t.window,
            "custom_details": transition_fields(t),
        }
    return event


# ---- shared --------------------------------------------------------------------------


def headline(t: Transition) -> str:
    return f"{t.state.value.upper()} {t.rule} {dims_text(t)}: {t.reason}"


def dims_text(t: Transition) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in t.dims) + "}"


def iso_time(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such a value is sent as null."""
    return value if value is not None and math.isfinite(value) else None


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
