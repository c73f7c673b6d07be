"""Feedback is bound to its inference's tenant (issue 12), over real HTTP into the local
log and through `pulse run --bounded` into ClickHouse: the API cannot know a
`request_id`'s tenant, so it accepts feedback on another tenant's request with the key's
tenant written in, and the flow refuses it at the join (a dead letter, not counted)."""

from __future__ import annotations

from pathlib import Path

from connectors.ingest_log import LocalDurableLog, durable_log
from tests.conftest import Store, pulse_env, run_pulse
from tests.service.conftest import ServiceFactory, api_keys
from tests.service.test_ingest import errors, feedback, inference, logged, settings_for


def test_feedback_on_another_tenants_request_is_accepted_then_refused_at_the_join(
    service: ServiceFactory, home: Path, store: Store
) -> None:
    keys, made = api_keys(("acme", "acme", ["ingest"]), ("globex", "globex", ["ingest"]))
    settings = settings_for(home, PULSE_SERVICE_API_KEYS=keys)
    log = durable_log(settings)
    assert isinstance(log, LocalDurableLog)
    running = service(settings=settings, log=log)
    with running.client(made["globex"]) as globex:
        assert (
            globex.post("/v1/inferences", json=[inference("g1"), inference("g2")]).status_code
            == 202
        )
        own = globex.post("/v1/feedback", json=feedback("own", "g1"))
    with running.client(made["acme"]) as acme:
        foreign = acme.post("/v1/feedback", json=feedback("foreign", "g1"))
        claiming = acme.post("/v1/feedback", json=feedback("claiming", "g2", tenant="globex"))
    assert own.status_code == 202 and foreign.status_code == 202
    assert claiming.status_code == 403  # claiming another tenant than the key's
    assert errors(claiming.json()["results"][0]) == [("tenant", "feedback.tenant")]
    tenants = {e["event_id"]: e.get("tenant") for e in logged(home)["feedback"]}
    assert tenants == {"own": "globex", "foreign": "acme"}  # written in by the service

    env = pulse_env(home, PULSE_SERVICE_API_KEYS=keys, PULSE_SERVICE_ENABLED="false")
    run_pulse(["run", "--bounded", "--quiet"], env)
    assert store.rows("SELECT error, reason FROM {db}.dead_letters FINAL") == [
        ("tenant", "feedback.tenant: 'acme' is not the tenant of inference 'g1'")
    ]
    assert store.rows("SELECT event_id, tenant FROM {db}.events FINAL") == [("own", "globex")]
    counts = store.rows(
        "SELECT DISTINCT tenant, feedback_count, thumbs_down FROM {db}.metrics FINAL "
        "WHERE final = 1 AND model_version = 'v1' AND segment = 'default' AND endpoint = 'chat'"
    )
    assert counts == [("globex", 1, 1)], counts
