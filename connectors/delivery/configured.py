"""Delivery targets from the settings: each `notify:` entry (:class:`config.rules.NotifyTarget`)
as the :class:`~connectors.delivery.targets.DeliveryTarget` the outbox sends with, its
secret and routing key read from the environment variables the entry names (checked at
start by the settings: an unset variable has already stopped the start, naming it)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from config.rules import NotifyTarget
from connectors.delivery.targets import DeliveryFormat, DeliveryTarget


def delivery_target(
    name: str, target: NotifyTarget, environ: Mapping[str, str] | None = None
) -> DeliveryTarget:
    env = os.environ if environ is None else environ
    return DeliveryTarget(
        name=name,
        url=target.url,
        format=DeliveryFormat(target.format),
        secret=target.secret(env),
        routing_key=target.routing_key(env),
        timeout_s=target.timeout / 1000.0,
        max_attempts=target.max_attempts,
        backoff_initial_s=target.backoff_initial / 1000.0,
        backoff_max_s=target.backoff_max / 1000.0,
        retry_after_max_s=target.retry_after_max / 1000.0,
    )


def delivery_targets(
    notify: Mapping[str, NotifyTarget], environ: Mapping[str, str] | None = None
) -> dict[str, DeliveryTarget]:
    """Every configured target by name."""
    return {name: delivery_target(name, target, environ) for name, target in notify.items()}
