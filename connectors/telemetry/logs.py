"""Structured log records with stable `event` names (docs/telemetry.md, "Logs").

With ``telemetry.log_format: json`` each becomes one JSON line whose fields are the
``extra`` given here; in the human format the message reads as before. Secrets never
reach them: DSNs go through :func:`connectors.redact.mask_dsn`, API keys are named, not
shown, OTLP headers are left out (and the handler's filter masks whatever slips through).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from config.settings import Settings
from connectors.redact import mask_dsn
from connectors.telemetry.otlp import otlp_endpoint
from operators.batches import TableRows

log = logging.getLogger("pulse")
alerts_log = logging.getLogger("pulse.alerts")

STARTUP = "startup"
ALERT_TRANSITION = "alert_transition"


def startup_summary(settings: Settings) -> dict[str, Any]:
    """What a run starts with, secrets masked."""
    endpoint = otlp_endpoint()
    summary: dict[str, Any] = {
        "home": str(settings.home_dir),
        "log_backend": settings.log.backend,
        "partitions": settings.log.partitions,
        "clickhouse": mask_dsn(settings.clickhouse_dsn),
        "windows": [w.name for w in settings.windows],
        "bounded": settings.run.bounded,
        "recovery": settings.run.recovery,
        "rules": len(settings.rules or []),
        "service": (
            f"{settings.service.host}:{settings.service.port}" if settings.service.enabled else None
        ),
        "api_keys": [k.name for k in settings.service.api_keys],
        "prometheus": settings.telemetry.prometheus,
        "otlp_endpoint": mask_dsn(endpoint) if endpoint else None,
    }
    if settings.log.backend == "kafka":
        summary["kafka"] = settings.kafka.bootstrap_servers
        summary["topic_prefix"] = settings.kafka.topic_prefix
    return summary


def log_startup(settings: Settings) -> None:
    summary = startup_summary(settings)
    text = ", ".join(f"{k}={v}" for k, v in summary.items())
    log.info("starting: %s", text, extra={"event": STARTUP, **summary})


ALERT_ROW_FIELDS = (
    "rule", "state", "previous", "severity", "fingerprint", "episode", "sequence", "window",
    "window_start", "event_time", "tenant", "model_id", "deployment", "model_version",
    "segment", "endpoint", "value", "threshold", "samples", "reason", "muted",
    "idempotency_key",
)  # fmt: skip


def log_alert_rows(_step: str, item: tuple[str, Any]) -> None:
    """An ``op.inspect`` callback for the rules' `alerts` rows: one `alert_transition`
    record per row: the row's identity, state change, dims and reason."""
    rows = item[1]
    if not isinstance(rows, TableRows) or rows.table != "alerts" or not len(rows):
        return
    if not alerts_log.isEnabledFor(logging.INFO):
        return
    columns = {name: rows.columns[name] for name in ALERT_ROW_FIELDS if name in rows.columns}
    for i in range(len(rows)):
        fields = {name: _plain(values[i]) for name, values in columns.items()}
        alerts_log.info(
            "alert %s: %s -> %s (%s)",
            fields.get("rule"),
            fields.get("previous"),
            fields.get("state"),
            fields.get("reason"),
            extra={"event": ALERT_TRANSITION, **fields},
        )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        return _finite(value)
    return value
