"""Credentials in the ClickHouse DSN and the Kafka client config never reach the terminal,
the log or a repr."""

from __future__ import annotations

from pathlib import Path

from config.settings import load_settings
from dataflows.feedback import clickhouse_target, kafka_target
from tests.conftest import pulse_env, run_pulse

DSN_SECRET = "dsn-s3cret-Pw"
SASL_SECRET = "sasl-s3cret-Pw"
SECRETS = {
    # Nothing listens on port 1: the store and the broker are unreachable, so the
    # commands print their banner and the connection errors, then exit 2.
    "PULSE_CLICKHOUSE_DSN": f"http://pulse:{DSN_SECRET}@127.0.0.1:1/",
    "PULSE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "PULSE_KAFKA_CLIENT_CONFIG": (
        '{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", '
        f'"sasl.username": "pulse", "sasl.password": "{SASL_SECRET}"}}'
    ),
}


def test_no_output_of_a_run_with_credentials_shows_them(home: Path) -> None:
    outputs = []
    for args, extra in [
        (["-v", "up", "--duration", "5"], {}),
        (["-v", "run", "--bounded"], {}),
        (["-v", "run", "--bounded"], {"PULSE_LOG_BACKEND": "kafka"}),
        (["-v", "generate", "--to", "kafka", "--duration", "1"], {}),
        (["-v", "query", "--metric", "feedback_count"], {}),
        (["-v", "migrate"], {}),
    ]:
        result = run_pulse(args, pulse_env(home, **SECRETS, **extra), check=False, timeout=180)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert "Traceback" not in output, output
        outputs.append(output)
    everything = "\n".join(outputs)
    assert "127.0.0.1" in everything  # the errors still say where
    assert "pulse:***@127.0.0.1:1" in everything  # the banner shows the masked DSN
    assert DSN_SECRET not in everything
    assert SASL_SECRET not in everything


def test_targets_and_settings_keep_credentials_out_of_their_repr() -> None:
    settings = load_settings(environ=SECRETS)
    for value in (settings, settings.kafka, clickhouse_target(settings), kafka_target(settings)):
        text = repr(value) + str(value)
        assert DSN_SECRET not in text, text
        assert SASL_SECRET not in text, text
    # The values themselves are still there for the clients.
    assert kafka_target(settings).config()["sasl.password"] == SASL_SECRET
    assert DSN_SECRET in clickhouse_target(settings).dsn
