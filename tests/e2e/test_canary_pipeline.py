"""End to end: the issue's `canary-thumbs-down` rule through `pulse run --bounded` on a
generated log whose canary degrades at a known event time T gives one `rollback` action
(canary version → baseline version) and one webhook episode after T; on the same seed's
log without the degradation, none.

Power, and so the bound on the detection time. The log: 60 inferences/s, 20 % to the
canary, 80 % get thumbs feedback, 10 % thumbs-down on both sides; from T (2 min in) the
canary's thumbs-down is 25 %. A minute after T the canary has ~1,150 + ~580 thumbs, the
primary ~6,900: the estimated excess D̂ ≈ 0.05 with √V ≈ 0.0093, a standardized
statistic ≈ 5.4, well past the α = 0.01 boundary (≈ 3.6–4 standard errors at that sample,
docs/canary-test.md). So the test decides on the 1m windows that end by T + 2 min (the
window holding T + 1 min; feedback trails its inference by ~8 s); the action's event
time (its window's emission) must fall in (T, T + 3 min], a minute of slack for the
feedback delay and the early emissions.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from config.settings import load_settings
from connectors.actions import read_actions
from tests.conftest import Store, pulse_env, run_pulse
from tests.connectors.delivery.receiver import SECRET, Receiver

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the generator's default with a seed
DEGRADE_AT_MS = START_MS + 120_000
BOUND_MS = 180_000  # detection within T + 3 min (module docstring)
TRAFFIC = ["--seed", "11", "--duration", "360", "--rate", "60", "--canary-share", "0.2"]
DEGRADE = ["--canary-degrade-at", "2026-01-01T00:02:00Z", "--canary-thumbs-down", "0.25"]


def canary_config(path: Path, url: str) -> Path:
    """The issue's canary rule, verbatim, notifying `url`."""
    path.write_text(
        f"""
notify:
  ops:
    url: {url}
    format: standard
    secret_env: OPS_WEBHOOK_SECRET
    backoff_initial: 10ms
    backoff_max: 50ms
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
"""
    )
    return path


def _run(home: Path, receiver: Receiver, degrade: bool) -> tuple[list[dict[str, Any]], Any]:
    config = canary_config(home.parent / "rules.yaml", receiver.url)
    env = pulse_env(home, OPS_WEBHOOK_SECRET=SECRET)
    run_pulse(["generate", *TRAFFIC, *(DEGRADE if degrade else [])], env)
    run_pulse(["--config", str(config), "run", "--bounded", "--quiet"], env)
    return read_actions(load_settings(config, env)), config


def _alerts(store: Store) -> list[dict[str, Any]]:
    return store.dicts(
        "SELECT rule, fingerprint, episode, state, model_id, deployment, notified, action, "
        "idempotency_key, value, threshold, toUnixTimestamp64Milli(event_time) AS at "
        "FROM {db}.alerts FINAL ORDER BY at, state"
    )


def _webhook_transitions(receiver: Receiver) -> list[dict[str, Any]]:
    return [t for body in receiver.bodies() for t in body["transitions"]]


def test_a_degrading_canary_is_rolled_back_once_after_it_degrades(
    home: Path, store: Store, receiver: Receiver
) -> None:
    actions, _ = _run(home, receiver, degrade=True)
    alerts = _alerts(store)
    print("canary alerts:", json.dumps(alerts, default=str))

    # One rollback, canary version → baseline version, decided after T and within the bound.
    assert [a["kind"] for a in actions] == ["rollback"], actions
    rollback = actions[0]
    assert rollback["rule"] == "canary-thumbs-down"
    assert rollback["model_id"] == "assistant"
    assert (rollback["from_version"], rollback["to_version"]) == ("2026-02", "2026-01")
    assert DEGRADE_AT_MS < rollback["event_time_ms"] <= DEGRADE_AT_MS + BOUND_MS, rollback
    print("detected after T by", (rollback["event_time_ms"] - DEGRADE_AT_MS) / 1000, "s")

    # The alerts table agrees: one firing transition, the rollback's episode and time.
    firing = [a for a in alerts if a["state"] == "firing"]
    assert len(firing) == 1, alerts
    assert firing[0]["fingerprint"] == rollback["fingerprint"]
    assert firing[0]["episode"] == rollback["episode"]
    assert firing[0]["at"] == rollback["event_time_ms"]
    assert firing[0]["action"] == "rollback" and firing[0]["notified"] == 1
    episode = [a for a in alerts if a["state"] in ("firing", "resolved")]
    assert {(a["fingerprint"], a["episode"]) for a in episode} == {
        (rollback["fingerprint"], rollback["episode"])
    }

    # One webhook episode: its firing (and resolved, if it resolved), signed, each
    # transition accepted once under its own idempotency key.
    assert receiver.bad_signatures == 0
    assert not receiver.duplicates
    sent = [t for t in _webhook_transitions(receiver) if t["state"] in ("firing", "resolved")]
    assert Counter(t["state"] for t in sent) == Counter(a["state"] for a in episode)
    assert sorted(t["idempotency_key"] for t in sent) == sorted(
        a["idempotency_key"] for a in episode
    )
    notified = sorted(a["idempotency_key"] for a in alerts if a["notified"])
    delivered = sorted(t["idempotency_key"] for t in _webhook_transitions(receiver))
    assert delivered == notified
    assert len(set(delivered)) == len(delivered)


def test_a_canary_alike_its_primary_is_never_rolled_back(
    home: Path, store: Store, receiver: Receiver
) -> None:
    actions, _ = _run(home, receiver, degrade=False)
    alerts = _alerts(store)
    assert actions == []
    assert [a for a in alerts if a["state"] in ("firing", "pending", "resolved")] == []
    assert [t for t in _webhook_transitions(receiver) if t["state"] == "firing"] == []
    assert receiver.bad_signatures == 0 and not receiver.duplicates
