"""`pulse silence add/list/expire` through the real command on a temp home: on its own,
and while a flow holds the embedded store (answered by its service, /v1/silences)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import PULSE, ROOT, pulse_env, run_pulse


def _listed(env: dict[str, str], *options: str) -> list[dict]:
    return json.loads(run_pulse(["silence", "list", "--format", "json", *options], env).stdout)


def _round_trip(env: dict[str, str]) -> None:
    before = time.time() * 1000
    added = run_pulse(
        ["silence", "add", "--match", "rule=accuracy-floor", "--match", "model_id=m1",
         "--match", "model_id=m2", "--for", "2h", "--comment", "canary rollout"], env,
    )  # fmt: skip
    silence_id = added.stdout.strip()
    assert silence_id and "active until" in added.stderr

    (listed,) = _listed(env)
    assert listed["id"] == silence_id and listed["active"] is True
    assert listed["matchers"] == {"rule": "accuracy-floor", "model_id": ["m1", "m2"]}
    assert listed["comment"] == "canary rollout"
    # The expiry is absolute: two hours after the command ran.
    assert before + 2 * 3_600_000 <= listed["until_ms"] <= time.time() * 1000 + 2 * 3_600_000

    run_pulse(["silence", "expire", silence_id], env)
    assert _listed(env) == []
    (ended,) = _listed(env, "--all")
    assert ended["id"] == silence_id and ended["active"] is False
    assert ended["until_ms"] <= time.time() * 1000


def test_add_list_expire_round_trip(home: Path) -> None:
    _round_trip(pulse_env(home))


def test_bad_options_exit_2_naming_them(home: Path) -> None:
    env = pulse_env(home)
    cases = {
        ("add", "--match", "model_id", "--for", "1h"): "--match takes dim=value",
        ("add", "--match", "model_id=m1", "--for", "soon"): "--for takes a positive duration",
        ("add", "--for", "1h"): "at least one --match",
        ("expire", "0123abcd"): "no silence with id '0123abcd'",
    }
    for args, message in cases.items():
        result = run_pulse(["silence", *args], env, check=False)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_round_trip_while_a_flow_holds_the_store(home: Path) -> None:
    env = pulse_env(home, PULSE_TIME_EMIT_INTERVAL="250ms")
    run_pulse(["generate", "--seed", "1", "--duration", "20", "--rate", "20"], env)
    flow = subprocess.Popen(
        [*PULSE, "run", "--quiet", "--no-recovery"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (home / "service.json").exists():
            assert flow.poll() is None, flow.communicate()
            assert time.monotonic() < deadline, "the flow never served queries"
            time.sleep(0.5)
        _round_trip(env)
        assert flow.poll() is None  # answered by the running flow, which holds the store
    finally:
        flow.send_signal(signal.SIGINT)
        try:
            flow.wait(60)
        except subprocess.TimeoutExpired:
            flow.kill()
            flow.wait()
