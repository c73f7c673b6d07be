"""End to end on the embedded defaults (what `make run` uses): `pulse generate` into the
local log, the bounded flow in its own process, ClickHouse (chDB) checked against an
independent computation of the same seeded traffic."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from operators.synthetic import TrafficGenerator, TrafficProfile
from tests import reference as ref
from tests.conftest import PULSE, ROOT, Store, pulse_env, run_pulse
from tests.e2e.checks import DEFAULT_SEMANTICS, assert_store_matches_truth
from tests.harness import assert_metrics_match, final_metric_rows

SEED, DURATION, RATE, LATE = 11, 240, 30, 0.01
TRAFFIC = [
    "--seed",
    str(SEED),
    "--duration",
    str(DURATION),
    "--rate",
    str(RATE),
    "--late-rate",
    str(LATE),
]


def _truth() -> list:
    profile = TrafficProfile(seed=SEED, duration_s=DURATION, rate=RATE, late_rate=LATE)
    return list(TrafficGenerator(profile).events())


def test_generate_run_bounded_matches_an_independent_computation(home: Path, store: Store) -> None:
    env = pulse_env(home)
    run_pulse(["generate", *TRAFFIC], env)
    result = run_pulse(["run", "--bounded"], env)
    assert "events in" in result.stdout
    events = _truth()
    assert_store_matches_truth(store, events)

    # Replaying the whole log (a second bounded run from the start) changes nothing.
    before = store.rows("SELECT count() FROM {db}.metrics FINAL")
    store.close()
    run_pulse(["run", "--bounded", "--quiet"], env)
    assert store.rows("SELECT count() FROM {db}.metrics FINAL") == before
    assert_store_matches_truth(store, events, replayed=True)


def test_generate_is_deterministic_for_a_seed(tmp_path: Path, home: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    env = pulse_env(home)
    run_pulse(["generate", "--to", "file", "--out", str(a), *TRAFFIC], env)
    run_pulse(["generate", "--to", "file", "--out", str(b), *TRAFFIC], env)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes().splitlines() == [e.line for e in _truth()]


def test_load_a_file_then_run(tmp_path: Path, home: Path, store: Store) -> None:
    file = tmp_path / "events.jsonl"
    env = pulse_env(home)
    run_pulse(["generate", "--to", "file", "--out", str(file), *TRAFFIC], env)
    run_pulse(["load", str(file)], env)
    run_pulse(["run", "--bounded", "--quiet"], env)
    assert_store_matches_truth(store, _truth())


def test_an_unbounded_replay_under_pressure_gives_the_bounded_numbers(
    home: Path, store: Store
) -> None:
    """The same log read live, not bounded, with a 20 ms idle timeout, tiny reads and a
    sink that holds the worker often: the worker is away from each partition longer than
    the idle timeout while a backlog waits. Nothing may take that for quiet streams:
    every event is joined and flagged late exactly as computed, every window the run
    closed holds the computed values. (Before sources had to be caught up to be idle,
    this run joined or flagged 2,508 of the 5,903 feedback events differently.)"""
    settings = {
        "PULSE_TIME_IDLE_TIMEOUT": "20ms",
        "PULSE_SOURCE_READ_BYTES": "4096",
        "PULSE_TIME_EMIT_INTERVAL": "200ms",
        # A sink that holds the worker often: small blocks, little room for pending rows
        # (rows being inserted count too: with 1000 the run is held ~80 % of the time and
        # cannot read the log in 25 s on a busy machine).
        "PULSE_CLICKHOUSE_INSERT_BLOCK_ROWS": "500",
        "PULSE_CLICKHOUSE_MAX_PENDING_ROWS": "5000",
    }
    env = pulse_env(home, **settings)
    run_pulse(["generate", *TRAFFIC], env)
    valid = [(e.stream, e.key, e.line) for e in _truth() if e.invalid is None]
    expected = ref.compute(valid, DEFAULT_SEMANTICS)
    _run_live_until_read(env, len(expected.events))

    events = {
        r[0]: r[1:] for r in store.rows("SELECT event_id, joined, late FROM {db}.events FINAL")
    }
    assert set(events) == set(expected.events), "the run should have read the whole log"
    wrong = [i for i, want in expected.events.items()
             if (bool(events[i][0]), bool(events[i][1])) != (want["joined"], want["late"])]  # fmt: skip
    assert not wrong, f"{len(wrong)} events joined or flagged late differently, e.g. {wrong[:3]}"

    rows = store.dicts(
        "SELECT * REPLACE (toUnixTimestamp64Milli(window_start) AS window_start) "
        "FROM {db}.metrics FINAL WHERE final = 1"
    )
    closed = final_metric_rows(rows)
    assert len(closed) > 100, "the idle timeout should have closed most windows"
    all_expected = ref.expected_rows(expected, DEFAULT_SEMANTICS)
    assert_metrics_match(closed, {key: all_expected[key] for key in closed})


def _run_live_until_read(env: dict[str, str], feedback: int, settle_s: float = 5.0) -> None:
    """`pulse run` live until its `events` table holds `feedback` events (asked through
    the running service), then `settle_s` more for the idle timeout to close windows, then
    Ctrl-C. A fixed duration failed on a slow machine: how long reading takes is not what
    the test is about."""
    process = subprocess.Popen([*PULSE, "run", "--duration", "240", "--quiet"], env=env,
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        count = "SELECT count() AS n FROM (SELECT DISTINCT event_id FROM pulse.events)"
        while process.poll() is None:
            time.sleep(3)
            if not (Path(env["PULSE_HOME"]) / "service.json").exists():
                continue
            asked = run_pulse(["query", "--all-tenants", "--sql", count, "--format", "json"],
                              env, timeout=60, check=False)  # fmt: skip
            if asked.returncode == 0 and json.loads(asked.stdout)[0]["n"] >= feedback:
                time.sleep(settle_s)
                break
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
