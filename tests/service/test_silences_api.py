"""/v1/silences over real HTTP: scopes, validation, expiry, and tenant-bound keys."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from config.settings import load_settings
from tests.service.conftest import ServiceFactory, keyed_settings, migrated


def test_add_list_expire_with_the_scopes_each_needs(service: ServiceFactory, home: Path) -> None:
    settings, keys = keyed_settings(
        home, ("ops", "*", ["admin", "read"]), ("viewer", "*", ["read"]), ("app", "*", ["ingest"])
    )
    running = service(migrated(settings))
    with running.client(keys["ops"]) as ops, running.client(keys["viewer"]) as viewer:
        before = time.time() * 1000
        added = ops.post("/v1/silences", json={"matchers": {"model_id": "m1"}, "for": "2h",
                                               "comment": "rollout"})  # fmt: skip
        assert added.status_code == 201, added.text
        record = added.json()
        assert record["active"] is True and record["comment"] == "rollout"
        assert before + 7_200_000 <= record["until_ms"] <= time.time() * 1000 + 7_200_000

        assert [s["id"] for s in viewer.get("/v1/silences").json()] == [record["id"]]
        # Reading is not writing.
        refused = viewer.post("/v1/silences", json={"matchers": {"model_id": "m1"}, "for": "1h"})
        assert refused.status_code == 403 and "'admin'" in refused.json()["detail"]
        assert viewer.delete(f"/v1/silences/{record['id']}").status_code == 403
        with running.client(keys["app"]) as app:
            assert app.get("/v1/silences").status_code == 403

        ended = ops.delete(f"/v1/silences/{record['id']}")
        assert ended.status_code == 200 and ended.json()["active"] is False
        assert viewer.get("/v1/silences").json() == []
        (listed,) = viewer.get("/v1/silences", params={"all": "true"}).json()
        assert listed["id"] == record["id"] and listed["until_ms"] <= time.time() * 1000


def test_unknown_and_missing_keys_get_401(service: ServiceFactory, home: Path) -> None:
    running = service(migrated(keyed_settings(home, ("ops", "*", ["admin"]))[0]))
    with running.client("pk_not-a-key") as client:
        unknown = client.get("/v1/silences")
        client.headers.pop("Authorization")
        missing = client.get("/v1/silences")
    assert unknown.status_code == 401 and unknown.json()["detail"] == "unknown API key"
    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"


def test_bad_silences_are_refused_naming_the_problem(service: ServiceFactory, home: Path) -> None:
    running = service(migrated(keyed_settings(home, ("ops", "*", ["admin", "read"]))[0]))
    with running.client() as client:
        cases = {
            "either `until_ms` or `for`": {"matchers": {"model_id": "m1"}},
            "for: ": {"matchers": {"model_id": "m1"}, "for": "soon"},
            "matchers": {"matchers": {}, "for": "1h"},
            "until_ms": {"matchers": {"model_id": "m1"}, "until_ms": 10**16},
            "ending before 2300": {"matchers": {"model_id": "m1"}, "for": "100000000d"},
        }
        for message, body in cases.items():
            response = client.post("/v1/silences", json=body)
            assert response.status_code == 422 and message in str(response.json()), (body,
                                                                                    response.text)  # fmt: skip
        unknown = client.delete("/v1/silences/0123abcd")
        assert unknown.status_code == 404 and "no silence with id '0123abcd'" in unknown.text
        assert client.get("/v1/silences", params={"all": "true"}).json() == []


def test_a_tenant_bound_key_sees_and_changes_its_tenant_only(
    service: ServiceFactory, home: Path
) -> None:
    settings, keys = keyed_settings(
        home, ("acme-ops", "acme", ["admin", "read"]), ("globex-ops", "globex", ["admin", "read"])
    )
    running = service(migrated(settings))
    with running.client(keys["acme-ops"]) as acme, running.client(keys["globex-ops"]) as globex:
        mine = acme.post("/v1/silences", json={"matchers": {"model_id": "m1"}, "for": "1h"})
        assert mine.status_code == 201 and mine.json()["matchers"]["tenant"] == "acme"
        spoofed = acme.post(
            "/v1/silences", json={"matchers": {"tenant": "globex", "model_id": "m1"}, "for": "1h"}
        )
        assert spoofed.status_code == 403 and "'acme'" in spoofed.json()["detail"]
        assert globex.get("/v1/silences").json() == []
        assert globex.delete(f"/v1/silences/{mine.json()['id']}").status_code == 404
        assert [s["id"] for s in acme.get("/v1/silences").json()] == [mine.json()["id"]]
        # An operator key (the fixture's), tenant "*", sees every tenant's.
        with running.client() as operator:
            assert len(operator.get("/v1/silences").json()) == 1


def test_a_store_that_does_not_answer_is_a_503_naming_it(
    service: ServiceFactory, home: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings = load_settings(
        environ={"PULSE_HOME": str(home), "PULSE_CLICKHOUSE_DSN": f"http://127.0.0.1:{closed}"}
    )
    with service(settings).client() as client:
        listed = client.get("/v1/silences")
        added = client.post("/v1/silences", json={"matchers": {"model_id": "m1"}, "for": "1h"})
    for response in (listed, added):
        assert response.status_code == 503
        assert "the silences cannot be used now" in response.json()["detail"]


def test_the_flow_polls_what_the_service_stored(service: ServiceFactory, home: Path) -> None:
    """The rules stage of the process that holds the store reads silences with its own
    client (dataflows.feedback._runtime_silences), not over HTTP."""
    from dataflows.feedback import _runtime_silences

    running = service(migrated(load_settings(environ={"PULSE_HOME": str(home)})))
    with running.client() as client:
        added = client.post("/v1/silences", json={"matchers": {"model_id": "m1"}, "for": "1h"})
    assert added.status_code == 201
    active = _runtime_silences(running.context.target)
    (silence,) = active(int(time.time() * 1000))
    assert silence.until == added.json()["until_ms"]
    assert active(added.json()["until_ms"]) == []  # event time past the expiry
