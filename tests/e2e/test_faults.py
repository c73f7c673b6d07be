"""Faults injected into real processes: SIGKILL mid-run, a Kafka broker restart, a
ClickHouse outage, poison input, damaged or mismatched recovery stores."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

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


def _dead_letter_positions(home: Path) -> set[tuple[str, int, int]]:
    client = connect(Target(f"chdb://{home / 'olap'}", "pulse"))
    try:
        sql = "SELECT topic, partition, offset FROM pulse.dead_letters FINAL"
        return {(t, int(p), int(o)) for t, p, o in client.query(sql).result_rows}
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
    run_pulse(["generate", "--to", "kafka", "--seed", str(seed % 1000), "--duration", "1800", "--rate", "90",
               "--late-rate", "0.01"], pulse_env(steady, **kafka))  # fmt: skip

    started = time.monotonic()
    run_pulse(["run", "--bounded", "--quiet"], pulse_env(steady, **kafka), timeout=600)
    uninterrupted = time.monotonic() - started

    env = pulse_env(crashed, **kafka)
    kills = resumes = discarded = 0
    while kills < 5:
        process = subprocess.Popen([*PULSE, "run", "--bounded", "--quiet"], env=env, cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        # After start-up (~3 s), early enough that a resumed run has not finished yet: a
        # resumed run starts faster and processes part of those 3 s too, so five kills
        # at up to 0.15 of the run each could reach its end (seeds 484770, 385212).
        time.sleep(3.0 + rng.uniform(0.02, 0.08) * uninterrupted)
        if process.poll() is not None:  # finished before the kill: start over is not needed
            break
        process.send_signal(signal.SIGKILL)
        _, errors = process.communicate(timeout=60)
        resumes += errors.count("resumed:")
        discarded += _discarded_snapshots(errors)
        kills += 1
    final = run_pulse(["run", "--bounded", "--quiet"], env, timeout=600)
    resumes += final.stderr.count("resumed:")
    discarded += _discarded_snapshots(final.stderr)

    a, b = table_contents(steady), table_contents(crashed)
    diff = differences(a, b)
    rows = sum(len(v) for v in a.values())
    # The dead-letter topic is at least once: the steady run produced every position once,
    # the crashed runs must have produced each at least once more.
    from tests.e2e.test_kafka_pipeline import _read_topic

    produced = Counter(
        (d["topic"], d["partition"], d["offset"])
        for d in map(json.loads, _read_topic(kafka_bootstrap, f"{topic_prefix}.dead-letters", 4))
    )
    stored = _dead_letter_positions(crashed)
    lost = sorted(p for p in stored if produced[p] < 2)
    report = {"seed": seed, "kills": kills, "partition_resumes": resumes,
              "uncommitted_snapshots_discarded": discarded, "rows_compared": rows,
              "differences": sum(diff.values()), "by_table": diff,
              "dead_letter_topic_lost": len(lost),
              "dead_letter_topic_replayed": sum(produced.values()) - 2 * len(stored)}  # fmt: skip
    print("crash test:", json.dumps(report))
    assert kills >= 5, f"the run finished before 5 kills ({kills}); make the input larger"
    assert resumes > 0, "no kill landed after a committed snapshot: resume was not exercised"
    assert all(len(v) for v in a.values()), "every compared table should have rows"
    assert diff == dict.fromkeys(COMPARED, 0), report
    assert stored and not lost, f"dead letters missing from the topic: {lost[:5]}"


def _discarded_snapshots(log: str) -> int:
    """Snapshots a killed run wrote but never committed (connectors/recovery.py)."""
    return sum(int(n) for n in re.findall(r"discarded (\d+) snapshots", log))


# ---- broker restart ---------------------------------------------------------------------

KAFKA_SCRIPT = [sys.executable, str(ROOT / "scripts" / "local_kafka.py")]


def _broker(command: str, port: int, *extra: str) -> None:
    subprocess.run([*KAFKA_SCRIPT, command, "--port", str(port), *extra], check=True, timeout=600,
                   capture_output=True)  # fmt: skip


@pytest.mark.kafka
@pytest.mark.slow
def test_a_broker_restart_mid_run_is_waited_out_and_loses_nothing(
    tmp_path: Path, topic_prefix: str
) -> None:
    from operators.synthetic import TrafficGenerator, TrafficProfile
    from tests.conftest import Store
    from tests.e2e.checks import assert_store_matches_truth

    port = 19592  # a broker of its own: stopping it must not disturb other tests
    _broker("start", port, "--fresh")
    home = tmp_path / "home"
    home.mkdir()
    try:
        env = pulse_env(home, PULSE_LOG_BACKEND="kafka", PULSE_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
                        PULSE_KAFKA_TOPIC_PREFIX=topic_prefix, **FAST_SNAPSHOTS)  # fmt: skip
        profile = TrafficProfile(seed=31, duration_s=700, rate=90, late_rate=0.01)
        run_pulse(["generate", "--to", "kafka", "--seed", "31", "--duration", "700", "--rate", "90",
                   "--late-rate", "0.01"], env)  # fmt: skip
        # Small fetches and a small prefetch queue, so the consumer really needs the broker
        # during the outage (by default librdkafka would have fetched this whole test's data).
        small_prefetch = {"queued.max.messages.kbytes": "64", "queued.min.messages": "100",
                          "max.partition.fetch.bytes": "16384", "fetch.max.bytes": "65536",
                          "message.max.bytes": "65536"}  # fmt: skip
        env_run = {**env, "PULSE_KAFKA_CLIENT_CONFIG": json.dumps(small_prefetch),
                   "PULSE_RUN_STATUS_INTERVAL": "200"}  # fmt: skip
        errors = (tmp_path / "run.err").open("w")
        process = subprocess.Popen([*PULSE, "run", "--bounded"], env=env_run, cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=errors, text=True)  # fmt: skip
        assert process.stdout is not None
        for line in process.stdout:  # the status line: stop the broker once events flow
            if "events in" in line and "events in 0 " not in line:
                break
        drain = threading.Thread(target=process.stdout.read, daemon=True)
        drain.start()
        _broker("stop", port)
        time.sleep(8)
        assert process.poll() is None, "the flow must wait for the broker, not exit"
        _broker("start", port)
        assert process.wait(timeout=600) == 0
        log = (tmp_path / "run.err").read_text()
        # Whichever notices first says so (the source's consumer, or the dead-letter sink,
        # whose flush at a snapshot holds the worker), and says when it goes on.
        assert "(waiting for the broker)" in log or "waiting for the broker to acknowledge" in log
        assert "consuming again" in log or "the broker acknowledged; going on" in log
        store = Store(home)
        try:
            assert_store_matches_truth(store, list(TrafficGenerator(profile).events()))
        finally:
            store.close()
    finally:
        _broker("stop", port)


# ---- poison input ----------------------------------------------------------------------------


def _poison() -> list[tuple[bytes, str]]:
    rng = random.Random(7)
    noise = [bytes(b for b in rng.randbytes(200) if b != 10) for _ in range(3)]
    base = {"type": "feedback", "event_id": "p", "request_id": "req-poison", "ts": 1_767_225_700_000,
            "kind": "rating", "value": 4, "user_id": "u"}  # fmt: skip
    return [
        *((n, "malformed_json") for n in noise),
        (json.dumps(base).encode()[:-9], "malformed_json"),  # truncated
        (
            b'{"type": "feedback", "event_id": "p2", "request_id": "r", "ts": 1767225700000, "kind": "reward", "value": NaN, "user_id": "u"}',
            "malformed_json",
        ),
        (
            b'{"type": "inference", "request_id": "r", "ts": 1767225700000, "model_id": "m", "model_version": "v", "endpoint": "e", "confidence": Infinity}',
            "malformed_json",
        ),
        (b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "oversize"),
        (b'{"type": "feedback", "x": "' + b"A" * 10_000_000 + b'"}', "oversize"),  # 10 MB
        (json.dumps({**base, "event_id": "p3", "value": "five"}).encode(), "invalid"),
        (json.dumps({**base, "event_id": "p4", "kind": "confetti"}).encode(), "invalid"),
        (json.dumps({**base, "event_id": "p5", "user_id": 42}).encode(), "invalid"),
        (
            json.dumps({**base, "event_id": "p6", "ts": "1000-01-01T00:00:00Z"}).encode(),
            "ts_out_of_range",
        ),
        (
            json.dumps({**base, "event_id": "p7", "ts": "3000-01-01T00:00:00Z"}).encode(),
            "ts_out_of_range",
        ),
        (json.dumps({**base, "event_id": "p8", "ts": -5}).encode(), "ts_out_of_range"),
        (json.dumps([base]).encode(), "not_object"),
    ]


def _with_poison(backend: str, env: dict[str, str], tmp_path: Path) -> list[Any]:
    from connectors.event_writer import route
    from operators.synthetic import GeneratedEvent, TrafficGenerator, TrafficProfile

    events = list(
        TrafficGenerator(TrafficProfile(seed=41, duration_s=240, rate=30, late_rate=0.01)).events()
    )
    poison = [
        GeneratedEvent(0, *route(line)[:2], line, invalid=category) for line, category in _poison()
    ]
    step = len(events) // (len(poison) + 1)
    mixed = []
    for i, event in enumerate(events):
        mixed.append(event)
        if i % step == step - 1 and poison:
            mixed.append(poison.pop())
    file = tmp_path / "mixed.jsonl"
    file.write_bytes(b"".join(e.line + b"\n" for e in mixed))
    run_pulse(["load", str(file), "--to", backend], env)
    return mixed


@pytest.mark.parametrize("backend", ["log", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_poison_input_goes_to_dead_letters_and_nothing_else_changes(
    backend: str, tmp_path: Path, request: Any
) -> None:
    from tests.conftest import Store
    from tests.e2e.checks import assert_store_matches_truth

    home = tmp_path / "home"
    home.mkdir()
    settings = {"PULSE_VALIDATION_MAX_EVENT_BYTES": "65536"}
    if backend == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        settings.update(PULSE_LOG_BACKEND="kafka", PULSE_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                        PULSE_KAFKA_TOPIC_PREFIX=request.getfixturevalue("topic_prefix"))  # fmt: skip
    env = pulse_env(home, **settings)
    mixed = _with_poison(backend, env, tmp_path)
    run_pulse(["run", "--bounded", "--quiet"], env, timeout=600)
    store = Store(home)
    try:
        assert_store_matches_truth(store, mixed)
        sizes = dict(
            store.rows(
                "SELECT raw_size, length(raw) FROM {db}.dead_letters FINAL WHERE raw_size > 1000000"
            )
        )
        assert sizes == {
            10_000_029: 1 << 20
        }  # the 10 MB event: kept whole in the log, 1 MiB stored
        reasons = [r[0] for r in store.rows("SELECT reason FROM {db}.dead_letters FINAL")]
        assert all(reasons)
    finally:
        store.close()


# ---- ClickHouse outage -----------------------------------------------------------------


@pytest.mark.slow
def test_a_clickhouse_outage_is_retried_with_backpressure_and_loses_nothing(
    tmp_path: Path,
) -> None:
    from operators.synthetic import TrafficGenerator, TrafficProfile
    from tests.conftest import Store
    from tests.e2e.checks import assert_store_matches_truth

    home = tmp_path / "home"
    home.mkdir()
    max_pending = 5000
    env = pulse_env(home, PULSE_CLICKHOUSE_MAX_PENDING_ROWS=str(max_pending),
                    PULSE_CLICKHOUSE_RETRY_BACKOFF_MAX="1s", **FAST_SNAPSHOTS)  # fmt: skip
    profile = TrafficProfile(seed=53, duration_s=900, rate=90, late_rate=0.01)
    run_pulse(["generate", "--to", "log", "--seed", "53", "--duration", "900", "--rate", "90",
               "--late-rate", "0.01"], env)  # fmt: skip
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.flaky_sink", str(report_file), "8", "--",
         "run", "--bounded", "--quiet"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_file.read_text())
    print(report)
    assert report["failed_inserts"] >= 3, "the outage should have lasted several retries"
    assert "retrying in" in done.stderr and "ClickHouse writes resumed after" in done.stderr
    # Backpressure: the sink never held more than its bound (plus one hand-over), and the
    # sources stopped reading while writes failed.
    assert report["max_buffered_rows"] <= max_pending + report["largest_handover"]
    read_during_outage = report["events_in_at_outage_end"] - report["events_in_at_outage_start"]
    assert read_during_outage < report["events_in_total"] / 4, report
    store = Store(home)
    try:
        assert_store_matches_truth(store, list(TrafficGenerator(profile).events()))
    finally:
        store.close()


# ---- damaged or mismatched recovery store ------------------------------------------------


def _digests(directory: Path) -> dict[str, str]:
    """The store's files; not its lock file, which names the last run that held it."""
    import hashlib

    from connectors.recovery import LOCK_FILE

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.name != LOCK_FILE}  # fmt: skip


