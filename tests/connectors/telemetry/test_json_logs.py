"""JSON log lines: a stable shape, stable event names, no secret; `auto` is JSON when
stderr is not a terminal. Run in a child process: logging is configured once per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, pulse_env

PASSWORD = "hunter2-db-password"
API_KEY = "pk_" + "Z" * 43
OTLP_TOKEN = "otlp-header-token-9"

CHILD = f"""
import logging, sys
from config.settings import load_settings
from connectors.console import configure_logging
from connectors.telemetry.logs import log_alert_rows, log_startup
from operators.rules.alert_rows import alert_rows
from operators.rules.alerts import AlertState, Severity, Transition

configure_logging(False, sys.argv[1])
log_startup(load_settings())
logging.getLogger("pulse.service").info("local key %s, sent as Bearer %s", "{API_KEY}", "{API_KEY}")
try:
    raise RuntimeError("cannot reach http://u:{PASSWORD}@db:8123")
except RuntimeError:
    logging.getLogger("pulse.clickhouse").exception("insert failed")
transition = Transition(
    rule="acc", fingerprint="f1", episode=7, state=AlertState.FIRING,
    previous=AlertState.PENDING, severity=Severity.ERROR, window="1m", window_start=0,
    window_end=60000, event_time=60000, dims=(("model_id", "m"),), value=0.5,
    threshold=0.8, samples=40, baseline_samples=None, reason="accuracy 0.5 < 0.8",
)
log_alert_rows("alert_log", ("alerts", alert_rows([transition], set(), ())))
logging.getLogger("pulse.x").info(
    "extra fields", extra={{"event": "x", "dsn": "http://u:{PASSWORD}@db", "auth": "BEARER {OTLP_TOKEN}"}}
)
"""


def run_child(home: Path, log_format: str) -> list[str]:
    env = pulse_env(
        home,
        PULSE_CLICKHOUSE_DSN=f"http://pulse:{PASSWORD}@127.0.0.1:8123",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1",
        OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer%20{OTLP_TOKEN}",
    )
    result = subprocess.run(
        [sys.executable, "-c", CHILD, log_format],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return result.stderr.splitlines()


def test_json_lines_have_a_stable_shape_and_no_secret(home: Path) -> None:
    lines = run_child(home, "auto")  # stderr is a pipe: JSON
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == ["startup", "log", "log", "alert_transition", "x"]
    for r in records:
        assert list(r)[:5] == ["ts", "level", "logger", "event", "message"]
    startup = records[0]
    assert startup["logger"] == "pulse" and startup["level"] == "INFO"
    assert startup["clickhouse"] == "http://pulse:***@127.0.0.1:8123"
    assert startup["otlp_endpoint"] == "http://127.0.0.1:1"
    assert records[1]["message"] == "local key pk_***, sent as Bearer ***"
    assert "http://u:***@db:8123" in records[2]["exception"]
    transition = records[3]
    assert transition["rule"] == "acc" and transition["state"] == "firing"
    assert transition["model_id"] == "m" and transition["value"] == 0.5
    assert records[4]["dsn"] == "http://u:***@db" and records[4]["auth"] == "BEARER ***"
    text = "\n".join(lines)
    for secret in (PASSWORD, API_KEY, OTLP_TOKEN):
        assert secret not in text


def test_the_human_format_masks_too(home: Path) -> None:
    lines = run_child(home, "human")
    text = "\n".join(lines)
    assert not text.startswith("{") and "INFO pulse: starting: " in text
    for secret in (PASSWORD, API_KEY, OTLP_TOKEN):
        assert secret not in text
