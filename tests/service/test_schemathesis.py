"""Schema-based fuzz of the running service from its own OpenAPI document (schemathesis).

Every operation the document lists gets hypothesis-generated requests (with an all-scope
key) over real HTTP; each answer must not be a 5xx, must carry a status code the
document declares for that operation, and a body that matches the declared schema. The
ingestion routes write into a real local log, and what they accept is then decoded with
the flow's own decoder (:class:`operators.decode.BatchDecoder`, set up as
``dataflows.feedback`` sets it up): nothing the API accepted may be a dead letter there,
and every accepted event is in the log. With a key bound to a tenant, every accepted
inference is that tenant's.

The example counts keep the whole module under a minute on a 2-core machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.settings import Settings
from connectors.ingest_log import durable_log
from connectors.local_log import LocalLog
from operators.batches import STREAMS
from operators.decode import BatchDecoder
from operators.events import Event, Inference
from tests.service.conftest import RunningService, ServiceFactory, keyed_settings, migrated
from tests.service.test_ingest import settings_for
from tests.service.test_reads_data import seed


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (RFC 8259); clients such as JSON.parse fail")


@schemathesis.check
def strict_json(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """A JSON answer parses as strict JSON: Python's json module writes and reads NaN and
    Infinity, which no other JSON parser accepts (so schemathesis's own check passes them)."""
    if "json" in "".join(response.headers.get("content-type", [])):
        json.loads(response.content, parse_constant=_not_json)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    strict_json,
]
EXAMPLES = {"POST /v1/inferences": 150, "POST /v1/feedback": 150}
DEFAULT_EXAMPLES = 40
TENANT = "acme"
OPERATIONS = [
    "GET /healthz",
    "GET /readyz",
    "POST /v1/inferences",
    "POST /v1/feedback",
    "GET /v1/metrics",
    "GET /v1/alerts",
    "POST /v1/query",
    "GET /v1/silences",
    "POST /v1/silences",
    "DELETE /v1/silences/{silence_id}",
    "GET /metrics",
]


@pytest.fixture
def fuzzed(home: Path, service: ServiceFactory) -> Iterator[RunningService]:
    """The service over a store with two tenants' metrics and alerts (as the read tests
    seed it) and a local log; a generous rate limit so the fuzz reaches validation rather
    than 429."""
    seed(home)
    settings = settings_for(home, PULSE_SERVICE_RATE_LIMIT="1000000/second")
    yield service(settings=settings, log=durable_log(settings))


@pytest.fixture
def tenant_bound(home: Path, service: ServiceFactory) -> tuple[RunningService, str]:
    """The same service, and a key bound to tenant `acme` with the ingest scope."""
    settings, keys = keyed_settings(
        home, ("acme", TENANT, ["ingest"]), PULSE_SERVICE_RATE_LIMIT="1000000/second"
    )
    running = service(settings=migrated(settings), log=durable_log(settings))
    return running, keys["acme"]


def fuzz(running: RunningService, label: str, key: str | None = None) -> list[dict[str, Any]]:
    """Run the operation's examples; the bodies of its 202 answers."""
    schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served document"
    headers = {"Authorization": f"Bearer {key or running.key}"}
    accepted: list[dict[str, Any]] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES.get(label, DEFAULT_EXAMPLES),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=running.url, headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)
        if response.status_code == 202:
            accepted.append(response.json())

    run()
    return accepted


def logged(settings: Settings) -> dict[str, list[bytes]]:
    log = LocalLog(settings.home_dir / "log")
    found: dict[str, list[bytes]] = {}
    for stream in STREAMS:
        for partition in range(log.partitions):
            reader = log.reader(stream, partition)
            found.setdefault(stream, []).extend(reader.read(1 << 26).lines)
            reader.close()
    return found


def flow_decoder(settings: Settings) -> BatchDecoder:
    v = settings.validation
    return BatchDecoder(
        v.max_event_bytes, v.min_ts, v.max_ts, tuple(settings.aggregation.extra_dims)
    )


def decoded_accepted(running: RunningService, accepted: list[dict[str, Any]]) -> list[Event]:
    """What the route accepted is in the log, and the flow decodes every line of it."""
    settings = running.context.settings
    lines = logged(settings)
    assert sum(body["accepted"] for body in accepted) == sum(map(len, lines.values()))
    assert sum(map(len, lines.values())) > 0, "the fuzz never had an event accepted"
    decoder = flow_decoder(settings)
    events: list[Event] = []
    for stream, stream_lines in lines.items():
        decoded = decoder.decode(stream, 0, stream_lines, list(range(len(stream_lines))))
        dead = [(d.reason, d.raw[:300]) for d in decoded.dead_letters]
        assert dead == [], f"the API accepted events the flow rejects: {dead}"
        assert len(decoded.events) == len(stream_lines)
        events += decoded.events
    return events


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_conforms_to_its_document(fuzzed: RunningService, label: str) -> None:
    accepted = fuzz(fuzzed, label)
    if label in EXAMPLES:
        decoded_accepted(fuzzed, accepted)


@pytest.mark.parametrize("label", list(EXAMPLES))
def test_a_tenant_bound_key_ingests_its_tenant_only(
    tenant_bound: tuple[RunningService, str], label: str
) -> None:
    running, key = tenant_bound
    events = decoded_accepted(running, fuzz(running, label, key))
    tenants = {e.tenant for e in events if isinstance(e, Inference)}
    assert tenants <= {TENANT}, f"a key bound to {TENANT!r} wrote tenants {tenants}"


@pytest.mark.xfail(
    strict=True,
    reason="connectors/service/sql.py render() writes json.dumps' NaN/Infinity (reads' owner)",
)
def test_query_answers_strict_json_for_non_finite_floats(fuzzed: RunningService) -> None:
    """ClickHouse floats include nan and inf (0/0 in a ratio); the answer stays JSON."""
    with fuzzed.client() as client:
        answer = client.post("/v1/query", json={"sql": "SELECT nan AS x, inf AS y, 1.5 AS z"})
    assert answer.status_code == 200
    body = json.loads(answer.content, parse_constant=_not_json)
    assert body["columns"] == ["x", "y", "z"]
    assert body["rows"][0][2] == 1.5
