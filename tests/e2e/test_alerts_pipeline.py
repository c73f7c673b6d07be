"""End to end: a bounded run with a rule that fires, notifying a real webhook receiver on
127.0.0.1 (signature-checking, deduplicating): `alerts` rows in chDB, `pulse alerts`, one
accepted delivery per notified transition, its outcome in `deliveries`, and one action per
firing episode in the actions stream."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tests.conftest import Store, pulse_env, run_pulse
from tests.connectors.delivery.receiver import SECRET, Receiver

TRAFFIC = ["--seed", "5", "--duration", "240", "--rate", "20"]


def _config(path: Path, url: str) -> Path:
    path.write_text(
        f"""
notify:
  ops:
    url: {url}
    format: standard
    secret_env: OPS_WEBHOOK_SECRET
    backoff_initial: 10ms
    backoff_max: 50ms
alerting:
  group_wait: 2m
rules:
  - name: feedback-seen
    type: threshold
    window: 1m
    metric: feedback_count
    op: ">"
    value: 0
    for: 0s
    severity: info
    notify: [ops]
    action: scale
"""
    )
    return path


def test_a_firing_rule_reaches_the_store_the_receiver_and_the_actions_stream(
    tmp_path: Path, home: Path, store: Store, receiver: Receiver
) -> None:
    config = _config(tmp_path / "rules.yaml", receiver.url)
    env = pulse_env(home, OPS_WEBHOOK_SECRET=SECRET)
    run_pulse(["generate", *TRAFFIC], env)
    run_pulse(["--config", str(config), "run", "--bounded", "--quiet"], env)

    alerts = store.dicts(
        "SELECT rule, fingerprint, episode, state, model_id, deployment, tenant, segment, "
        "value, threshold, samples, notified, muted, action, idempotency_key, "
        "toUnixTimestamp64Milli(event_time) AS at, toUnixTimestamp64Milli(window_end) AS end "
        "FROM {db}.alerts FINAL"
    )
    firing = [a for a in alerts if a["state"] == "firing"]
    assert len(firing) >= 4  # a cell per model and deployment, and unjoined feedback's
    assert {a["rule"] for a in alerts} == {"feedback-seen"}
    assert all(a["value"] > 0 and a["threshold"] == 0 and a["samples"] > 0 for a in firing)
    assert all(a["segment"] == "*" for a in firing)  # `where` names no rollup dim
    assert [a["at"] - a["end"] for a in firing] == [0] * len(firing)  # final: end + lateness 0
    assert len({a["fingerprint"] for a in firing}) == len(firing)  # once per alert: no repeat
    assert all(a["action"] == "scale" and a["notified"] == 1 for a in firing)

    # Each notified transition was accepted exactly once, in signed requests.
    notified = sorted(a["idempotency_key"] for a in alerts if a["notified"])
    assert receiver.bad_signatures == 0
    assert all(r.answered == 200 for r in receiver.requests)
    delivered = [t["idempotency_key"] for b in receiver.bodies() for t in b["transitions"]]
    assert sorted(delivered) == notified
    assert not receiver.duplicates
    assert len(receiver.requests) < len(notified)  # grouped: several per notification

    # Every delivery's outcome is recorded.
    outcomes = store.dicts(
        "SELECT target, idempotency_key, status, attempts, http_status, transition_keys "
        "FROM {db}.deliveries FINAL"
    )
    assert sorted(o["idempotency_key"] for o in outcomes) == sorted(receiver.accepted)
    assert {(o["status"], o["http_status"], o["attempts"]) for o in outcomes} == {
        ("delivered", 200, 1)
    }
    assert sorted(k for o in outcomes for k in o["transition_keys"]) == notified

    # One action per firing episode, in the local log's actions stream.
    lines = [
        json.loads(line)
        for path in sorted((home / "log" / "actions").rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert Counter(a["fingerprint"] for a in lines) == Counter(a["fingerprint"] for a in firing)
    assert {a["kind"] for a in lines} == {"scale"}

    # `pulse alerts`: the active alerts and the recent transitions.
    store.close()
    shown = json.loads(
        run_pulse(
            ["--config", str(config), "alerts", "--format", "json", "--limit", "10000"], env
        ).stdout
    )
    assert sorted(a["fingerprint"] for a in shown["active"]) == sorted(
        a["fingerprint"] for a in firing
    )
    assert {a["state"] for a in shown["active"]} == {"firing"}
    assert len(shown["transitions"]) == len(alerts)
    table = run_pulse(["--config", str(config), "alerts"], env).stdout
    assert "feedback-seen" in table and "firing" in table
