"""Transitions and notifications as the rules stage will produce them."""

from __future__ import annotations

from typing import Any

from connectors.delivery.targets import DeliveryFormat, DeliveryTarget
from operators.rules.alerts import AlertState, Notification, Severity, Transition
from tests.connectors.delivery.receiver import SECRET

_PREVIOUS = {
    AlertState.PENDING: AlertState.INACTIVE,
    AlertState.FIRING: AlertState.PENDING,
    AlertState.RESOLVED: AlertState.FIRING,
    AlertState.INCONCLUSIVE: AlertState.INACTIVE,
}


def transition(
    state: AlertState = AlertState.FIRING,
    *,
    segment: str = "checkout",
    episode: int = 1,
    rule: str = "accuracy-floor",
) -> Transition:
    return Transition(
        rule=rule,
        fingerprint=f"{rule}/m1/{segment}",
        episode=episode,
        state=state,
        previous=_PREVIOUS[state],
        severity=Severity.CRITICAL,
        window="1m",
        window_start=1_700_000_040_000,
        window_end=1_700_000_100_000,
        event_time=1_700_000_160_000,
        dims=(("model_id", "m1"), ("segment", segment)),
        value=0.71,
        threshold=0.8,
        samples=412,
        baseline_samples=None,
        reason="accuracy 0.71 < 0.8 over 412 labels for 2m",
        targets=("ops",),
    )


def notification(*transitions: Transition, target: str = "ops") -> Notification:
    return Notification(target, transitions or (transition(),))


def target(
    url: str, fmt: DeliveryFormat = DeliveryFormat.STANDARD, **settings: Any
) -> DeliveryTarget:
    defaults: dict[str, object] = {
        "secret": SECRET if fmt is DeliveryFormat.STANDARD else None,
        "routing_key": "R0UT1NGKEY" if fmt is DeliveryFormat.PAGERDUTY else None,
        "timeout_s": 5.0,
        "max_attempts": 4,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "retry_after_max_s": 5.0,
    }
    defaults.update(settings)
    return DeliveryTarget("ops", url, fmt, **defaults)  # type: ignore[arg-type]
