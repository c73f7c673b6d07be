"""The committed OpenAPI document (docs/openapi.json) is the app's, and useful to a client:
every route summarised, its scope named, its errors declared with their bodies.

When the first test fails, regenerate the file: `python scripts/openapi.py`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from scripts.openapi import DOCUMENT, UPDATE, document, main, render
from tests.service.conftest import ServiceFactory

METHODS = ("get", "post", "put", "patch", "delete")
Operation = tuple[str, str, dict[str, Any]]  # method, path, operation


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def operations(doc: dict[str, Any]) -> list[Operation]:
    return [
        (method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def keyed(doc: dict[str, Any]) -> list[Operation]:
    """The operations behind an API key (FastAPI lists the bearer scheme as security)."""
    return [o for o in operations(doc) if o[2].get("security")]


def test_committed_document_is_the_apps(doc: dict[str, Any]) -> None:
    committed = DOCUMENT.read_text(encoding="utf-8")
    assert committed == render(doc), f"docs/openapi.json is stale: run `{UPDATE}`"
    assert main(["--check"]) == 0


def test_check_fails_on_a_stale_document(
    doc: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text(render({**doc, "info": {**doc["info"], "version": "0"}}))
    monkeypatch.setattr("scripts.openapi.DOCUMENT", stale)
    assert main(["--check"]) == 1
    monkeypatch.setattr("scripts.openapi.DOCUMENT", tmp_path / "missing.json")
    assert main(["--check"]) == 1


def test_the_service_serves_the_same_document(service: ServiceFactory, doc: dict[str, Any]) -> None:
    running = service()
    with running.client() as client:
        served = client.get("/openapi.json")
    assert served.status_code == 200
    assert json.loads(render(served.json())) == json.loads(render(doc))


def test_every_route_is_in_the_document(doc: dict[str, Any]) -> None:
    found = {(m.upper(), p) for m, p, _ in operations(doc)}
    assert {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("POST", "/v1/inferences"),
        ("POST", "/v1/feedback"),
        ("GET", "/v1/metrics"),
        ("GET", "/v1/alerts"),
        ("POST", "/v1/query"),
        ("GET", "/v1/silences"),
        ("POST", "/v1/silences"),
        ("DELETE", "/v1/silences/{silence_id}"),
        ("GET", "/metrics"),
    } <= found


def test_every_route_has_a_summary(doc: dict[str, Any]) -> None:
    assert [f"{m} {p}" for m, p, op in operations(doc) if not op.get("summary")] == []


def test_the_bearer_scheme_is_declared(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["HTTPBearer"]["description"],
    }
    assert keyed(doc), "no route is behind an API key"


def test_ingestion_declares_its_limits_and_models(doc: dict[str, Any]) -> None:
    for path in ("/v1/inferences", "/v1/feedback"):
        op = doc["paths"][path]["post"]
        responses = op["responses"]
        for code in ("202", "401", "403", "413", "422", "429", "503"):
            assert code in responses, f"POST {path} does not declare {code}"
            assert "application/json" in responses[code].get("content", {}), (path, code)
        for code in ("429", "503"):
            assert "Retry-After" in responses[code].get("headers", {}), (path, code)
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body["anyOf"][1]["type"] == "array"
        assert "ts" in json.dumps(body), "the event's contract is not in the request body"


# The routes' owners add `**keyed(scope, ...)` from connectors/service/responses.py; until
# every keyed route does, this names the ones that do not.
def test_every_keyed_route_names_its_scope_and_declares_401_403(doc: dict[str, Any]) -> None:
    missing = []
    for method, path, op in keyed(doc):
        description = op.get("description", "")
        if "Scope: `" not in description:
            missing.append(f"{method.upper()} {path}: no scope in its description")
        for code in ("401", "403"):
            if code not in op["responses"]:
                missing.append(f"{method.upper()} {path}: {code} not declared")
    assert missing == []


def test_every_route_with_input_declares_422_with_a_body(doc: dict[str, Any]) -> None:
    missing = []
    for method, path, op in operations(doc):
        if not (op.get("parameters") or op.get("requestBody")):
            continue
        declared = op["responses"].get("422", {})
        if "application/json" not in declared.get("content", {}):
            missing.append(f"{method.upper()} {path}")
    assert missing == []


def test_every_error_response_has_a_description(doc: dict[str, Any]) -> None:
    bare = [
        f"{m.upper()} {p} {code}"
        for m, p, op in operations(doc)
        for code, response in op["responses"].items()
        if code >= "400" and not response.get("description", "").strip()
    ]
    assert bare == []


def _described(schema: dict[str, Any]) -> bool:
    """A named model, a typed list of one, or an object whose fields are named."""
    if "$ref" in schema or "anyOf" in schema or schema.get("properties"):
        return True
    items = schema.get("items")
    return schema.get("type") == "array" and isinstance(items, dict) and _described(items)


def test_every_success_answer_has_a_model(doc: dict[str, Any]) -> None:
    """A client generated from the document gets typed answers, not `object`."""
    untyped = [
        f"{m.upper()} {p} {code}"
        for m, p, op in operations(doc)
        if p not in ("/healthz",)  # {"status": "ok"}: a string map is its whole model
        for code, response in op["responses"].items()
        if code.startswith("2")
        and "application/json" in response.get("content", {})
        and not _described(response["content"]["application/json"].get("schema", {}))
    ]
    assert untyped == []


def test_the_bearer_scheme_describes_the_api_key(doc: dict[str, Any]) -> None:
    """One scheme for every keyed route (a second HTTPBearer of the same name replaced its
    description with one route's)."""
    from connectors.service.auth import _bearer

    described = doc["components"]["securitySchemes"]["HTTPBearer"]["description"]
    assert described == _bearer.model.description
