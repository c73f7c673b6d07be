"""Alert transitions as `alert_transition` records, from the rules' `alerts` rows (what
an `op.inspect` on the rules stage's output hands over)."""

from __future__ import annotations

import logging

import pytest

from connectors.telemetry.logs import log_alert_rows
from operators.batches import TableRows
from operators.rules.alert_rows import alert_rows
from operators.rules.alerts import AlertState, Severity, Transition


def transition(rule: str, state: AlertState, value: float) -> Transition:
    return Transition(
        rule=rule, fingerprint=f"fp-{rule}", episode=1, state=state,
        previous=AlertState.PENDING, severity=Severity.WARNING, window="5m", window_start=0,
        window_end=300_000, event_time=300_000, dims=(("model_id", "m1"), ("tenant", "t")),
        value=value, threshold=0.8, samples=50, baseline_samples=None, reason="low",
    )  # fmt: skip


def test_one_record_per_alerts_row(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pulse.alerts")
    muted = transition("b", AlertState.FIRING, float("nan"))
    rows = alert_rows([transition("a", AlertState.FIRING, 0.5), muted], {muted.idempotency_key}, [])
    log_alert_rows("alert_log", ("alerts", rows))
    log_alert_rows("alert_log", ("metrics", TableRows("metrics", {})))  # not alerts: nothing
    records = [r for r in caplog.records if getattr(r, "event", None) == "alert_transition"]
    assert [(r.rule, r.state, r.muted) for r in records] == [  # type: ignore[attr-defined]
        ("a", "firing", 0),
        ("b", "firing", 1),
    ]
    first, second = records
    assert first.model_id == "m1" and first.tenant == "t"  # type: ignore[attr-defined]
    assert first.value == 0.5 and second.value is None  # type: ignore[attr-defined]
    assert first.getMessage() == "alert a: pending -> firing (low)"
