"""Crash safety of alerts and delivery: SIGKILL `pulse run --bounded` at seeded random
points while alert episodes open and close and while deliveries are being retried (the
receiver answers 500 for a while after every start), resume until complete, then the
`alerts` table (FINAL) equals an uninterrupted run's on the same log, and the receiver
accepted each transition's delivery exactly once: a re-send after a crash is only ever
a repeat of a key it already accepted (deduplicated by key, counted and reported).

The local log backend keeps it fast: the rules stage, its snapshots and the outbox are
the same on Kafka."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.recovery import RecoveryStore
from tests.conftest import PULSE, ROOT, Store, pulse_env, run_pulse
from tests.connectors.delivery.receiver import SECRET, Answer, Receiver
from tests.e2e.test_faults import FAST_SNAPSHOTS

# A degrading canary (one rollback episode) and a thumbs-down threshold per segment and
# version that opens and closes episodes all along the log.
TRAFFIC = ["--seed", "23", "--duration", "900", "--rate", "60", "--canary-share", "0.2",
           "--canary-degrade-at", "2026-01-01T00:04:00Z", "--canary-thumbs-down", "0.25"]  # fmt: skip
# Snapshots every 200 ms: the flow reads the log in ~1.5 s, so a kill can land between
# several committed epochs while episodes open and close, not only before the first.
SNAPSHOTS = {**FAST_SNAPSHOTS, "PULSE_RUN_SNAPSHOT_INTERVAL": "200ms"}
FAILURES_PER_START = 30  # the receiver's first answers after each start: 500 (seconds of retries)
KILLS = 4


def _config(path: Path, url: str) -> Path:
    path.write_text(
        f"""
notify:
  ops:
    url: {url}
    format: standard
    secret_env: OPS_WEBHOOK_SECRET
    max_attempts: 100
    backoff_initial: 100ms
    backoff_max: 400ms
alerting:
  group_wait: 30s
rules:
  - name: canary-thumbs-down
    type: canary
    window: 1m
    metric: thumbs_down_rate
    canary: {{deployment: canary}}
    baseline: {{deployment: primary}}
    match: [model_id]
    worse: higher
    margin: 0.0
    alpha: 0.01
    notify: [ops]
    action: rollback
  - name: thumbs-down-high
    type: threshold
    window: 1m
    metric: thumbs_down_rate
    where: {{model_version: "*", segment: "*"}}
    op: ">"
    value: 0.12
    min_samples: 50
    for: 1m
    notify: [ops]
"""
    )
    return path


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    steady, crashed = Receiver().start(), Receiver().start()
    yield steady, crashed
    steady.stop()
    crashed.stop()


def _rows(home: Path, sql: str) -> list[tuple[Any, ...]]:
    store = Store(home)
    try:
        return store.rows(sql)
    finally:
        store.close()


def _alerts(home: Path) -> list[str]:
    return sorted(repr(r) for r in _rows(home, "SELECT * FROM {db}.alerts FINAL"))


def _states(home: Path) -> Counter[str]:
    return Counter(s for (s,) in _rows(home, "SELECT state FROM {db}.alerts FINAL"))


def _notified_keys(home: Path) -> list[str]:
    sql = "SELECT idempotency_key FROM {db}.alerts FINAL WHERE notified"
    return sorted(k for (k,) in _rows(home, sql))


def _deliveries(home: Path) -> list[tuple[Any, ...]]:
    """Each delivery's final outcome (attempts and times differ between runs: left out)."""
    sql = "SELECT target, idempotency_key, transition_keys, status FROM {db}.deliveries FINAL"
    return sorted(_rows(home, sql))


def _first_accepted(receiver: Receiver) -> dict[str, Any]:
    """Each accepted request key's first accepted body."""
    first: dict[str, Any] = {}
    for request in receiver.requests:
        if 200 <= request.answered < 300 and request.key not in first:
            first[request.key] = request.json()
    return first


def _wait_for_500s(receiver: Receiver, process: subprocess.Popen[str], n: int) -> None:
    """Until the receiver answered `n` of this start's 500s, or the process ended."""
    while process.poll() is None:
        with receiver.lock:
            if FAILURES_PER_START - len(receiver.script) >= n:
                return
        time.sleep(0.01)


def _wait_for_a_commit(recovery: Path, process: subprocess.Popen[str]) -> None:
    """Until some start committed a snapshot (the resume epoch is past 1), or the process
    ended: a kill then resumes from written state, not from the beginning, however slowly
    the first start went (a fast flow reads this log in ~1.5 s)."""
    while process.poll() is None:
        try:
            if RecoveryStore(recovery).resume_epoch() > 1:
                return
        except sqlite3.OperationalError:  # tables not created yet, or being written
            pass
        time.sleep(0.02)


def _failing_for_a_while(receiver: Receiver) -> None:
    with receiver.lock:
        receiver.script.clear()
    receiver.answer(*[Answer(500)] * FAILURES_PER_START)


