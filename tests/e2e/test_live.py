"""The unbounded paths: `pulse up` (what `make run` starts) with live traffic, queried
from other processes while it runs; early rows that final rows later replace."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import PULSE, ROOT, Store, pulse_env, run_pulse

LIVE = {
    "PULSE_WINDOWS": '[{"name": "2s", "kind": "tumbling", "length": "2s"}]',
    "PULSE_TIME_MAX_OUT_OF_ORDERNESS": "4s",
    "PULSE_JOIN_WAIT": "1s",
    "PULSE_TIME_EMIT_INTERVAL": "250ms",
}


def _query(env: dict[str, str], sql: str) -> list[dict]:
    return json.loads(
        run_pulse(["query", "--sql", sql, "--format", "json"], env, timeout=60).stdout
    )


def test_pulse_up_serves_queries_and_final_rows_replace_early_ones(
    home: Path, store: Store
) -> None:
    env = pulse_env(home, **LIVE)
    process = subprocess.Popen(
        [*PULSE, "up", "--rate", "40", "--seed", "3"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        early: list[dict] = []
        deadline = time.monotonic() + 60
        while not early and time.monotonic() < deadline:
            time.sleep(1)
            assert process.poll() is None, process.communicate()
            if (home / "service.json").exists():
                early = _query(
                    env,
                    "SELECT window_start, tenant, model_id, deployment, model_version, segment, "
                    "endpoint, version FROM pulse.metrics WHERE final = 0 AND model_version = '*' "
                    "AND segment = '*' AND endpoint = '*' ORDER BY window_start LIMIT 20",
                )
        assert early, "no early (final = 0) rows while the windows were open"
        # Read with the local key (tenant `default`), which the demo's traffic carries.
        assert {r["tenant"] for r in early} == {"default"}
        # The same cells become final a few seconds later, while the process keeps running.
        time.sleep(10)
        keys = {(r["window_start"], r["tenant"], r["model_id"], r["deployment"]) for r in early}
        final = _query(
            env,
            "SELECT window_start, tenant, model_id, deployment, final, version FROM pulse.metrics "
            "FINAL WHERE model_version = '*' AND segment = '*' AND endpoint = '*'",
        )
        by_key = {
            (r["window_start"], r["tenant"], r["model_id"], r["deployment"]): r for r in final
        }
        assert all(by_key[k]["final"] == 1 for k in keys)
        assert min(by_key[k]["version"] for k in keys) > max(r["version"] for r in early)
        # A drill-down through the CLI, answered by the running process (the local key).
        table = run_pulse(
            [
                "query",
                "--metric",
                "feedback_count,accuracy",
                "--by",
                "model_version",
                "--window",
                "2s",
                "--since",
                "10m",
            ],
            env,
        ).stdout
        assert "feedback_count" in table.splitlines()[0] and len(table.splitlines()) > 2
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    assert "events in" in out and "rows written" in out
    assert "local key pk_" in out and "(tenant default: ingest, read, query;" in out
    assert "stopping" in err
    # After it stopped, the same query opens the directory itself.
    assert store.scalar("SELECT count() FROM {db}.metrics FINAL WHERE final = 1") > 0
    assert store.rows("SELECT DISTINCT tenant FROM {db}.inferences") == [("default",)]
    assert not (home / "service.json").exists()


def test_run_for_a_duration_then_exit(home: Path, store: Store) -> None:
    env = pulse_env(home)
    run_pulse(["generate", "--seed", "2", "--duration", "60", "--rate", "20"], env)
    result = run_pulse(["run", "--duration", "4"], env, timeout=120)
    assert "events in" in result.stdout
    # An unbounded run that was stopped writes what it read but does not close windows early.
    assert store.scalar("SELECT count() FROM {db}.inferences FINAL") == 1200
    assert (
        store.scalar("SELECT count() FROM {db}.metrics FINAL WHERE window = '1h' AND final = 1")
        == 0
    )


def test_bad_configuration_fails_at_start_naming_the_field(home: Path) -> None:
    result = run_pulse(["run", "--bounded"], pulse_env(home, PULSE_JOIN_WAIT="later"), check=False)
    assert result.returncode == 2
    assert "join.wait (from PULSE_JOIN_WAIT)" in result.stderr


def test_a_permanent_write_failure_stops_the_flow_with_exit_3_and_the_cause(
    home: Path, store: Store
) -> None:
    env = pulse_env(home)
    run_pulse(["generate", "--seed", "1", "--duration", "30", "--rate", "20"], env)
    run_pulse(["migrate"], env)
    store.open().command("ALTER TABLE pulse.events ADD COLUMN bogus String")
    store.close()
    result = run_pulse(["run", "--bounded", "--quiet"], env, timeout=120, check=False)
    assert result.returncode == 3
    assert "ClickHouse write failed permanently" in result.stderr and "bogus" in result.stderr
