"""Faults injected into real processes: SIGKILL mid-run, a Kafka broker restart, a
ClickHouse outage, poison input, damaged or mismatched recovery stores."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from connectors.clickhouse import Target, connect
from tests.conftest import PULSE, ROOT, pulse_env, run_pulse

# Frequent, small epochs so that kills land between committed snapshots.
FAST_SNAPSHOTS = {"PULSE_RUN_SNAPSHOT_INTERVAL": "1s", "PULSE_SOURCE_READ_BYTES": "131072",
                  "PULSE_KAFKA_CONSUMER_BATCH_SIZE": "500"}  # fmt: skip
COMPARED = {
    "metrics": "SELECT * EXCEPT (version) FROM {db}.metrics FINAL",
    "metrics_classes": "SELECT * EXCEPT (version) FROM {db}.metrics_classes FINAL",
    "metrics_preferences": "SELECT * EXCEPT (version) FROM {db}.metrics_preferences FINAL",
    "metrics_reports": "SELECT * EXCEPT (version) FROM {db}.metrics_reports FINAL",
    "metrics_late": "SELECT * FROM {db}.metrics_late FINAL",
    "sessions": "SELECT * FROM {db}.sessions FINAL",
    "inferences": "SELECT * FROM {db}.inferences FINAL",
    "events": "SELECT * FROM {db}.events FINAL",
    "dead_letters": "SELECT * EXCEPT (received_at) FROM {db}.dead_letters FINAL",
}


def table_contents(home: Path) -> dict[str, list[str]]:
    client = connect(Target(f"chdb://{home / 'olap'}", "pulse"))
    try:
        return {t: sorted(repr(r) for r in client.query(sql.replace("{db}", "pulse")).result_rows)
                for t, sql in COMPARED.items()}  # fmt: skip
    finally:
        client.close()


def differences(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, int]:
    return {t: len(set(a[t]) ^ set(b[t])) + abs(len(a[t]) - len(b[t])) for t in a}


@pytest.mark.kafka
@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    seed = int(os.environ.get("PULSE_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    print(f"crash test seed {seed} (PULSE_CRASH_SEED={seed} reproduces the kill points)")
    kafka = {"PULSE_LOG_BACKEND": "kafka", "PULSE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
             "PULSE_KAFKA_TOPIC_PREFIX": topic_prefix, **FAST_SNAPSHOTS}  # fmt: skip
    steady, crashed = tmp_path / "steady", tmp_path / "crashed"
    steady.mkdir()
    crashed.mkdir()
    run_pulse(["generate", "--to", "kafka", "--seed", str(seed % 1000), "--duration", "1200", "--rate", "90",
               "--late-rate", "0.01"], pulse_env(steady, **kafka))  # fmt: skip

    started = time.monotonic()
    run_pulse(["run", "--bounded", "--quiet"], pulse_env(steady, **kafka), timeout=600)
    uninterrupted = time.monotonic() - started

    env = pulse_env(crashed, **kafka)
    kills = resumes = 0
    while kills < 5:
        process = subprocess.Popen([*PULSE, "run", "--bounded", "--quiet"], env=env, cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        # After start-up (~3 s), early enough that a resumed run has not finished yet.
        time.sleep(3.0 + rng.uniform(0.03, 0.15) * uninterrupted)
        if process.poll() is not None:  # finished before the kill: start over is not needed
            break
        process.send_signal(signal.SIGKILL)
        _, errors = process.communicate(timeout=60)
        resumes += errors.count("resumed:")
        kills += 1
    final = run_pulse(["run", "--bounded", "--quiet"], env, timeout=600)
    resumes += final.stderr.count("resumed:")

    a, b = table_contents(steady), table_contents(crashed)
    diff = differences(a, b)
    rows = sum(len(v) for v in a.values())
    report = {"seed": seed, "kills": kills, "partition_resumes": resumes, "rows_compared": rows,
              "differences": sum(diff.values()), "by_table": diff}  # fmt: skip
    print("crash test:", json.dumps(report))
    assert kills >= 5, f"the run finished before 5 kills ({kills}); make the input larger"
    assert resumes > 0, "no kill landed after a committed snapshot: resume was not exercised"
    assert all(len(v) for v in a.values()), "every compared table should have rows"
    assert diff == dict.fromkeys(COMPARED, 0), report
