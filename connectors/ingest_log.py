"""Placeholder (owned by the ingestion slice): the durable event log behind POST /v1/*."""

from __future__ import annotations

from config.settings import Settings
from connectors.service.context import DurableLog


def durable_log(settings: Settings) -> DurableLog | None:
    """The configured log as a :class:`DurableLog` (None: ingestion answers 503)."""
    return None
