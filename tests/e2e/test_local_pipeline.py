"""End to end on the embedded defaults (what `make run` uses): `pulse generate` into the
local log, the bounded flow in its own process, ClickHouse (chDB) checked against an
independent computation of the same seeded traffic."""

from __future__ import annotations

from pathlib import Path

from operators.synthetic import TrafficGenerator, TrafficProfile
from tests.conftest import Store, pulse_env, run_pulse
from tests.e2e.checks import assert_store_matches_truth

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
