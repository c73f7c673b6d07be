"""The pager-latency bench measures what it says: its rule and target are valid settings,
and its receiver counts an alarm only from a correctly signed firing notification."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from config.settings import load_settings
from scripts.bench_alerts import SECRET, Receiver, alarm_events, rules_config


def test_the_bench_rule_and_target_are_valid_settings(tmp_path: Path) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(yaml.safe_dump(rules_config("http://127.0.0.1:9/hook")))
    settings = load_settings(config, {"BENCH_ALERTS_SECRET": SECRET})
    (rule,) = settings.rules
    assert rule.name == "alarm-thumbs-down" and rule.min_samples == 1
    assert settings.notify["pager"].group_wait == 0  # ms: grouping adds nothing


def test_alarms_are_one_inference_and_its_thumbs_down() -> None:
    (_, key, inference), (stream, same_key, feedback) = alarm_events(3, 1_000)
    assert key == same_key and stream == "feedback"
    assert json.loads(inference)["model_version"] == "a3"
    assert json.loads(feedback)["value"] is False


@pytest.mark.parametrize("signed", [True, False])
def test_the_receiver_counts_only_signed_firing_transitions(signed: bool) -> None:
    receiver = Receiver()
    server = receiver.serve()
    body = json.dumps({"transitions": [
        {"state": "firing", "dims": {"model_version": "a1"}},
        {"state": "resolved", "dims": {"model_version": "a2"}},
    ]})  # fmt: skip
    secret = SECRET if signed else "whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA=="
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(datetime.now(UTC).timestamp()))}
    headers["webhook-signature"] = Webhook(secret).sign("msg_1", datetime.now(UTC), body)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hooks/pulse"
        status = httpx.post(url, content=body, headers=headers).status_code
    finally:
        server.shutdown()
    assert status == (200 if signed else 400)
    assert list(receiver.arrived) == (["a1"] if signed else [])
    assert receiver.bad_signatures == (0 if signed else 1)