@pytest.mark.slow
def test_a_mismatched_or_damaged_recovery_store_stops_the_run_and_is_left_untouched(
    tmp_path: Path,
) -> None:
    """`pulse run` and `python -m bytewax.run -r` both refuse a store written by a
    differently-shaped flow or damaged, with what to do, and leave it as it was; the
    unchanged flow resumes it (under Bytewax's own runner) to the right result."""
    from operators.synthetic import TrafficGenerator, TrafficProfile
    from tests.conftest import Store
    from tests.e2e.checks import assert_store_matches_truth

    home = tmp_path / "home"
    home.mkdir()
    recovery = home / "recovery"
    env = pulse_env(home, **FAST_SNAPSHOTS)
    profile = TrafficProfile(seed=61, duration_s=600, rate=60, late_rate=0.01)
    run_pulse(["generate", "--to", "log", "--seed", "61", "--duration", "600", "--rate", "60",
               "--late-rate", "0.01"], env)  # fmt: skip
    run_pulse(["run", "--duration", "4", "--quiet"], env, timeout=300)  # unbounded: store kept
    before = _digests(recovery)
    assert "part-0.sqlite3" in before

    changed = {**env, "PULSE_AGGREGATION_CONFIDENCE_BINS": "20"}
    refused = run_pulse(["run", "--bounded", "--quiet"], changed, check=False)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "confidence_bins: stored 10, now 20" in refused.stderr
    assert "move the directory away" in refused.stderr
    bytewax_run = [sys.executable, "-m", "bytewax.run", "dataflows.feedback:flow",
                   "-r", str(recovery), "-s", "1", "-b", "0"]  # fmt: skip
    refused = subprocess.run(bytewax_run, env=changed, cwd=ROOT, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "confidence_bins: stored 10, now 20" in refused.stderr
    assert _digests(recovery) == before, "a refused start must not touch the store"

    resumed = subprocess.run(bytewax_run, env={**env, "PULSE_RUN_BOUNDED": "true"}, cwd=ROOT,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    store = Store(home)
    try:
        assert_store_matches_truth(store, list(TrafficGenerator(profile).events()))
    finally:
        store.close()

    part = recovery / "part-0.sqlite3"
    data = bytearray(part.read_bytes())
    data[4096:8192] = b"\xa5" * 4096
    part.write_bytes(bytes(data))
    damaged = _digests(recovery)
    refused = run_pulse(["run", "--bounded", "--quiet"], env, check=False)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "is damaged: part-0.sqlite3" in refused.stderr
    assert _digests(recovery) == damaged