@pytest.mark.slow
def test_sigkill_during_alert_episodes_and_delivery_retries_loses_and_repeats_nothing(
    tmp_path: Path, receivers: tuple[Receiver, Receiver]
) -> None:
    seed = int(os.environ.get("PULSE_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    print(f"alert crash test seed {seed} (PULSE_CRASH_SEED={seed} reproduces the kill points)")
    steady_rx, crashed_rx = receivers
    steady, crashed = tmp_path / "steady", tmp_path / "crashed"
    steady.mkdir()
    crashed.mkdir()
    env_steady = pulse_env(steady, OPS_WEBHOOK_SECRET=SECRET, **SNAPSHOTS)
    env = pulse_env(crashed, OPS_WEBHOOK_SECRET=SECRET, **SNAPSHOTS)
    config_steady = _config(tmp_path / "steady.yaml", steady_rx.url)
    config = _config(tmp_path / "crashed.yaml", crashed_rx.url)
    run_pulse(["generate", *TRAFFIC], env_steady)
    run_pulse(["generate", *TRAFFIC], env)

    _failing_for_a_while(steady_rx)
    started = time.monotonic()
    run_pulse(["--config", str(config_steady), "run", "--bounded", "--quiet"], env_steady)
    uninterrupted = time.monotonic() - started

    kills = resumes = kills_during_retries = 0
    resume_epochs: list[int] = []  # the epoch the next start resumes from, after each kill
    while kills < KILLS:
        _failing_for_a_while(crashed_rx)
        process = subprocess.Popen([*PULSE, "--config", str(config), "run", "--bounded", "--quiet"],
                                   env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        if kills % 2 == 0:  # a seeded point of the run: alert episodes open and close
            _wait_for_a_commit(crashed / "recovery", process)
            time.sleep(rng.uniform(0.05, 0.35) * max(uninterrupted - 3.0, 1.0))
        else:  # during delivery retries: after this start's n-th 500
            _wait_for_500s(crashed_rx, process, rng.randint(1, FAILURES_PER_START - 1))
        if process.poll() is not None:  # finished: the log was too small for the kills
            resumes += process.communicate()[1].count("resumed:")
            break
        with crashed_rx.lock:  # some of this start's 500s answered, not all: retrying
            kills_during_retries += 0 < len(crashed_rx.script) < FAILURES_PER_START
        process.send_signal(signal.SIGKILL)
        _, errors = process.communicate(timeout=60)
        resumes += errors.count("resumed:")
        kills += 1
        resume_epochs.append(RecoveryStore(crashed / "recovery").resume_epoch())
    _failing_for_a_while(crashed_rx)
    final = run_pulse(["--config", str(config), "run", "--bounded", "--quiet"], env, timeout=600)
    resumes += final.stderr.count("resumed:")

    a, b = _alerts(steady), _alerts(crashed)
    notified = _notified_keys(steady)
    states = _states(steady)
    steady_first, crashed_first = _first_accepted(steady_rx), _first_accepted(crashed_rx)
    crashed_transitions = Counter(
        t["idempotency_key"] for body in crashed_first.values() for t in body["transitions"]
    )
    report = {
        "seed": seed,
        "kills": kills,
        "kills_during_retries": kills_during_retries,
        "partition_resumes": resumes,
        "resume_epochs": resume_epochs,
        "uninterrupted_s": round(uninterrupted, 1),
        "alerts_rows": len(a),
        "states": dict(states),
        "alerts_differences": len(set(a) ^ set(b)) + abs(len(a) - len(b)),
        "notified_transitions": len(notified),
        "requests_steady": len(steady_rx.requests),
        "requests_crashed": len(crashed_rx.requests),
        "answered_500_crashed": sum(r.answered == 500 for r in crashed_rx.requests),
        "resent_and_deduplicated": sum(crashed_rx.duplicates.values()),
        "bad_signatures": crashed_rx.bad_signatures,
    }
    print("alert crash test:", json.dumps(report))
    assert kills == KILLS, f"the run finished before {KILLS} kills ({kills}); make the log larger"
    assert max(resume_epochs) > 1, "no kill landed after a committed snapshot: no resume"
    assert kills_during_retries >= KILLS // 2, report
    assert {"pending", "firing", "resolved"} <= set(states), states
    assert a == b, report
    # Every notified transition was accepted exactly once, under one request key, signed;
    # a re-send is only ever a repeat of an accepted key (the receiver's dedup).
    assert crashed_rx.bad_signatures == 0
    assert sorted(crashed_transitions) == notified, report
    assert set(crashed_transitions.values()) == {1}, report
    assert sorted(crashed_first) == sorted(steady_first), report
    assert all(n == 1 for n in crashed_rx.accepted.values())
    # Each delivery's outcome is recorded once, delivered, as in the uninterrupted run.
    outcomes = _deliveries(crashed)
    assert outcomes == _deliveries(steady)
    assert {o[3] for o in outcomes} == {"delivered"}
