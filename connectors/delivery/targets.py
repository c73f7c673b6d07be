"""Where a notification goes and how: one named target of the `notify:` map, as the
delivery connector takes it.

A plain frozen dataclass, not the pydantic settings: the config schema validates the
YAML and converts each entry to this type (resolving `secret_env` to the secret itself),
so delivery does not depend on how settings are read. The checks here are the ones the
sender relies on, named by field, so a target built by hand fails early too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NoReturn

from operators.errors import PulseError


class DeliveryFormat(StrEnum):
    STANDARD = "standard"  # generic JSON signed per the Standard Webhooks spec
    SLACK = "slack"  # Slack incoming webhook: text + blocks
    PAGERDUTY = "pagerduty"  # PagerDuty Events API v2: one event per transition


class InvalidTargetError(PulseError):
    """A delivery target cannot be used as given; the message names the target and field."""


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """One notification target with its transport and retry settings."""

    name: str
    url: str
    format: DeliveryFormat = DeliveryFormat.STANDARD
    secret: str | None = field(default=None, repr=False)  # standard: the whsec_... secret
    routing_key: str | None = field(default=None, repr=False)  # pagerduty: integration key
    timeout_s: float = 10.0  # per attempt: connect, read, write and pool
    max_attempts: int = 5  # attempts in all, the first included
    backoff_initial_s: float = 0.5  # full-jitter exponential backoff: random in [0, b·2^n]
    backoff_max_s: float = 30.0  # cap of one backoff wait
    retry_after_max_s: float = 60.0  # cap on honouring a receiver's Retry-After

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", self._checked_format())
        if not self.url.startswith(("http://", "https://")):
            self._fail("url", f"{self.url!r} is not an http(s) URL")
        if self.format is DeliveryFormat.STANDARD and not self.secret:
            self._fail("secret", "format standard signs every request and needs a secret")
        if self.format is DeliveryFormat.PAGERDUTY and not self.routing_key:
            self._fail("routing_key", "format pagerduty needs the integration's routing key")
        if self.max_attempts < 1:
            self._fail("max_attempts", f"{self.max_attempts} is below 1")
        for name in ("timeout_s", "backoff_initial_s", "backoff_max_s", "retry_after_max_s"):
            if not getattr(self, name) >= 0:
                self._fail(name, f"{getattr(self, name)} is negative")
        if self.timeout_s == 0:
            self._fail("timeout_s", "0 would fail every request")

    def _checked_format(self) -> DeliveryFormat:
        try:
            return DeliveryFormat(self.format)
        except ValueError:
            choices = " | ".join(f.value for f in DeliveryFormat)
            self._fail("format", f"{self.format!r} is not one of {choices}")

    def _fail(self, field_name: str, problem: str) -> NoReturn:
        raise InvalidTargetError(f"invalid notify target {self.name}.{field_name}: {problem}")
