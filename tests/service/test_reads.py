"""GET /v1/metrics and GET /v1/alerts over real HTTP: pulse query's drill-down and pulse
alerts' report, filtered to a tenant-bound key's tenant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import RunningService, ServiceFactory
from tests.service.test_reads_data import VERSIONS, seed, settings_for, with_key

ALL = {"since": "all"}


def _get(
    running: RunningService, path: str, key: str | None = None, **params: Any
) -> httpx.Response:
    with running.client(key) as client:
        return client.get(path, params=params)


@pytest.fixture
def seeded(home: Path) -> Path:
    seed(home)
    return home


def _by_version(body: dict[str, Any]) -> dict[tuple[str, str], float]:
    cols = body["columns"]
    t, v, a = cols.index("tenant"), cols.index("model_version"), cols.index("accuracy")
    return {(row[t], row[v]): row[a] for row in body["rows"]}


def test_metrics_by_model_version_for_every_tenant(service: ServiceFactory, seeded: Path) -> None:
    response = _get(service(), "/v1/metrics", metric="accuracy", by="model_version", **ALL)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == [
        "window_start", "tenant", "model_id", "deployment", "model_version", "accuracy", "final"
    ]  # fmt: skip
    assert _by_version(body) == {
        (tenant, version): pytest.approx(0.5 + i / 10)
        for tenant, versions in VERSIONS.items()
        for i, version in enumerate(versions)
    }
    assert body["rows"][0][0] == "2026-01-05T10:00:00"


def test_a_tenant_bound_key_reads_only_its_tenants_metrics(
    service: ServiceFactory, seeded: Path
) -> None:
    settings, acme = with_key(settings_for(seeded), "acme", ("read",))
    running = service(settings)
    body = _get(running, "/v1/metrics", acme, metric="accuracy", by="model_version", **ALL).json()
    assert set(_by_version(body)) == {("acme", "v1"), ("acme", "v2")}
    # filtering by its own tenant is fine, by another is refused
    own = _get(running, "/v1/metrics", acme, metric="accuracy", by="model_version",
               where="tenant=acme", **ALL)  # fmt: skip
    assert own.status_code == 200 and len(own.json()["rows"]) == 2
    other = _get(running, "/v1/metrics", acme, metric="accuracy", where="tenant=globex", **ALL)
    assert other.status_code == 403
    # and the note for an empty answer counts only its own rows
    settings, nobody = with_key(settings, "initech", ("read",))
    running = service(settings)
    empty = _get(running, "/v1/metrics", nobody, metric="accuracy", by="model_version", **ALL)
    assert empty.json()["rows"] == []
    assert "no rows of window 1m" in empty.json()["note"]


def test_metrics_where_and_time_range(service: ServiceFactory, seeded: Path) -> None:
    running = service()
    body = _get(running, "/v1/metrics", metric="accuracy,feedback_count", by="model_version",
                where=["model_version=v3"], start="2026-01-05T10:00:00Z",
                end="2026-01-05T10:01:00Z").json()  # fmt: skip
    assert [(r[1], r[4]) for r in body["rows"]] == [("globex", "v3")]
    later = _get(running, "/v1/metrics", metric="accuracy", by="model_version",
                 start="2026-01-05T10:01:00Z").json()  # fmt: skip
    assert later["rows"] == []
    assert "has rows from 2026-01-05 10:00:00" in later["note"]


def test_metrics_as_csv(service: ServiceFactory, seeded: Path) -> None:
    response = _get(service(), "/v1/metrics", metric="feedback_count", by="model_version",
                    where=["model_version=v3"], format="csv", **ALL)  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.splitlines() == [
        "window_start,tenant,model_id,deployment,model_version,feedback_count,final",
        "2026-01-05T10:00:00,globex,m,primary,v3,10,1",
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"metric": "nope"}, "unknown metric 'nope'"),
        ({"metric": "accuracy", "by": "colour"}, "unknown dim 'colour'"),
        ({"metric": "accuracy", "window": "7m"}, "not a configured window"),
        ({"metric": "accuracy", "since": "yesterday"}, "takes a duration"),
        ({"metric": "accuracy", "start": "monday"}, "takes an RFC 3339 time"),
        ({"metric": "accuracy", "start": "\u00b9"}, "takes an RFC 3339 time"),  # a digit to str
        ({"metric": "accuracy", "start": "2026-01-02", "end": "2026-01-01"}, "at or after"),
        ({"metric": "accuracy", "where": "model_version"}, "takes dim=value"),
        ({"metric": "accuracy,late_count"}, "queried on their own"),
        ({"metric": "accuracy", "limit": "100001"}, "service.query_max_rows"),
    ],
)
def test_bad_drilldown_options_are_422_naming_them(
    service: ServiceFactory, seeded: Path, params: dict[str, str], message: str
) -> None:
    response = _get(service(), "/v1/metrics", **params)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_reads_need_the_read_scope(service: ServiceFactory, seeded: Path) -> None:
    settings, ingest_only = with_key(settings_for(seeded), "acme", ("ingest",))
    running = service(settings)
    assert _get(running, "/v1/metrics", ingest_only, metric="accuracy").status_code == 403
    assert _get(running, "/v1/alerts", ingest_only).status_code == 403


def test_alerts_active_and_transitions_by_tenant(service: ServiceFactory, seeded: Path) -> None:
    settings, acme = with_key(settings_for(seeded), "acme", ("read",))
    running = service(settings)
    body = _get(running, "/v1/alerts").json()
    assert sorted(a["tenant"] for a in body["active"]) == ["acme", "globex"]
    assert sorted(t["fingerprint"] for t in body["transitions"]) == ["fp-acme", "fp-globex"]
    assert body["active"][0]["state"] == "firing"
    assert body["active"][0]["since"] == "2026-01-05T10:00:00"
    own = _get(running, "/v1/alerts", acme).json()
    assert [a["fingerprint"] for a in own["active"]] == ["fp-acme"]
    assert [t["tenant"] for t in own["transitions"]] == ["acme"]
    assert _get(running, "/v1/alerts", limit=1).json()["transitions"][0]["rule"] == "acc-floor"
    assert len(_get(running, "/v1/alerts", limit=1).json()["transitions"]) == 1
    assert _get(running, "/v1/alerts", since="1x").status_code == 422


def test_without_tables_reads_are_404_with_the_reason(service: ServiceFactory, home: Path) -> None:
    running = service()
    alerts = _get(running, "/v1/alerts")
    assert alerts.status_code == 404
    assert "no alerts table yet" in alerts.json()["detail"]
    metrics = _get(running, "/v1/metrics", metric="accuracy")
    assert metrics.status_code == 404
    assert "no data yet" in metrics.json()["detail"]
