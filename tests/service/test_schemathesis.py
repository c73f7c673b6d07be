"""Schema-based fuzz of the running service from its own OpenAPI document (schemathesis).

Every operation the document lists gets hypothesis-generated requests (with an all-scope
key) over real HTTP; each answer must not be a 5xx, must carry a status code the
document declares for that operation, and a body that matches the declared schema. The
ingestion routes write into a real local log (each generated body is sent again as
NDJSON), and what they accept is then decoded with the flow's own decoder
(:class:`operators.decode.BatchDecoder`, set up as ``dataflows.feedback`` sets it up):
nothing the API accepted may be a dead letter there, and every accepted event is in the
log. With a key bound to a tenant, every accepted
inference is that tenant's.

The example counts keep the whole module under a minute on a 2-core machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.settings import Settings
from connectors.ingest_log import durable_log
from connectors.local_log import LocalLog
from connectors.service.keys import ALL_SCOPES
from operators.batches import STREAMS
from operators.decode import BatchDecoder
from operators.events import Event, Inference
from tests.service.conftest import RunningService, ServiceFactory, keyed_settings, migrated
from tests.service.test_ingest import feedback, inference, settings_for
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
EXAMPLES = {"POST /v1/inferences": 80, "POST /v1/feedback": 80}
DEFAULT_EXAMPLES = 25
TENANT = "acme"
SCOPES = {  # each operation and the scope its key needs ("": none)
    "GET /healthz": "",
    "GET /readyz": "",
    "POST /v1/inferences": "ingest",
    "POST /v1/feedback": "ingest",
    "GET /v1/metrics": "read",
    "GET /v1/alerts": "read",
    "POST /v1/query": "query",
    "GET /v1/silences": "read",
    "POST /v1/silences": "admin",
    "DELETE /v1/silences/{silence_id}": "admin",
    "GET /metrics": "read",
}
OPERATIONS = list(SCOPES)


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


# Known-good bodies tried besides the generated ones, so the accepted side of the property
# is exercised in every run (random events pass the contract only now and then).
SEEDS: dict[str, list[Any]] = {
    "POST /v1/inferences": [inference("r-1"), [inference("r-2"), inference("r-3", tenant=TENANT)]],
    "POST /v1/feedback": [feedback("f-1", "r-1"), [feedback("f-2", "r-2")]],
}


def _examples(operation: Any, bodies: list[Any]) -> Callable[[Any], Any]:
    def decorate(test: Any) -> Any:
        for body in bodies:
            test = example(case=operation.Case(body=body, media_type="application/json"))(test)
        return test

    return decorate


def fuzz(
    running: RunningService,
    label: str,
    key: str | None = None,
    examples: int | None = None,
    expect: int | None = None,
) -> list[dict[str, Any]]:
    """Run the operation's examples (each answer `expect`ed, when given); the bodies of
    its 202 answers. `key` "": no Authorization header at all."""
    schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served document"
    headers = {"Authorization": f"Bearer {key or running.key}"} if key != "" else {}
    accepted: list[dict[str, Any]] = []

    @given(case=operation.as_strategy())
    @_examples(operation, SEEDS.get(label, []))
    @settings(
        max_examples=examples or EXAMPLES.get(label, DEFAULT_EXAMPLES),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=running.url, headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)
        if expect is not None:
            assert response.status_code == expect, (response.status_code, response.text)
        if response.status_code == 202:
            accepted.append(response.json())
        if label in EXAMPLES and isinstance(case.body, list | dict):
            as_ndjson(case)

    def as_ndjson(case: schemathesis.Case) -> None:
        """The same events as NDJSON (the document describes only the JSON form)."""
        items = case.body if isinstance(case.body, list) else [case.body]
        sent = client.post(
            case.formatted_path,
            content="\n".join(json.dumps(item) for item in items),
            headers={**headers, "Content-Type": "application/x-ndjson"},
        )
        case.validate_response(sent, checks=CHECKS, headers=headers)
        if expect is not None:
            assert sent.status_code == expect, (sent.status_code, sent.text)
        if sent.status_code == 202:
            accepted.append(sent.json())

    with httpx.Client(base_url=running.url, timeout=30) as client:
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


KEYED = {label: scope for label, scope in SCOPES.items() if scope}


@pytest.fixture
def narrow_keys(home: Path, service: ServiceFactory) -> tuple[RunningService, dict[str, str]]:
    """The service with one key per scope, each holding that scope alone."""
    settings, keys = keyed_settings(home, *((str(s), "*", [str(s)]) for s in ALL_SCOPES))
    return service(settings=migrated(settings), log=durable_log(settings)), keys


def test_without_a_key_every_keyed_route_answers_401_as_documented(
    narrow_keys: tuple[RunningService, dict[str, str]],
) -> None:
    running, _ = narrow_keys  # keys configured: /metrics needs one too
    for label in KEYED:
        fuzz(running, label, key="", examples=5, expect=401)
        fuzz(running, label, key="pk_not-a-key", examples=5, expect=401)


def test_without_its_scope_every_keyed_route_answers_403_as_documented(
    narrow_keys: tuple[RunningService, dict[str, str]],
) -> None:
    running, keys = narrow_keys
    for label, scope in KEYED.items():
        other = next(s for s in ALL_SCOPES if s != scope)
        fuzz(running, label, key=keys[other], examples=5, expect=403)


def test_the_document_names_each_routes_scope(
    narrow_keys: tuple[RunningService, dict[str, str]],
) -> None:
    """SCOPES above is what the served document says (so the two tests above test it)."""
    with narrow_keys[0].client() as client:
        doc = client.get("/openapi.json").json()
    named = {
        f"{method.upper()} {path}": (op.get("description") or "").partition("Scope: `")[2]
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }
    assert {label: text.partition("`")[0] for label, text in named.items()} == SCOPES


@pytest.mark.parametrize("label", list(EXAMPLES))
def test_a_tenant_bound_key_ingests_its_tenant_only(
    tenant_bound: tuple[RunningService, str], label: str
) -> None:
    running, key = tenant_bound
    events = decoded_accepted(running, fuzz(running, label, key))
    tenants = {e.tenant for e in events if isinstance(e, Inference)}
    assert tenants <= {TENANT}, f"a key bound to {TENANT!r} wrote tenants {tenants}"


def test_query_answers_strict_json_for_non_finite_floats(fuzzed: RunningService) -> None:
    """ClickHouse floats include nan and inf (0/0 in a ratio); the answer stays JSON."""
    with fuzzed.client() as client:
        answer = client.post("/v1/query", json={"sql": "SELECT nan AS x, inf AS y, 1.5 AS z"})
    assert answer.status_code == 200
    body = json.loads(answer.content, parse_constant=_not_json)
    assert body["columns"] == ["x", "y", "z"]
    assert body["rows"][0] == [None, None, 1.5]
