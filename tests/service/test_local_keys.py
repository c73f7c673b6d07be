"""The keys a service makes when no `service.api_keys` are configured (issue 12): the local
key in service.json (tenant `default`; ingest, read, query) and, next to it, the operator
key (any tenant, every scope); and which one each local command sends."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.service.hosting import host_service
from tests.conftest import PULSE, ROOT, Store, pulse_env, run_pulse
from tests.service.test_hosting import _stop, _wait_for_service
from tests.service.test_ingest import inference
from tests.service.test_reads_data import WINDOW_START, seed, settings_for

ALL = {"metric": "accuracy", "by": "model_version", "since": "all"}


def _seed_with_default(home: Path) -> None:
    """Two tenants' rows (acme, globex) and one row of tenant `default`."""
    seed(home)
    store = Store(home)
    try:
        store.open().command(
            "INSERT INTO pulse.metrics (window, window_start, window_end, tenant, model_id, "
            "deployment, model_version, segment, endpoint, extra_dims, final, version, "
            "feedback_count, labeled_count, correct_count, accuracy) VALUES "
            f"('1m', '{WINDOW_START}', '2026-01-05 10:01:00', 'default', 'm', 'primary', "
            "'v9', '*', '*', '', 1, 1, 10, 10, 9, 0.9)"
        )
    finally:
        store.close()


def _tenants(client: httpx.Client) -> list[str]:
    response = client.post(
        "/v1/query", json={"sql": "SELECT DISTINCT tenant FROM pulse.metrics ORDER BY tenant"}
    )
    assert response.status_code == 200, response.text
    return [row[0] for row in response.json()["rows"]]


def test_the_local_key_acts_for_tenant_default_and_the_operator_key_for_any(home: Path) -> None:
    _seed_with_default(home)
    hosted = host_service(settings_for(home), hosted_by_flow=False)
    try:
        # The file's contents and mode: test_hosting.py. Here: what each key may do.
        info = json.loads((home / "service.json").read_text())
        assert hosted.local_key and hosted.operator_key and hosted.local_key != hosted.operator_key
        local = httpx.Client(base_url=hosted.url, timeout=30,
                             headers={"Authorization": f"Bearer {info['key']}"})  # fmt: skip
        operator = httpx.Client(base_url=hosted.url, timeout=30,
                                headers={"Authorization": f"Bearer {info['operator_key']}"})  # fmt: skip
        with local, operator:
            # Reads: the local key sees tenant `default` only, on every read route.
            assert _tenants(local) == ["default"]
            metrics = local.get("/v1/metrics", params=ALL).json()
            assert {row[1] for row in metrics["rows"]} == {"default"}
            other = local.get("/v1/metrics", params={**ALL, "where": "tenant=acme"})
            assert other.status_code == 403
            assert local.get("/v1/alerts").json()["active"] == []  # acme's and globex's
            dead = local.post("/v1/query", json={"sql": "SELECT count() FROM pulse.dead_letters"})
            assert dead.status_code == 400 and "no tenant column" in dead.json()["detail"]
            # Ingestion: its tenant only; an event claiming another is 403.
            spoofed = local.post("/v1/inferences", json=inference("r-1", tenant="acme"))
            assert spoofed.status_code == 403, spoofed.text
            own = local.post("/v1/inferences", json=inference("r-2"))
            assert own.status_code == 202, own.text
            # No admin: silences are listed, not added.
            assert local.get("/v1/silences").status_code == 200
            add = local.post("/v1/silences", json={"matchers": {"model_id": "m"}, "for": "1h"})
            assert add.status_code == 403 and "'admin'" in add.json()["detail"]
            # The operator key may do all of that.
            assert _tenants(operator) == ["acme", "default", "globex"]
            assert operator.get("/v1/metrics", params={**ALL, "where": "tenant=acme"}).json()[
                "rows"
            ]
            assert len(operator.get("/v1/alerts").json()["active"]) == 2
            assert operator.post(
                "/v1/query", json={"sql": "SELECT count() FROM pulse.dead_letters"}
            ).json()["rows"] == [[1]]
            other_tenant = operator.post("/v1/inferences", json=inference("r-3", tenant="acme"))
            assert other_tenant.status_code == 202, other_tenant.text
            added = operator.post("/v1/silences", json={"matchers": {"model_id": "m"}, "for": "1h"})
            assert added.status_code == 201, added.text
    finally:
        hosted.stop()
    assert not (home / "service.json").exists()


@pytest.fixture
def serving(home: Path) -> Iterator[dict[str, str]]:
    """`pulse serve` without configured keys over a seeded home: the env to reach it."""
    _seed_with_default(home)
    env = pulse_env(home)
    process = subprocess.Popen([*PULSE, "serve"], env=env, cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_for_service(home, process)
        yield env
    finally:
        out, err = _stop(process)
        assert process.returncode == 0, err
        assert "tenant default: ingest, read, query" in out and "operator key" in out, out


def _json(args: list[str], env: dict[str, str]) -> Any:
    return json.loads(run_pulse([*args, "--format", "json"], env, timeout=60).stdout)


def test_local_commands_send_the_local_key_unless_they_need_the_operator_key(
    serving: dict[str, str],
) -> None:
    env = serving
    query = ["query", "--metric", "accuracy", "--by", "model_version", "--since", "all"]
    assert {r["tenant"] for r in _json(query, env)} == {"default"}
    assert {r["tenant"] for r in _json([*query, "--all-tenants"], env)} == {
        "acme", "default", "globex"
    }  # fmt: skip
    assert {r["tenant"] for r in _json([*query, "--where", "tenant=acme"], env)} == {"acme"}
    # A table without a tenant column: refused for the local key, with what to do.
    sql = ["query", "--sql", "SELECT count() AS n FROM pulse.dead_letters"]
    refused = run_pulse(sql, env, check=False, timeout=60)
    assert refused.returncode == 2 and "--all-tenants" in refused.stderr, refused.stderr
    assert _json([*sql, "--all-tenants"], env) == [{"n": 1}]
    # Alerts: the seeded ones are acme's and globex's.
    assert _json(["alerts"], env)["active"] == []
    assert len(_json(["alerts", "--all-tenants"], env)["active"]) == 2
    # Silences need `admin`: the operator key.
    added = run_pulse(["silence", "add", "--match", "model_id=m", "--for", "1h"], env)
    silence_id = added.stdout.strip()
    assert [s["id"] for s in _json(["silence", "list"], env)] == [silence_id]
    run_pulse(["silence", "expire", silence_id], env)
    assert _json(["silence", "list"], env) == []
    # PULSE_API_KEY still wins over the file's keys.
    keyed = {**env, "PULSE_API_KEY": "pk_unknown"}
    for args in ([*query, "--all-tenants"], ["silence", "list"]):
        unknown = run_pulse(args, keyed, check=False, timeout=60)
        assert unknown.returncode == 2 and "unknown API key" in unknown.stderr, unknown.stderr
