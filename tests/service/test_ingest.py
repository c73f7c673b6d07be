"""POST /v1/inferences and /v1/feedback over real HTTP, into the real local log, and
through `pulse run --bounded` into ClickHouse."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from config.settings import Settings, load_settings
from connectors.ingest_log import LocalDurableLog, durable_log
from connectors.local_log import LocalLog
from connectors.service.keys import key_hash, new_key
from operators.batches import STREAMS
from tests.conftest import Store, pulse_env, run_pulse
from tests.service.conftest import RunningService, ServiceFactory

TS = "2026-01-01T00:00:10Z"


def inference(request_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "inference",
        "request_id": request_id,
        "ts": TS,
        "model_id": "m",
        "model_version": "v1",
        "endpoint": "chat",
        "prediction": "cat",
        **fields,
    }


def feedback(event_id: str, request_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "feedback",
        "event_id": event_id,
        "request_id": request_id,
        "ts": "2026-01-01T00:00:12Z",
        "kind": "thumbs",
        "value": False,
        "user_id": "u1",
        **fields,
    }


def settings_for(home: Path, **env: str) -> Settings:
    return load_settings(environ={"PULSE_HOME": str(home), **env})


def tenant_key(tenant: str = "acme") -> tuple[str, str]:
    """A key bound to `tenant` with the ingest scope, and its PULSE_SERVICE_API_KEYS."""
    key = new_key()
    keys = [{"name": tenant, "sha256": key_hash(key), "tenant": tenant, "scopes": ["ingest"]}]
    return key, json.dumps(keys)


def start(service: ServiceFactory, settings: Settings) -> RunningService:
    log = durable_log(settings)
    assert isinstance(log, LocalDurableLog)
    return service(settings=settings, log=log)


def logged(home: Path) -> dict[str, list[dict[str, Any]]]:
    """Every event in the local log, by stream."""
    log = LocalLog(home / "log")
    found: dict[str, list[dict[str, Any]]] = {s: [] for s in STREAMS}
    for stream in STREAMS:
        for partition in range(log.partitions):
            reader = log.reader(stream, partition)
            lines = reader.read(1 << 24).lines
            reader.close()
            found[stream] += [msgspec.json.decode(line) for line in lines]
    return found


def errors(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["code"], e["path"]) for e in result["errors"]]


def test_partial_batch_accepts_the_good_items_and_names_the_bad_fields(
    service: ServiceFactory, home: Path
) -> None:
    running = start(service, settings_for(home))
    batch = [
        inference("r1"),
        inference("r2", confidence=1.5, segment="*"),
        feedback("e1", "r1"),
        inference("r3", ts=5),
        inference("r4"),
    ]
    with running.client() as client:
        response = client.post("/v1/inferences", json=batch)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    results = body["results"]
    assert [r["status"] for r in results] == [
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
    ]
    assert [r["event_id"] for r in results] == ["r1", "r2", "e1", "r3", "r4"]
    assert errors(results[1]) == [
        ("invalid", "inference.segment"),
        ("invalid", "inference.confidence"),
    ]
    assert "reserved" in results[1]["errors"][0]["reason"]
    assert errors(results[2]) == [("wrong_type", "type")]
    assert errors(results[3]) == [("ts_out_of_range", "inference.ts")]
    # Exactly the accepted events are in the log, as sent.
    assert logged(home) == {"inferences": [batch[0], batch[4]], "feedback": []}


def test_ndjson_and_a_single_event(service: ServiceFactory, home: Path) -> None:
    running = start(service, settings_for(home))
    ndjson = b"\n".join(json.dumps(feedback(f"e{i}", f"r{i}")).encode() for i in range(3))
    with running.client() as client:
        many = client.post(
            "/v1/feedback", content=ndjson, headers={"Content-Type": "application/x-ndjson"}
        )
        one = client.post("/v1/feedback", json=feedback("e9", "r9"))
    assert many.status_code == 202 and many.json()["accepted"] == 3
    assert one.status_code == 202 and one.json()["results"][0]["event_id"] == "e9"
    assert [e["event_id"] for e in logged(home)["feedback"]] == ["e0", "e1", "e2", "e9"]


def test_a_large_batch(service: ServiceFactory, home: Path) -> None:
    running = start(service, settings_for(home))
    batch = [feedback(f"e{i}", f"r{i}") for i in range(2000)]
    body = json.dumps(batch).encode()
    assert len(body) > 64 * 1024  # split off the event loop
    with running.client() as client:
        response = client.post("/v1/feedback", content=body)
    assert response.status_code == 202 and response.json()["accepted"] == 2000
    assert sorted(e["event_id"] for e in logged(home)["feedback"]) == sorted(
        e["event_id"] for e in batch
    )


def test_nothing_accepted_is_422_with_each_reason(service: ServiceFactory, home: Path) -> None:
    running = start(service, settings_for(home))
    with running.client() as client:
        bad = client.post("/v1/feedback", json=[feedback("e1", "r1", kind="emoji"), {"x": 1}])
        empty = client.post("/v1/feedback", content=b" \n ")
    assert bad.status_code == 422
    assert [errors(r) for r in bad.json()["results"]] == [
        [("invalid", "feedback.kind")],
        [("invalid", "type")],
    ]
    assert empty.status_code == 422 and "no events" in empty.json()["detail"]
    with running.client() as client:
        gzipped = client.post(
            "/v1/feedback",
            content=gzip.compress(json.dumps(feedback("e1", "r1")).encode()),
            headers={"Content-Encoding": "gzip"},
        )
    assert gzipped.status_code == 415 and "gzip" in gzipped.json()["detail"]
    assert logged(home) == {"inferences": [], "feedback": []}


def test_a_key_is_required(service: ServiceFactory, home: Path) -> None:
    running = start(service, settings_for(home))
    with running.client() as client:
        missing = client.post(
            "/v1/feedback", json=feedback("e1", "r1"), headers={"Authorization": ""}
        )
        unknown = client.post(
            "/v1/feedback", json=feedback("e1", "r1"), headers={"Authorization": "Bearer pk_nope"}
        )
    assert (missing.status_code, unknown.status_code) == (401, 401)
    assert logged(home)["feedback"] == []


def test_body_over_the_limit_is_413_by_length_and_while_reading_a_chunked_body(
    service: ServiceFactory, home: Path
) -> None:
    running = start(service, settings_for(home, PULSE_SERVICE_MAX_BODY_BYTES="1024"))
    big = json.dumps([feedback(f"e{i}", "r1") for i in range(10)]).encode()
    assert len(big) > 1024

    def chunks() -> Iterator[bytes]:
        yield big[:700]
        yield big[700:]

    with running.client() as client:
        sized = client.post("/v1/feedback", content=big)
        chunked = client.post("/v1/feedback", content=chunks())
        small = client.post("/v1/feedback", json=feedback("e1", "r1"))
    assert sized.status_code == 413 and "max_body_bytes=1024" in sized.json()["detail"]
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert chunked.status_code == 413
    assert small.status_code == 202
    assert [e["event_id"] for e in logged(home)["feedback"]] == ["e1"]


def test_more_events_than_max_batch_events_is_413(service: ServiceFactory, home: Path) -> None:
    running = start(service, settings_for(home, PULSE_SERVICE_MAX_BATCH_EVENTS="3"))
    with running.client() as client:
        four = client.post("/v1/feedback", json=[feedback(f"e{i}", "r1") for i in range(4)])
        three = client.post("/v1/feedback", json=[feedback(f"e{i}", "r1") for i in range(3)])
    assert four.status_code == 413 and "max_batch_events=3" in four.json()["detail"]
    assert three.status_code == 202
    assert len(logged(home)["feedback"]) == 3


def test_tenant_spoofing_is_403_and_the_key_tenant_is_written_in(
    service: ServiceFactory, home: Path
) -> None:
    key, keys = tenant_key("acme")
    running = start(service, settings_for(home, PULSE_SERVICE_API_KEYS=keys))
    with running.client(key) as client:
        spoof = client.post("/v1/inferences", json=[inference("r1", tenant="globex")])
        mixed = client.post(
            "/v1/inferences", json=[inference("r2", tenant="globex"), inference("r3")]
        )
        spoof_feedback = client.post("/v1/feedback", json=feedback("e1", "r3", tenant="globex"))
    assert spoof.status_code == 403
    (result,) = spoof.json()["results"]
    assert errors(result) == [("tenant", "inference.tenant")]
    assert "acme" in result["errors"][0]["reason"]
    assert spoof_feedback.status_code == 403
    assert mixed.status_code == 202
    assert [r["status"] for r in mixed.json()["results"]] == ["rejected", "accepted"]
    assert logged(home) == {"inferences": [{"tenant": "acme", **inference("r3")}], "feedback": []}


def test_over_the_rate_limit_is_429_with_retry_after(service: ServiceFactory, home: Path) -> None:
    running = start(service, settings_for(home, PULSE_SERVICE_RATE_LIMIT="5/minute"))
    with running.client() as client:
        first = client.post("/v1/feedback", json=[feedback(f"e{i}", "r1") for i in range(3)])
        second = client.post("/v1/feedback", json=[feedback(f"f{i}", "r1") for i in range(3)])
        fits = client.post("/v1/feedback", json=[feedback(f"g{i}", "r1") for i in range(2)])
        never = client.post("/v1/feedback", json=[feedback(f"h{i}", "r1") for i in range(6)])
    assert first.status_code == 202
    assert second.status_code == 429
    assert 1 <= int(second.headers["Retry-After"]) <= 60
    assert fits.status_code == 202  # the limit counts events: 2 more still fit
    assert never.status_code == 413  # bigger than a whole window admits
    assert [e["event_id"] for e in logged(home)["feedback"]] == ["e0", "e1", "e2", "g0", "g1"]


def test_no_event_log_is_503_with_retry_after(service: ServiceFactory, home: Path) -> None:
    running = service(settings=settings_for(home))  # log=None
    with running.client() as client:
        response = client.post("/v1/feedback", json=feedback("e1", "r1"))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1


def test_accepted_events_reach_clickhouse_and_a_retry_counts_once(
    service: ServiceFactory, home: Path, store: Store
) -> None:
    key, keys = tenant_key("acme")
    settings = settings_for(home, PULSE_SERVICE_API_KEYS=keys)
    running = start(service, settings)
    inferences = [inference(f"r{i}") for i in range(20)]
    thumbs = [feedback(f"e{i}", f"r{i}") for i in range(20)]
    with running.client(key) as client:
        assert client.post("/v1/inferences", json=inferences).status_code == 202
        for _ in range(2):  # a client retrying the same request
            assert client.post("/v1/feedback", json=thumbs).status_code == 202
    assert len(logged(home)["feedback"]) == 40

    env = pulse_env(home, PULSE_SERVICE_API_KEYS=keys, PULSE_SERVICE_ENABLED="false")
    run_pulse(["run", "--bounded", "--quiet"], env)
    assert store.rows(
        "SELECT DISTINCT tenant FROM {db}.inferences FINAL WHERE request_id LIKE 'r%'"
    ) == [("acme",)]
    assert store.scalar("SELECT uniqExact(event_id) FROM {db}.events") == 20
    counts = store.rows(
        "SELECT window, feedback_count, thumbs_down FROM {db}.metrics FINAL "
        "WHERE final = 1 AND tenant = 'acme' AND model_version = 'v1' AND segment = 'default' "
        "AND endpoint = 'chat'"
    )
    assert counts and all(row[1:] == (20, 20) for row in counts), counts
